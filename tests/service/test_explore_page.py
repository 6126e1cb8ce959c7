"""The contact sheet button on the page, in a real browser (as tests/service/test_service_e2e.py)."""

from __future__ import annotations

import pytest

from tests.support.browser import jobs, needs_chromium, open_page

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = needs_chromium


def test_sheet_button_refuses_bad_weights_then_submits_a_sheet(server, browser, tmp_path,
                                                               content_img, style_img, style_img2):
    paths = []
    for name, img in (("cat.png", content_img), ("hubble.png", style_img), ("coffee.png", style_img2)):
        paths.append(tmp_path / name)
        img.save(paths[-1])
    expect = playwright_api.expect
    page, errors = open_page(browser, server)
    expect(page.locator("#sheet-start")).to_be_disabled()
    page.set_input_files("#content-input", str(paths[0]))
    page.set_input_files("#style-input", [str(paths[1]), str(paths[2])])
    expect(page.locator("#style-thumbs .thumb")).to_have_count(2)
    expect(page.locator("#sheet-start")).to_be_enabled()

    # a bad weights list: said next to the weights box, and nothing queued
    page.fill("#sheet-weights", "1e4,lots")
    page.click("#sheet-start")
    expect(page.locator("#err-style_weights")).to_be_visible()
    expect(page.locator("#err-style_weights")).to_contain_text("'lots' is not a number")
    assert jobs(server)["total"] == 0

    page.fill("#sheet-weights", "1e3,1e5")
    expect(page.locator("#err-style_weights")).to_be_hidden()
    page.click("#sheet-start")
    expect(page.locator("#stage-title")).to_contain_text("Contact sheet: cat.png with hubble.png + coffee.png")
    listed = jobs(server)["jobs"]
    assert len(listed) == 1 and listed[0]["options"]["sheet_style_weights"] == "1000,1e5"
    # the sheet's own small size, not the form's 512 px for the big run
    assert listed[0]["config"]["image"]["size"] == 256 and listed[0]["config"]["optim"]["iterations"] == 60
    page.click("#cancel")  # a 256 px sheet takes minutes here: its wiring is what is tested
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=120_000)
    assert errors == []
