"""Fixtures of the page tests (tests/service/test_service_e2e.py, test_explore_page.py)."""

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, serving


@pytest.fixture
def server(tmp_path):
    """A real 'nstyle serve' process on 127.0.0.1: its URL."""
    with serving(tmp_path) as url:
        yield url


@pytest.fixture
def browser():
    """Headless chromium, driven by Playwright."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                         "(it is in the test extra: bash scripts/setup.sh --test)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
