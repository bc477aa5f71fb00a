"""The run panel when a run has no result, in a real headless Chromium: a refusal (a limit, a
body too large for the server) is said in plain words in the result area, where the user is
looking, and the form stays. Screenshots at 1280x720, 150% zoom (853x480), 1024x700 and 390 px
go to ``screenshots/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

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
        yield server


def shots(page, name: str) -> None:
    """Screenshots of what is on screen now at the four sizes; nothing overflows sideways."""
    SCREENSHOTS.mkdir(exist_ok=True)
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.locator("#run-result").scroll_into_view_if_needed()
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
    assert page.evaluate("document.activeElement.id") == "run-result"  # in view, read out
    assert page.locator("#run-progress").is_hidden()
    wait_for_htmx_settled(page)
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
    assert page.evaluate("document.activeElement.id") == "run-result"
    # the browser reports the refused request itself in its console; nothing else went wrong
    assert all("413" in line for line in page_probe.console_errors), page_probe.console_errors
    assert page_probe.page_errors == [] and page_probe.foreign_requests == []

    # a sweep says it in its own result area
    page.locator(".run-sweep > summary").click()
    page.locator("#run-sweep-form button[type=submit]").click()
    sweep = page.locator("#run-sweep-result .run-error[role=alert]")
    sweep.wait_for()
    assert sweep.inner_text().startswith("This sweep cannot be done.")
    assert "max_run_flops" in sweep.inner_text()
