"""The module page on a 1024x700 laptop and a 390 px phone, in a real headless Chromium.

On the laptop the build form is below the module, so a button on the first screen jumps to it;
on the phone nothing overflows sideways (scrollWidth <= clientWidth) with a run's result and a
training job on the page. Delete asks before it deletes. Screenshots go to ``screenshots/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from htmx_settle import wait_for_htmx_settled

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
MLP = {"in_size": 2, "out_size": 1, "width_size": 16, "depth": 2, "activation": "tanh"}
NO_SIDEWAYS = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def module_with_a_run_and_a_job(page) -> str:
    page.goto("/")
    response = page.request.post("/api/modules", data={"kind": "eqx.nn.MLP", "params": MLP})
    assert response.status == 201, response.text()
    module = response.json()["id"]
    job = page.request.post(
        f"/api/modules/{module}/train",
        data={"dataset": {"name": "circle", "num_examples": 200}, "steps": 60},
    )
    assert job.status == 202, job.text()
    page.goto(f"/m/{module}")
    page.locator("#run-panel").wait_for()
    wait_for_htmx_settled(page)
    page.locator("button[data-preset='per-example']").click()
    page.locator("#run-result .run-status").wait_for()
    page.locator('#train-progress[data-status="done"]').wait_for(timeout=90_000)
    page.locator("#run-result .plot .main-svg").first.wait_for()
    wait_for_htmx_settled(page)
    return module


def test_laptop_1024x700_build_button_on_the_first_screen(page, page_probe):
    SCREENSHOTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1024, "height": 700})
    module = module_with_a_run_and_a_job(page)
    page.goto(f"/m/{module}")
    page.locator("#train-progress").wait_for()
    jump = page.get_by_role("link", name="+ Build a module")
    found = jump.bounding_box()
    assert found is not None and found["y"] >= 0 and found["y"] + found["height"] <= 700
    assert page.evaluate(NO_SIDEWAYS)
    page.screenshot(path=str(SCREENSHOTS / "module_1024x700.png"))
    jump.click()
    heading = page.locator("#build-heading")
    heading.wait_for()
    top = heading.bounding_box()
    assert top is not None and -5 < top["y"] < 700  # the form is in view
    page_probe.assert_clean()


def test_phone_390_nothing_overflows_sideways_and_delete_asks_first(page, page_probe):
    SCREENSHOTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 390, "height": 844})
    module = module_with_a_run_and_a_job(page)
    assert page.evaluate(NO_SIDEWAYS)
    page.screenshot(path=str(SCREENSHOTS / "module_390.png"), full_page=True)
    # the training figures fit their panel
    panel = page.locator("#train-panel").bounding_box()
    for figure in page.locator(".train-figure").all():
        box = figure.bounding_box()
        assert box["x"] + box["width"] <= panel["x"] + panel["width"] + 1

    # Delete asks first; keeping the module keeps it
    page.get_by_text("Delete this module").click()
    confirm = page.get_by_role("button", name="Yes, delete it")
    confirm.wait_for()
    assert page.evaluate(NO_SIDEWAYS)
    assert page.request.get(f"/api/modules/{module}").status == 200
    confirm.click()
    page.wait_for_load_state("load")
    assert page.request.get(f"/api/modules/{module}").status == 404
    page_probe.assert_clean()
