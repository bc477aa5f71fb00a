"""The run panel in a real headless Chromium: one click on the seed's page shows the gradient,
a tree of 0.333 beside the model's, and its figure; the workshop's steps; errors that teach.

Screenshots go to ``screenshots/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from htmx_settle import wait_for_htmx_settled

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"


def shot(page, name: str, selector: str | None = None, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = str(SCREENSHOTS / f"{name}.png")
    if selector:
        page.locator(selector).screenshot(path=path)
    else:
        page.screenshot(path=path, full_page=full_page)


def preset(page, name: str) -> None:
    """Click a preset and wait for its answer (the panel's body is replaced, so the old one,
    marked stale first, cannot pass for it)."""
    page.evaluate("document.getElementById('run-body')?.setAttribute('data-stale', '')")
    page.locator(f"button[data-preset='{name}']").click()
    page.locator("#run-body:not([data-stale]) #run-result .run-status").wait_for()
    page.locator(f"button.run-primary[data-preset='{name}']").wait_for()
    wait_for_htmx_settled(page)


def test_one_click_grad_on_the_seed(page, page_probe):
    page.goto("/")
    panel = page.locator("#run-panel")
    panel.wait_for()
    preset(page, "grad")
    table = page.locator("#run-result table.run-tree")
    assert table.get_attribute("data-paired") == "true"
    text = table.inner_text()
    assert "weight" in text and "bias" in text and "f32[2,3]" in text
    cells = page.locator("#run-result table.run-tree .run-cells td")
    assert cells.count() == 9
    assert set(cells.all_inner_texts()) == {"0.333"}
    page.locator("#run-result .plot .main-svg").first.wait_for()
    # the result has the focus, so it is in view: what the projector shows after one click
    assert page.evaluate("document.activeElement.id") == "run-result"
    shot(page, "run_seed_grad_viewport", full_page=False)
    status = page.locator("#run-result .run-status").inner_text()
    assert "compiled now" in status
    assert "jax.grad(loss)(model, x)" in page.locator("#run-result .run-function").inner_text()
    shot(page, "run_seed_grad")
    shot(page, "run_seed_grad_panel", "#run-panel")

    # the same run again compiles nothing
    preset(page, "grad")
    assert "reused: you compiled it before" in page.locator("#run-result .run-status").inner_text()

    # vmap adds an axis: per-example gradients, then jit(vmap(grad))
    preset(page, "per-example")
    weight_row = page.locator("#run-result .run-tree tr[data-path='.weight']")
    labels = weight_row.locator(".run-block-label").all_inner_texts()
    assert labels == ["[0]", "[1]", "[2]", "[3]", "[4]"]  # vmap added an axis of 5
    blocks = weight_row.locator(".run-block").all_inner_texts()
    assert len(set(blocks)) == 5, blocks  # normal examples: each gradient its own
    # the result's own shape beside the model's, the input shown, its change said out loud
    assert weight_row.locator(".run-out-shape").inner_text() == "f32[5,2,3]"
    assert "f32[2,3]" in weight_row.locator("th").inner_text()
    assert "f32[5,2,3]" in page.locator("#run-result .run-axis-note").inner_text()
    assert "f32[5,2]" in page.locator("#run-result .run-input h3").inner_text()
    assert page.locator("#run-result .run-input .run-cells td").count() == 10
    change = page.locator("#run-result .run-input-change").inner_text()
    assert "ones" in change and "normal (seed 0)" in change
    # without jit: the op-by-op time beside the compiled one
    assert "ms" in page.locator("#run-result .run-eager-ms").inner_text()
    assert "ms" in page.locator("#run-result .run-jit-ms").inner_text()
    page.locator("#run-result .plot .main-svg").first.wait_for()
    shot(page, "run_per_example", "#run-panel")
    preset(page, "jit-vmap-grad")
    changes = page.locator("#run-result .run-changes").inner_text()
    assert "transforms grad, vmap -> grad, vmap, jit" in changes
    assert page.locator("#run-result .run-input-change").count() == 0  # same input
    assert page.locator("#run-result .run-percall-item.is-this .run-jit-ms").count() == 1
    assert "ms" in page.locator("#run-result .run-eager-ms").inner_text()
    preset(page, "jacobian")
    page.locator("#run-result .plot .main-svg").first.wait_for()
    shot(page, "run_jacobian", "#run-panel")

    # the full values of a leaf are one click away
    first_values = page.locator("#run-result .run-tree details summary").first
    first_values.click()
    assert page.locator("#run-result .run-tree .run-full").first.is_visible()
    page_probe.assert_clean()


def test_pipeline_editing_and_an_error_that_teaches(page, page_probe):
    page.goto("/")
    page.locator("#run-panel").wait_for()
    page.select_option("#run-function", "forward")
    page.locator("#run-form button[value='add']").click()
    page.locator("#run-step-1").wait_for()
    wait_for_htmx_settled(page)
    page.select_option("#run-step-1", "vmap")
    page.locator("#run-form button[value='up-1']").click()
    page.wait_for_function("() => document.querySelector('#run-step-0')?.value === 'vmap'")
    wait_for_htmx_settled(page)
    page.locator("#run-form button[value='remove-0']").click()
    page.wait_for_function("() => !document.querySelector('#run-step-1')")
    wait_for_htmx_settled(page)
    assert page.locator("#run-step-0").input_value() == "grad"
    page.locator("#run-form button[type=submit]").click()
    alert = page.locator("#run-result .run-error[role=alert]")
    alert.wait_for()
    assert (
        "grad needs a function that returns a scalar; this one returns f32[5,3]. Use the loss, "
        "or reduce the output with mean()" in alert.inner_text()
    )
    shot(page, "run_error", "#run-panel")
    # keyboard: the Run button is reachable and works
    page.select_option("#run-function", "loss")
    page.locator("#run-form button[type=submit]").focus()
    page.keyboard.press("Enter")
    page.locator("#run-result .run-status").wait_for()
    assert page.locator("#run-result .run-tree .run-cells td").first.inner_text() == "0.333"
    # a NaN shows as a warning
    page.fill("#run-loss", "mean(sqrt(out))")
    page.locator("#run-form button[type=submit]").click()
    page.locator("#run-result .run-warning[role=alert]").first.wait_for()
    shot(page, "run_nan_warning", "#run-panel")
    page_probe.assert_clean()


def test_sweep(page, page_probe):
    page.goto("/")
    page.locator("#run-panel").wait_for()
    page.locator(".run-sweep > summary").click()
    page.locator("#run-sweep-form button[type=submit]").click()
    page.locator("#run-sweep-result .plot .main-svg").first.wait_for()
    assert page.locator("#run-sweep-result .plot .scatterlayer .trace").count() == 2
    shot(page, "run_sweep", ".run-sweep")
    page_probe.assert_clean()
