"""The real-browser harness of the page tests: Debian's chromium driven by Playwright
against a real ``nstyle serve`` process (uvicorn on a free port).

The page tests skip only when no chromium can be here: scripts/setup.sh installs Debian's
package (a test set-up, as root); Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("NSTYLE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# what this machine's closed network needs: no background connections, no sandbox as root
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

#: marks a test module that needs the browser
needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"no chromium at {CHROMIUM}: 'bash scripts/setup.sh --test' installs Debian's package "
           "(needs apt-get as root); set NSTYLE_CHROMIUM to use another")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(folder: Path) -> Iterator[str]:
    """A real 'nstyle serve' process on 127.0.0.1 keeping its data in ``folder``; yields
    its URL once it answers."""
    port = free_port()
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "nstyle", "serve", "--port", str(port),
                                 "--data", str(folder / "data"), "--log-level", "warning"],
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(url + "/api/info", timeout=2).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("nstyle serve did not start:\n" + log_path.read_text())
                    time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def open_page(browser, server: str, **page_options):
    """A page on the server's front page (1280x900 unless told), and the list its script
    errors go to."""
    page = browser.new_page(**({"viewport": {"width": 1280, "height": 900}} | page_options))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    return page, errors


def jobs(server: str) -> dict:
    """The server's job list, as GET /api/jobs answers it."""
    return json.load(urllib.request.urlopen(server + "/api/jobs", timeout=10))
