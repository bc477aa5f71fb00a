"""Training and dynamics from the page, in a real headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import build
from htmx_settle import wait_for_htmx_settled

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"

pytestmark = pytest.mark.browser


def progress_value(page) -> int:
    return int(page.locator("#train-progress-bar").get_attribute("value"))


def wait_for_progress_above(page, value: int, timeout_ms: int) -> int:
    """Poll the progress bar (the CSP forbids evaluated strings, so no wait_for_function)."""
    waited = 0
    while (now := progress_value(page)) <= value:
        assert waited < timeout_ms, f"the progress bar stayed at {now}"
        page.wait_for_timeout(100)
        waited += 100
    return now


def test_train_from_the_page_watch_it_and_stop_it(page, page_probe):
    SCREENSHOTS.mkdir(exist_ok=True)
    page.goto("/")
    module = build(
        page,
        "eqx.nn.MLP",
        {"in_size": 2, "out_size": 1, "width_size": 16, "depth": 2, "activation": "tanh"},
    )
    page.goto(f"/m/{module}")
    panel = page.locator("#train-panel")
    panel.locator("#train-form").wait_for()
    wait_for_htmx_settled(page)
    panel.get_by_label("Dataset").select_option("circle")
    panel.get_by_label("Noise").fill("0.05")
    panel.get_by_label("Steps", exact=True).fill("20000")
    panel.get_by_role("button", name="Train", exact=True).click()

    bar = panel.get_by_role("progressbar")
    bar.wait_for()
    assert "Step" in panel.locator("label[for=train-progress-bar]").inner_text()
    first = wait_for_progress_above(page, 0, 60_000)
    second = wait_for_progress_above(page, first, 30_000)
    assert 0 < first < second < 20_000
    boundary = page.locator(".train-boundary .plot.js-plotly-plot")
    boundary.wait_for(timeout=30_000)
    page.locator(".train-figure .plot.js-plotly-plot").nth(2).wait_for(timeout=30_000)
    page.wait_for_timeout(1200)
    page.locator("#train-panel").screenshot(path=str(SCREENSHOTS / "train_in_progress.png"))

    # Stopping ends the job; its parameters replace the module's and the tree panel reloads.
    with page.expect_response(lambda r: r.url.endswith(f"/m/{module}"), timeout=30_000) as tree:
        panel.get_by_role("button", name="Stop training").click()
        page.locator('#train-progress[data-status="stopped"]').wait_for(timeout=30_000)
    assert tree.value.status == 200
    assert page.get_by_role("button", name="Stop training").count() == 0
    assert "Stopped at step" in page.locator(".train-status").inner_text()
    assert page.locator("table.train-diff tbody tr").count() == 6
    assert "replaced the module's" in page.locator(".train-saved").inner_text()
    page.wait_for_load_state("networkidle")
    assert page.locator(".tree-panel").count() == 1
    page.locator("#train-panel").screenshot(path=str(SCREENSHOTS / "train_stopped.png"))
    page_probe.assert_clean()


def test_the_reference_network_trains_and_its_dynamics_show(page, page_probe):
    SCREENSHOTS.mkdir(exist_ok=True)
    page.goto("/")
    module = build(page, "library.network", {})
    page.goto(f"/m/{module}")
    train = page.locator("#train-panel")
    train.locator("#train-form").wait_for()
    wait_for_htmx_settled(page)
    assert train.get_by_label("Dataset").input_value() == "prototypes"
    assert train.get_by_label("Epochs").input_value() == "3"
    train.get_by_role("button", name="Train", exact=True).click()
    page.locator("#train-progress-bar").wait_for()
    page.locator('#train-progress[data-status="done"]').wait_for(timeout=150_000)
    accuracy = float(page.locator(".metric-accuracy").inner_text())
    assert accuracy >= 0.95
    page.locator(".train-figure .plot.js-plotly-plot").first.wait_for()
    page.locator("#train-panel").screenshot(path=str(SCREENSHOTS / "train_network_done.png"))

    panel = page.locator("#dynamics-panel")
    panel.get_by_role("button", name="Run the dynamics").wait_for()
    wait_for_htmx_settled(page)
    panel.get_by_role("button", name="Run the dynamics").click()
    plots = page.locator("#dynamics-result .plot.js-plotly-plot")
    plots.nth(4).wait_for(timeout=60_000)
    assert "sweeps of" in page.locator(".dynamics-summary").inner_text()
    panel.screenshot(path=str(SCREENSHOTS / "dynamics.png"))
    page_probe.assert_clean()
