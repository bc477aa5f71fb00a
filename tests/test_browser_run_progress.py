"""The run panel while a run is on its way and when it has no result, in a real headless
Chromium: a slow run shows its stage and the time so far beside the result area, and Cancel
(from the keyboard) stops its worker and says so in the result area; a refusal (a limit, a body
too large for the server) is said in plain words in the result area, where the user is looking,
and the form stays. Screenshots at 1280x720, 150% zoom (853x480), 1024x700 and 390 px go to
``screenshots/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from helpers import LiveServer
from htmx_settle import wait_for_htmx_settled

from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
SIZES = {"1280x720": (1280, 720), "zoom150": (853, 480), "1024x700": (1024, 700), "390": (390, 844)}
"""The guide's four looks; 150% zoom of 1280x720 is a 853x480 viewport."""
NO_SIDEWAYS = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"


@pytest.fixture
def live_server(request, tmp_path):
    """The live server of ``page``, with the settings the test names (indirect parameter)."""
    settings = getattr(request, "param", {})
    app = create_app(Settings(data_dir=tmp_path / "live-data", **settings))
    with LiveServer(app) as server:
        server.app = app
        yield server


def shots(page, name: str, where: str = "#run-result") -> None:
    """Screenshots of what is on screen now at the four sizes (``where`` in view); nothing
    overflows sideways."""
    SCREENSHOTS.mkdir(exist_ok=True)
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.locator(where).scroll_into_view_if_needed()
        assert page.evaluate(NO_SIDEWAYS), size
        page.screenshot(path=str(SCREENSHOTS / f"{name}_{size}.png"))
    page.set_viewport_size({"width": 1280, "height": 800})


REFUSING = {"max_run_flops": 10, "max_body_bytes": 20_000}
"""Every run is refused (the seed's grad is 72 flops); a form with many values is too large."""


@pytest.mark.parametrize("live_server", [REFUSING], indirect=True)
def test_a_refused_run_says_why_in_the_result_area(page, page_probe):
    page.goto("/")
    page.locator("#run-panel").wait_for()
    page.locator("button[data-preset='grad']").click()
    alert = page.locator("#run-result .run-error[role=alert][data-error-kind=refused]")
    alert.wait_for()
    text = alert.inner_text()
    assert text.startswith("This run cannot be done.")
    assert "the limit is 10 per run" in text and "PLAYGROUND_MAX_RUN_FLOPS" in text
    wait_for_htmx_settled(page)  # the result takes the focus once htmx has settled it
    assert page.evaluate("document.activeElement.id") == "run-result"  # in view, read out
    assert page.locator("#run-progress").is_hidden()
    shots(page, "run_refused")
    page_probe.assert_clean()

    # refused before the panel's code runs (the request is too large): the same place, in
    # words, the form kept as it was; nothing in the page's banner far above
    page.fill("#run-values", "1 " * 12_000)
    page.locator("#run-submit").click()
    refused = page.locator("#run-result .error[role=alert]")
    refused.wait_for()
    assert "That is too large." in refused.inner_text()
    assert "the limit is 20000 bytes" in refused.inner_text()
    assert page.locator("#run-form #run-values").input_value().startswith("1 1 1")
    assert page.locator("#alerts").inner_text().strip() == ""
    wait_for_htmx_settled(page)
    assert page.evaluate("document.activeElement.id") == "run-result"
    # the browser reports the refused request itself in its console; nothing else went wrong
    assert all("413" in line for line in page_probe.console_errors), page_probe.console_errors
    assert page_probe.page_errors == [] and page_probe.foreign_requests == []
    page_probe.console_errors.clear()

    # a run whose request cannot reach the server says so there too, not in the banner
    page.route("**/m/*/run", lambda route: route.abort())
    page.locator("button[data-preset='grad']").click()
    lost = page.locator("#run-result .run-error[role=alert]", has_text="No connection.")
    lost.wait_for()
    assert "Check that it is running" in lost.inner_text()
    assert page.locator("#alerts").inner_text().strip() == ""
    page.unroute("**/m/*/run")

    # a sweep says it in its own result area
    page.locator(".run-sweep > summary").click()
    page.locator("#run-sweep-form button[type=submit]").click()
    sweep = page.locator("#run-sweep-result .run-error[role=alert]")
    sweep.wait_for()
    assert sweep.inner_text().startswith("This sweep cannot be done.")
    assert "max_run_flops" in sweep.inner_text()


DEEP = {
    "kind": "eqx.nn.MLP",
    "params": {"in_size": 8, "out_size": 8, "width_size": 8, "depth": 200},
}
"""grad of its loss traces and compiles for many seconds (within max_traced_leaves)."""


@pytest.mark.parametrize("live_server", [{"workers": 1}], indirect=True)
def test_a_slow_run_shows_its_stage_and_time_and_cancel_stops_it(page, page_probe, live_server):
    page.goto("/")
    created = page.request.post("/api/modules", data=DEEP)
    assert created.status == 201, created.text()
    page.goto(f"/m/{created.json()['id']}")
    page.locator("#run-panel").wait_for()
    wait_for_htmx_settled(page)
    # a loss no earlier test run compiled (the suite keeps XLA's compilations on disk)
    page.fill("#run-loss", f"mean(out) * {random.uniform(1, 2):.6f}")
    page.locator("#run-submit").click()
    progress = page.locator("#run-progress")
    progress.wait_for(state="visible")
    page.locator(
        "#run-progress[data-stage=tracing], #run-progress[data-stage=compiling]"
    ).wait_for()
    current = page.locator("#run-progress .run-stages li[aria-current=step]")
    assert current.inner_text() in ("tracing", "compiling")
    assert (
        page.locator("#run-progress .run-stages li.is-past").first.inner_text().endswith("waiting")
    )
    words = page.locator("#run-progress [data-run-stage-words]").inner_text()
    assert words.startswith(("Tracing:", "Compiling:"))
    # the time so far ticks
    first = float(page.locator("#run-progress [data-run-elapsed]").inner_text().removesuffix(" s"))
    page.wait_for_timeout(400)
    later = float(page.locator("#run-progress [data-run-elapsed]").inner_text().removesuffix(" s"))
    assert later > first > 0
    shots(page, "run_in_progress", "#run-progress")
    # Cancel from the keyboard: the worker is stopped, the result area says so in words
    cancel = page.get_by_role("button", name="Cancel the run")
    cancel.focus()
    page.keyboard.press("Enter")
    said = page.locator("#run-result .run-error[role=alert][data-error-kind=cancelled]")
    said.wait_for()
    text = said.inner_text()
    assert text.startswith("You cancelled this run.") and "Run it again when you are ready" in text
    assert "while tracing" in text or "while compiling" in text
    assert progress.is_hidden()
    wait_for_htmx_settled(page)
    assert page.evaluate("document.activeElement.id") == "run-result"
    assert live_server.app.state.services.workers.killed == 1
    wait_for_htmx_settled(page)
    shots(page, "run_cancelled")
    page_probe.assert_clean()
