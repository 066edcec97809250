import os
import shutil
import time

import pytest

from tests.e2e.sites import SiteServer

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = os.path.join(os.path.dirname(__file__), "..", "..", "var", "screenshots")


@pytest.fixture(scope="session")
def browser():
    # Playwright's sync API keeps an event loop running in this thread, which makes Django
    # refuse ORM calls from the test body; the test never shares a connection across threads.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap.sh --system installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                # Every *.localhost name reaches the loopback site server (tests/e2e/sites.py).
                "--host-resolver-rules=MAP *.localhost 127.0.0.1",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def sites():
    server = SiteServer().start()
    yield server
    server.stop()


@pytest.fixture
def new_page(browser):
    """Pages in fresh browser contexts (options as Playwright's new_context); every test ends
    by checking that no JavaScript error reached any of them."""
    contexts, errors = [], []

    def make(**options):
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(new_page):
    return new_page()


@pytest.fixture
def screenshot(page):
    os.makedirs(SCREENSHOTS, exist_ok=True)

    def take(name: str) -> str:
        path = os.path.join(SCREENSHOTS, f"{name}.png")
        page.screenshot(path=path, full_page=True)
        return path

    return take


def consolidate_until(predicate, timeout: float = 15.0) -> None:
    """Beacons arrive on their own time: consolidate until the expected events are in."""
    from aggregation.services import spool_consolidate

    deadline = time.monotonic() + timeout
    while True:
        spool_consolidate()
        if predicate() or time.monotonic() > deadline:
            return
        time.sleep(0.3)
