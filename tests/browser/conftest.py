"""Browser tests: the app served on a real port, driven by a headless Chromium (Playwright).

- `live_server` (session): the session's `app` on 127.0.0.1:<free port>, in a daemon thread.
  While a browser test runs, `PUBLIC_PORT` is that port, so links in e-mails
  (http://<slug>.localhost:<port>/...) lead back to it; it is restored after each test so the
  rest of the suite still sees its own setting.
- `browser` (session): the Debian package's Chromium (`apt-get install chromium`). Playwright's
  own browser downloads are not used. Without /usr/bin/chromium the tests are skipped with a
  visible reason, or fail when `CI` is set (a CI run must not pass by skipping them).
- `page`: a tab in a fresh browser context (cookies, storage) per test, closed afterwards; on
  failure a screenshot goes to test-artifacts/failed-<test>.png. `new_context()` gives more
  contexts (more people) for one test, closed the same way.
- `artifacts`: the folder test-artifacts/ at the repository root, for screenshots.

Chromium resolves every `*.localhost` name to 127.0.0.1 by itself, so tenants are reached at
http://<slug>.localhost:<port>/ with no /etc/hosts entries.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from werkzeug.serving import make_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
HERE = Path(__file__).resolve().parent
TIMEOUT_MS = 10_000
_FAILED = pytest.StashKey[bool]()  # did the test's call phase fail (for the failure screenshot)


def pytest_collection_modifyitems(config, items):
    """Every test under tests/browser carries the `browser` marker (select with -m browser)."""
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


# --- the live server ---------------------------------------------------------------------


@dataclass(frozen=True)
class LiveServer:
    port: int

    def url(self, host: str, path: str = "/") -> str:
        """`url("acme.localhost", "/login")` -> http://acme.localhost:<port>/login"""
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[LiveServer]:
    """The app on a real port: `.port`, `.url(host, path)`. Shut down at the end of the session."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(server.server_port)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture(autouse=True)
def _public_port(app, live_server) -> Iterator[None]:
    """Links built during a browser test (e-mails) point at the live server's port."""
    previous = app.config["PUBLIC_PORT"]
    app.config["PUBLIC_PORT"] = str(live_server.port)
    try:
        yield
    finally:
        app.config["PUBLIC_PORT"] = previous


# --- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        reason = "Debian chromium is not installed (apt-get install chromium); browser tests skipped"
        if os.environ.get("CI"):
            pytest.fail(
                f"{CHROMIUM} is missing: CI must run the browser tests (apt-get install chromium)", pytrace=False
            )
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def artifacts() -> Path:
    """test-artifacts/ at the repository root (gitignored): screenshots of the runs."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def new_context(browser):
    """`new_context()` -> a fresh browser context (another person), closed after the test."""
    contexts = []

    def build():
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    try:
        yield build
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def page(request, new_context, live_server):
    """A tab in a fresh context; on failure its screenshot goes to test-artifacts/failed-<test>.png."""
    tab = new_context().new_page()
    yield tab
    if request.node.stash.get(_FAILED, False) and not tab.is_closed():
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
        with contextlib.suppress(Exception):  # a failed screenshot must not hide the real failure
            tab.screenshot(path=str(ARTIFACTS / f"failed-{name}.png"), full_page=True)


PHONE = {"width": 390, "height": 844}


@pytest.fixture
def new_phone(browser):
    """`new_phone(locale="en-GB")` -> a tab the size of a phone's screen, with touch, in a fresh
    context whose browser asks for `locale`; closed after the test."""
    contexts = []

    def build(locale: str = "en-GB"):
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale=locale)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    try:
        yield build
    finally:
        for context in contexts:
            context.close()


@pytest.fixture
def phone(new_phone):
    """A phone-sized tab (English browser) in a fresh context."""
    return new_phone()


def fits_the_screen(page) -> bool:
    """Nothing sticks out sideways on a phone: the page scrolls only up and down."""
    return page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def sign_in(page, url: str, email: str, password: str) -> None:
    """Sign in on the page at `url` (a tenant's or the platform's sign-in page); for someone the
    factory enrolled in two-factor sign-in, type their authenticator's code on the next page."""
    from conftest import AUTHENTICATORS, second_factor_code

    page.goto(url)
    page.get_by_label("E-mail", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.locator("#signin-button").click()
    if email.strip().lower() in AUTHENTICATORS:
        page.wait_for_url(re.compile(r"/login/code$"))
        page.get_by_label("Code", exact=True).fill(second_factor_code(email))
        page.locator("#code-button").click()
