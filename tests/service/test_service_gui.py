"""``nstyle gui``: one command starts the server on a free loopback port and opens the page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed")


def test_gui_starts_on_a_free_loopback_port_and_opens_the_browser(tmp_path):
    # Python's webbrowser runs $BROWSER with the URL: a script that writes it down
    (tmp_path / "browser.py").write_text("import sys; open(sys.argv[1], 'w').write(sys.argv[2])\n")
    opened = tmp_path / "opened.txt"
    env = {**os.environ, "BROWSER": f"{sys.executable} {tmp_path / 'browser.py'} {opened} %s"}
    proc = subprocess.Popen([sys.executable, "-m", "nstyle", "gui", "--data", str(tmp_path / "jobs")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (opened.exists() and opened.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        url = opened.read_text()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        info = json.load(urllib.request.urlopen(url + "api/info", timeout=10))
        assert info["token_required"] is False
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "<title>nstyle" in page
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"nstyle gui: {url} (opened in your browser)" in err
    assert (tmp_path / "jobs" / "jobs.sqlite3").exists()


@pytest.mark.parametrize("fetched, said", [(True, "(opened in your browser)"),
                                           (False, "(no browser opened it: open the address yourself)")])
def test_gui_says_it_opened_a_browser_only_when_the_page_was_fetched(monkeypatch, capsys, fetched, said):
    """A browser command can start and die at once (webbrowser.open still says True)."""
    import threading
    from types import SimpleNamespace

    from nstyle.service import server

    monkeypatch.setattr(server.webbrowser, "open", lambda url: True)
    monkeypatch.setattr(server, "BROWSER_SECONDS", 0.2)
    page_fetched = threading.Event()
    if fetched:
        page_fetched.set()
    server.announce(SimpleNamespace(started=True, should_exit=False), "http://127.0.0.1:1/", True, page_fetched)
    assert capsys.readouterr().err == f"nstyle gui: http://127.0.0.1:1/ {said}; Ctrl+C stops it\n"
