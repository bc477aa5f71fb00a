"""Shared fixtures: an app on a temporary data directory, its test client, a live server and a
real headless Chromium page that records console errors and any request leaving localhost.

The helpers that tests and benchmarks share (building and running modules through the API, the
live server itself) are in ``helpers.py``.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from pathlib import Path

# XLA compiles the same small functions (each module's random initialisation, each run) in
# every test process again: a persistent compilation cache lets the two test workers, the
# interpreters the tests start (exported code, a killed server) and later runs share them. It
# changes nothing the tests see: the executable read back is the one XLA would have compiled,
# and the app's own compile cache, which the tests count, is in memory as before. Set before
# JAX is imported (the child processes inherit the environment).
JAX_CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax-compilation-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(JAX_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import LiveServer  # noqa: E402
from htmx_settle import SWAP_IN_PROGRESS  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# The test client's requests say ``Host: testserver``; the live server is 127.0.0.1. Every app
# the tests make answers those names and no other (PLAYGROUND_ALLOWED_HOSTS, as a deployment
# would set it).
TEST_HOSTS = "testserver,localhost,127.0.0.1,::1"
os.environ["PLAYGROUND_ALLOWED_HOSTS"] = TEST_HOSTS
# Each test makes its own apps: none warms the presets in the background (it would compete for
# the two cores with the test itself), and none points JAX's process-wide persistent cache at
# its temporary data folder (the suite's own cache above stays). tests/test_warm.py turns both
# on where it tests them.
os.environ["PLAYGROUND_WARM_START"] = "false"
os.environ["PLAYGROUND_PERSISTENT_COMPILE_CACHE"] = "false"
# Computations run inline (PLAYGROUND_WORKERS=0: in the app's own threads, their arguments and
# results still pickled as they would be for a worker): starting worker processes for each of
# the suite's apps would cost seconds each. tests/test_workers.py and the tests that need real
# workers set ``workers`` themselves.
os.environ["PLAYGROUND_WORKERS"] = "0"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app) -> TestClient:
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


@pytest.fixture
def live_server(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "live-data"))
    with LiveServer(app) as server:
        yield server


def chromium_executable() -> str | None:
    """Debian's ``chromium`` (or another on PATH); None means Playwright's own build."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium; the browser tests fail (never skip) when none can be started."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=chromium_executable(),
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
        except Exception as error:  # noqa: BLE001 - reported as a test failure with its cause
            pytest.fail(
                "No Chromium could be started for the browser tests "
                f"(install Debian's 'chromium' or run 'playwright install chromium'): {error}"
            )
        yield launched
        launched.close()


class PageProbe:
    """What a page did: console errors, failed requests and requests to other hosts."""

    def __init__(self):
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.foreign_requests: list[str] = []
        self.responses: deque[str] = deque(maxlen=12)  # the last ones, for a failure's report

    def assert_clean(self):
        assert self.foreign_requests == [], f"requests left localhost: {self.foreign_requests}"
        assert self.page_errors == [], f"page errors: {self.page_errors}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"


@pytest.fixture
def page_probe():
    return PageProbe()


@pytest.fixture
def page(browser, live_server, page_probe, request):
    """A page at 1280x800 on the live server (``page.goto("/")``); requests to other hosts are
    blocked and recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(45_000)  # a 2-core machine running two test workers is slow

    def route(route_request):
        url = route_request.request.url
        if url.startswith(("http://127.0.0.1:", "http://localhost:", "data:", "blob:")):
            route_request.continue_()
        else:
            page_probe.foreign_requests.append(url)
            route_request.abort()

    page.route("**/*", route)
    page.on(
        "console",
        lambda message: (
            page_probe.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: page_probe.page_errors.append(str(error)))
    page.on(
        "response",
        lambda response: page_probe.responses.append(
            f"{response.status} {response.request.method} {response.url}"
        ),
    )
    yield page
    if getattr(request.node, "call_failed", False):
        report_page_state(page, page_probe)
    context.close()


def report_page_state(page, probe: PageProbe) -> None:
    """Print what a failed browser test left on its page: the URL, htmx's swaps still under way
    and the last responses (pytest shows it under the failure)."""
    print(f"page at failure: {page.url}")
    try:
        busy = page.locator(f".htmx-request, {SWAP_IN_PROGRESS}")
        print(f"elements htmx is still working on: {busy.count()}")
    except Exception as error:  # noqa: BLE001 - the page may be gone
        print(f"the page could not be read: {error}")
    print("last responses:", *probe.responses, sep="\n  ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.call_failed = True
