"""Fixtures for browser tests: Debian's Chromium driven by Playwright against the real formation.

The browser is the system's ``/usr/bin/chromium`` (Debian's package), launched through
Playwright's ``executable_path``: no browser is downloaded (never ``playwright install``).
``make test`` installs it with apt-get where it can (tests/browser/ensure-chromium); where it
is missing, every browser test is skipped with one line saying what to install.
"""

from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
SKIP_REASON = f"browser tests need Debian's chromium at {CHROMIUM}: apt-get install chromium"


def pytest_collection_modifyitems(items):
    """Mark this folder's tests ``browser``; skip them, before any process starts, without Chromium."""
    missing = not CHROMIUM.exists()
    for item in items:
        if Path(item.fspath).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)
            if missing:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture
def context(formation, monkeypatch):
    """A fresh Chromium browser context (its own cookies: one shopper), closed after the test.

    Requests ``formation`` first so its processes' environment is taken before the variable
    below is set. Playwright's sync API runs an asyncio event loop in this thread, and Django
    refuses ORM calls from a thread with a running loop (SynchronousOnlyOperation); the tests
    read the database in this thread between browser steps, never concurrently with them, so
    DJANGO_ALLOW_ASYNC_UNSAFE is set for this test only
    (https://docs.djangoproject.com/en/5.2/topics/async/#envvar-DJANGO_ALLOW_ASYNC_UNSAFE).
    """
    if not CHROMIUM.exists():
        pytest.skip(SKIP_REASON)

    with sync_playwright() as playwright:
        monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = browser.new_context()
            context.set_default_timeout(15_000)
            yield context
        finally:
            browser.close()
            # Connections opened while the loop runs belong to its context (asgiref's Local):
            # close them here, or they outlive the test and block dropping the test database.
            connections.close_all()
