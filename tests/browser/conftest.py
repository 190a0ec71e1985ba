"""Fixtures for the dashboard's tests in a real browser: Debian's chromium driven by
Playwright (sync API), against a real hub (`semaphore server` in its own process, on a real
TCP port) with a real runner (`semaphore runner start`) connected.

Playwright's own browser download is never used (closed machines cannot reach it): the browser
is /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it). Without it, or without
the playwright package, these tests are skipped with the reason.

For a frontend test:
- `live_hub` (HubProcess) and `live_runner` (RunnerProcess, online): one pair per test module;
  each test makes its own projects through `rest` (an admin REST client: tests/faults.Rest).
- `page`: a fresh browser context per test, its base URL the hub's (`page.goto("/")`).
- `logged_in_page`: the same, logged in as the admin (through the login form at `/` when the
  dashboard has one: inputs labelled "Login" and "Password", a button "Sign in"; else through
  the API with the page's own request context, which sets the session cookie in the browser).
- `screenshot(page, name)`: saves <name>.png in tests.browser.screenshots_dir() and returns
  its path.
"""

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.browser import screenshots_dir
from tests.faults import ADMIN_LOGIN, ADMIN_PASSWORD, HubProcess, Rest, RunnerProcess

CHROMIUM = Path(os.environ.get("SEMAPHORE_TEST_CHROMIUM", "/usr/bin/chromium"))
# Playwright's default waits are 30 s; a real hub answers in milliseconds, so failures show
# sooner (a slow CI machine still has ample room).
DEFAULT_TIMEOUT_MS = 15_000

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    """Headless chromium for one test module. Not for the session: Playwright's sync API
    keeps an event loop running in this thread while it is started, and the async tests
    that xdist may run next in the same worker need the thread without one."""
    # Both are installed by .ci/run: missing, the tests fail rather than skip.
    assert sync_playwright is not None, "playwright is not installed (pip install -e '.[test]')"
    assert CHROMIUM.exists() or shutil.which("chromium"), \
        f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    # --no-sandbox: chromium refuses to run as root with its sandbox, and CI runs as root.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=args)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory) -> Iterator[HubProcess]:
    """`semaphore server` with remote runners only, heartbeats every second (live charts)."""
    hub = HubProcess(tmp_path_factory.mktemp("browser-hub"), use_remote_runner=True,
                     heartbeat_interval=1.0)
    with hub:
        hub.start()
        yield hub


@pytest.fixture(scope="module")
def live_runner(live_hub: HubProcess, tmp_path_factory) -> Iterator[RunnerProcess]:
    runner = RunnerProcess(tmp_path_factory.mktemp("browser-runner"), live_hub.base_url,
                           "browser-runner", max_parallel_tasks=2)
    with runner:
        runner.start()
        live_hub.rest().wait_runner_online("browser-runner", logs=runner.log)
        yield runner


@pytest.fixture
def rest(live_hub: HubProcess) -> Rest:
    """A REST client logged in as the admin (tests/faults.Rest)."""
    return live_hub.rest()


@pytest.fixture
def context(browser: "Browser", live_hub: HubProcess) -> Iterator["BrowserContext"]:
    context = browser.new_context(base_url=live_hub.base_url,
                                  viewport={"width": 1280, "height": 800})
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: "BrowserContext") -> "Page":
    return context.new_page()


@pytest.fixture
def logged_in_page(page: "Page", live_hub: HubProcess) -> "Page":
    log_in(page)
    return page


def log_in(page: "Page", login: str = ADMIN_LOGIN, password: str = ADMIN_PASSWORD) -> None:
    """Through the dashboard's login form when `/` has one, else through the API (the page's
    request context shares the browser's cookies). Either way the page ends on the hub's
    origin, so its scripts may open /api/ws (a page of no origin would be refused)."""
    answer = page.goto("/")
    dashboard = (answer is not None and answer.ok
                 and "text/html" in answer.headers.get("content-type", ""))
    form = page.get_by_label("Login")
    if dashboard:
        try:
            form.wait_for(state="visible", timeout=5_000)  # the page's script draws it
        except PlaywrightTimeout:
            dashboard = False
    if dashboard:
        form.fill(login)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        # Signed in: the form goes away (the dashboard shows itself).
        form.wait_for(state="detached")
        return
    reply = page.request.post("/api/auth/login", data={"auth": login, "password": password})
    assert reply.status == 204, f"login through the API: {reply.status} {reply.text()}"
    if answer is not None and answer.ok:
        page.reload()
    else:
        # No dashboard at / (yet): any page of the hub's origin will do.
        page.goto("/api/ping")


@pytest.fixture(scope="session")
def screenshot() -> Callable[["Page", str], Path]:
    def take(page: "Page", name: str) -> Path:
        path = screenshots_dir() / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
