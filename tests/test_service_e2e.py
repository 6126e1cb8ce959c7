"""The page in a real browser: Playwright drives Debian's headless chromium against a real
``nstyle serve`` process (uvicorn on a free port): pick two images, start, watch the
preview and the progress bar reach the end, download the result.

Skipped only when no chromium can be here: scripts/setup.sh installs Debian's package
(a test set-up, as root); Playwright's own browser download is never used.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                     "(it is in the test extra: bash scripts/setup.sh --test)")

CHROMIUM = os.environ.get("NSTYLE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# what this machine's closed network needs: no background connections, no sandbox as root
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"no chromium at {CHROMIUM}: 'bash scripts/setup.sh --test' installs Debian's package "
           "(needs apt-get as root); set NSTYLE_CHROMIUM to use another")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A real 'nstyle serve' process on 127.0.0.1."""
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "nstyle", "serve", "--port", str(port),
                             "--data", str(tmp_path / "data"), "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/api/info", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("nstyle serve did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_page_stylizes_end_to_end(server, tmp_path, content_img, style_img):
    content, style = tmp_path / "cat.jpg", tmp_path / "hubble.png"
    content_img.save(content, quality=95)
    style_img.save(style)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
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
