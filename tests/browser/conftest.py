"""Browser tests: Playwright driving Debian's Chromium against daphne on loopback."""

import os
import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        reason = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run the browser tests")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, which makes Django
    # refuse ORM calls from test bodies; they are plain sync code, so allow them
    # while the browser is up (and only then).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser, app_server, transactional_db):
    context = browser.new_context(base_url=app_server.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    # Console errors include every CSP violation and every failed load (a 404 favicon).
    page.console_errors = []

    def console(message):
        if message.type == "error":
            where = message.location or {}
            line = f"{where.get('url', page.url)}:{where.get('lineNumber', '?')}"
            page.console_errors.append(f"{line}: {message.text}")

    page.on("console", console)
    yield page
    context.close()
    settle()


def settle(timeout: float = 20.0):
    """Let replies still running in the server finish before the database is flushed."""
    import time

    from chat.models import Message

    deadline = time.monotonic() + timeout
    while Message.objects.filter(status="streaming").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture
def shot():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str):
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)

    return take
