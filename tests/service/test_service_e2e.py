"""The page in a real browser: Playwright drives Debian's headless chromium against a real
``nstyle serve`` process (uvicorn on a free port): pick two images, start, watch the
preview and the progress bar reach the end, download the result.

Skipped only when no chromium can be here: scripts/setup.sh installs Debian's package
(a test set-up, as root); Playwright's own browser download is never used.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, jobs, needs_chromium, open_page

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                     "(it is in the test extra: bash scripts/setup.sh --test)")

pytestmark = needs_chromium


def test_page_stylizes_end_to_end(server, tmp_path, content_img, style_img):
    content, style = tmp_path / "cat.jpg", tmp_path / "hubble.png"
    content_img.save(content, quality=95)
    style_img.save(style)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page, errors = open_page(browser, server)
            expect = playwright_api.expect
            expect(page.locator("#server-status")).to_contain_text("0 running")
            expect(page.locator("#start")).to_be_disabled()

            page.set_input_files("#content-input", str(content))
            page.set_input_files("#style-input", str(style))
            expect(page.locator("#style-thumbs .thumb")).to_have_count(1)
            page.fill("#opt-size", "64")  # the slider's minimum: quick on a CPU
            page.fill("#opt-iterations", "10")
            expect(page.locator("output[for=opt-size]")).to_have_text("64 px")
            page.click("#start")

            # the live preview is a data URL from the event stream, then the result
            page.wait_for_function("document.getElementById('live-image').src.startsWith('data:image/png')",
                                   timeout=120_000)
            page.screenshot(path=str(tmp_path / "running.png"))
            expect(page.locator("#progress-text")).to_have_text("Done — 10 iterations", timeout=180_000)
            expect(page.locator("#job-state")).to_have_text("succeeded")
            assert page.locator("#bar").get_attribute("aria-valuenow") == "100"
            expect(page.locator("#jobs .job")).to_have_count(1)
            expect(page.locator("#jobs .job .badge")).to_have_text("succeeded")

            with page.expect_download() as download_info:
                page.click("#download")
            download = download_info.value
            name = download.suggested_filename
            assert name.startswith("nstyle-") and name.endswith(".png")
            result = Image.open(io.BytesIO(Path(download.path()).read_bytes()))
            assert result.format == "PNG" and max(result.size) == 64
            page.screenshot(path=str(tmp_path / "done.png"), full_page=True)

            # reopening from the list after a reload shows the same job
            page.goto(server + "/")
            page.click("#jobs .job")
            expect(page.locator("#job-state")).to_have_text("succeeded")
            expect(page.locator("#download")).to_be_visible()
            assert errors == []
        finally:
            browser.close()


def _in_view(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


def _pictures(tmp_path, content_img, style_img):
    content, style, notes = tmp_path / "cat.jpg", tmp_path / "hubble.png", tmp_path / "notes.txt"
    content_img.save(content, quality=95)
    style_img.save(style)
    notes.write_text("not a picture")
    mask = Image.new("L", content_img.size, 0)
    mask.paste(255, (0, 0, content_img.width // 2, content_img.height))
    mask.save(tmp_path / "left.png")
    return content, style, notes, tmp_path / "left.png"


def test_page_shows_each_refusal_next_to_its_field(server, browser, tmp_path, content_img, style_img):
    content, style, notes, _ = _pictures(tmp_path, content_img, style_img)
    expect = playwright_api.expect
    page, errors = open_page(browser, server)
    expect(page.locator("#server-status")).to_contain_text("0 running")
    # a file that is not a picture: said at the photo's field, not silently ignored
    page.set_input_files("#content-input", str(notes))
    expect(page.locator("#err-content")).to_be_visible()
    expect(page.locator("#err-content")).to_contain_text("notes.txt is not an image")
    page.set_input_files("#content-input", str(content))
    expect(page.locator("#err-content")).to_be_hidden()
    page.set_input_files("#style-input", str(style))
    # the server's refusal of an advanced value: shown at that field, and stays shown
    page.click("#advanced summary")
    page.fill("#opt-style_layers", "relu9_9")
    assert _in_view(page, "#start")  # the action stays on screen with the long form open
    page.click("#start")
    expect(page.locator("#err-style_layers")).to_be_visible()
    expect(page.locator("#err-style_layers")).to_contain_text("unknown style layer 'relu9_9'")
    expect(page.locator("#form-error")).to_contain_text("The job was not started: unknown style layer")
    page.wait_for_timeout(500)  # nothing hides it a moment later
    expect(page.locator("#err-style_layers")).to_be_visible()
    assert _in_view(page, "#err-style_layers")
    # a work limit of the server, named
    page.fill("#opt-style_layers", "")
    page.fill("#opt-scale_iterations", "5000")
    page.click("#start")
    expect(page.locator("#err-scale_iterations")).to_contain_text("over this server's limit of 2,000")
    assert jobs(server)["total"] == 0
    # a mask painted over the photo: black, white where the brush went
    page.click("[data-testid=paint-mask-0]")
    expect(page.locator("#painter")).to_be_visible()
    box = page.locator("#paint-canvas").bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    page.click("#paint-done")
    expect(page.locator("#style-count")).to_have_text("1 image, 1 with a mask")
    painted = page.evaluate("""async () => {
        const img = document.querySelector('.thumb .mask-badge');
        await img.decode();
        const c = Object.assign(document.createElement('canvas'), {width: img.naturalWidth, height: img.naturalHeight});
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const px = (x, y) => ctx.getImageData(x, y, 1, 1).data[0];
        return [img.naturalWidth, px(c.width * 0.25, c.height / 2), px(c.width * 0.9, c.height / 2)];
    }""")
    assert painted == [content_img.width, 255, 0], painted
    assert errors == []


def test_mask_upload_comparison_and_full_size(server, browser, tmp_path, content_img, style_img):
    content, style, _, mask = _pictures(tmp_path, content_img, style_img)
    expect = playwright_api.expect
    page, errors = open_page(browser, server)
    page.set_input_files("#content-input", str(content))
    page.set_input_files("#style-input", str(style))
    with page.expect_file_chooser() as chooser:
        page.click("[data-testid=upload-mask-0]")
    chooser.value.set_files(str(mask))
    expect(page.locator("#style-count")).to_have_text("1 image, 1 with a mask")
    expect(page.locator(".thumb .mask-badge")).to_have_count(1)
    page.fill("#opt-size", "64")
    page.fill("#opt-iterations", "10")
    page.click("#start")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=180_000)
    job = jobs(server)["jobs"][0]
    assert job["inputs"]["style_masks"][0]["name"] == "left.png"
    # before/after: the photo under the result, the slider uncovers it
    expect(page.locator("#compare")).to_be_visible()
    expect(page.locator("#before-image")).to_have_attribute("src", job["inputs"]["content"]["original"])
    page.locator("#compare-range").fill("30")
    assert page.eval_on_selector("#live-image", "e => e.style.clipPath") == "inset(0px 0px 0px 70%)"
    expect(page.locator("#divider")).to_be_visible()
    # the loss plot from the record's history, and the bundle
    # content, style, TV (default weight 5) and total
    expect(page.locator("#plot svg polyline")).to_have_count(4)
    expect(page.locator("#bundle")).to_have_attribute("href", job["links"]["bundle"])
    page.click("#frame")  # click: full size
    expect(page.locator("#viewer")).to_be_visible()
    assert page.eval_on_selector("#viewer-image", "e => e.naturalWidth") == 64
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()
    assert errors == []


def test_phone_width_run_keeps_the_job_in_view(server, browser, tmp_path, content_img, style_img):
    content, style, _, _ = _pictures(tmp_path, content_img, style_img)
    expect = playwright_api.expect
    page, errors = open_page(browser, server, viewport={"width": 390, "height": 844},
                              has_touch=True, is_mobile=True)
    page.set_input_files("#content-input", str(content))
    page.set_input_files("#style-input", str(style))
    page.fill("#opt-size", "64")
    page.fill("#opt-iterations", "10")
    assert _in_view(page, "#start")
    page.click("#start")
    # the page follows the job: its title and state are on screen after pressing
    expect(page.locator("#job-state")).to_be_visible()
    page.wait_for_timeout(1000)  # the smooth scroll
    assert _in_view(page, "#stage-title")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=180_000)
    assert _in_view(page, "#stage-title")
    frame = page.locator("#frame").bounding_box()
    assert frame["width"] <= 390 and frame["x"] >= 0  # the result fits the phone
    expect(page.locator("#jobs .job .del")).to_have_css("opacity", "1")  # no hover on touch
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert errors == []


def test_page_stylizes_a_video_and_plays_it(server, browser, tmp_path, style_img):
    """Styles and options from the form, a clip picked with the video button: progress per
    frame, then the MP4 plays on the stage and downloads."""
    from tests.support.clips import panned, texture, write_video

    clip = write_video(tmp_path / "walk.mp4", panned(texture(96, 48), 3, 2), fps=10)
    style = tmp_path / "hubble.png"
    style_img.save(style)
    expect = playwright_api.expect
    page, errors = open_page(browser, server)
    expect(page.locator("#server-status")).to_contain_text("0 running")
    expect(page.locator("#video-start")).to_be_disabled()  # no style yet
    page.set_input_files("#style-input", str(style))
    expect(page.locator("#video-start")).to_be_enabled()  # no photo needed
    page.fill("#opt-size", "64")
    page.fill("#opt-iterations", "10")  # the slider's minimum
    page.fill("#video-frame-iterations", "2")
    page.set_input_files("#video-input", str(clip))
    expect(page.locator("#stage-title")).to_contain_text("Video: walk.mp4 in the style of hubble.png")
    expect(page.locator("#progress-text")).to_contain_text("frame", timeout=120_000)
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=180_000)
    expect(page.locator("#progress-text")).to_have_text("Done — 14 iterations")  # 10 + 2 x 2
    expect(page.locator("#result-video")).to_be_visible()
    # playable here: the browser has read its duration (3 frames at 10 fps)
    page.wait_for_function("document.getElementById('result-video').readyState >= 1", timeout=30_000)
    assert page.evaluate("document.getElementById('result-video').duration") == pytest.approx(0.3, abs=0.05)
    with page.expect_download() as download_info:
        page.click("#download")
    assert download_info.value.suggested_filename.endswith(".mp4")
    expect(page.locator("#jobs .job")).to_have_count(1)
    page.screenshot(path=str(tmp_path / "video.png"), full_page=True)
    assert errors == []


#: where the screenshots of the page go when asked (docs/images for the README); else the
#: test's own folder
SCREENSHOTS = os.environ.get("NSTYLE_SCREENSHOTS_DIR")


def _no_scroll_needed(page, selector: str) -> bool:
    """On screen as the page opened: nothing scrolled, inside the viewport."""
    return page.evaluate("window.scrollY") == 0 and _in_view(page, selector)


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_first_hour_built_in_pictures_estimate_and_options_in_view(server, browser, tmp_path, device):
    """A newcomer with no pictures: 'try it' brings the sample photo and The Starry Night, a
    click adds a second painting; the time is said beside Stylize and follows the options;
    at 1280x900 the size control and Stylize are both on the first screen."""
    expect = playwright_api.expect
    options = ({"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}
               if device == "phone" else {})
    page, errors = open_page(browser, server, **options)
    expect(page.locator("#gallery .painting")).to_have_count(9)
    page.click("#try-it")
    expect(page.locator("#style-thumbs .thumb")).to_have_count(1)
    expect(page.locator("#content-preview")).to_be_visible()
    expect(page.locator("#tryit")).to_be_hidden()
    page.click("#gallery .painting[data-name=the-scream]")
    expect(page.locator("#style-thumbs .thumb")).to_have_count(2)
    expect(page.locator("#style-count")).to_have_text("2 images, blended equally")
    expect(page.locator("output[for=opt-size]")).to_have_text("256 px")  # try-it's quick size
    expect(page.locator("#estimate")).to_contain_text("on this computer", timeout=180_000)
    first = page.locator("#estimate").text_content()
    assert first.startswith(("about", "a few seconds")), first
    expect(page.locator("#start")).to_be_enabled()
    if device == "desktop":
        assert _no_scroll_needed(page, "#opt-size") and _no_scroll_needed(page, "#start")
        assert _no_scroll_needed(page, "#estimate")
    else:
        assert _in_view(page, "#start")  # the sticky bar
        page.locator("#opt-size").scroll_into_view_if_needed()
        assert _in_view(page, "#opt-size") and _in_view(page, "#start")
    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    page.screenshot(path=str(shots / f"page-{device}.png"))
    # more iterations: the estimate grows, before anything runs
    page.fill("#opt-iterations", "1000")
    expect(page.locator("#estimate")).not_to_have_text(first, timeout=30_000)
    assert jobs(server)["total"] == 0
    assert errors == []


def test_a_file_the_browser_cannot_decode_is_refused_at_once(server, browser, tmp_path, style_img):
    fake = tmp_path / "fake.jpg"
    fake.write_text("a text file with a picture's name")
    style = tmp_path / "hubble.png"
    style_img.save(style)
    expect = playwright_api.expect
    page, errors = open_page(browser, server)
    page.set_input_files("#style-input", str(style))
    page.set_input_files("#content-input", str(fake))
    expect(page.locator("#err-content")).to_have_text(
        "fake.jpg cannot be read as a picture: it is damaged or not really an image (this server "
        "takes png, jpeg, webp, bmp, tiff, gif)")
    expect(page.locator("#content-preview")).to_be_hidden()  # the drop area keeps its prompt
    expect(page.locator("#content-prompt")).to_be_visible()
    expect(page.locator("#start")).to_be_disabled()
    expect(page.locator("#form-error")).to_be_hidden()  # nothing was started: no 'not started'
    page.set_input_files("#style-input", str(fake))
    expect(page.locator("#err-style")).to_contain_text("fake.jpg cannot be read as a picture")
    expect(page.locator("#style-thumbs .thumb")).to_have_count(1)
    assert errors == []
