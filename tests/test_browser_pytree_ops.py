"""The pytree operations in a real headless Chromium: flatten, partition, tree_map, edit a leaf
(and see the output change), undo, compare, and the search that lands on ``.layers[2500].bias``
of the 10,000-leaf MLP; each one screenshotted (``screenshots/``, git-ignored) at 1280x720 and
390 px wide, with no console error and nothing leaving localhost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from htmx_settle import wait_for_htmx_settled

from app.templating import node_id

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"


def shot(locator, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(SCREENSHOTS / f"ops-{name}.png"))


def open_op(page, name: str) -> None:
    wait_for_htmx_settled(page)
    page.locator(f"#op-{name} > summary").click()
    wait_for_htmx_settled(page)


def seed_page(page) -> str:
    page.goto("/")
    page.wait_for_selector("#ops-panel")
    wait_for_htmx_settled(page)
    return page.locator("#app").get_attribute("data-module-id")


def test_flatten_partition_map_edit_undo_compare(page, page_probe):
    module_id = seed_page(page)

    open_op(page, "flatten")
    rows = page.locator("#flatten-rows tr")
    rows.first.wait_for()
    assert rows.count() == 2
    assert rows.nth(0).locator("td").nth(1).inner_text() == ".weight"
    assert rows.nth(1).locator("td").nth(1).inner_text() == ".bias"
    assert "model_again is the module" in page.locator("#op-flatten").inner_text()
    shot(page.locator("#op-flatten"), "flatten")

    open_op(page, "partition")
    page.select_option("#partition-filter", "trainable")
    page.locator("#partition-go").click()
    page.locator("#partition-rest").wait_for()
    rest = page.locator("#partition-rest").inner_text()
    assert rest.count("None") == 2  # both leaves are trained: the rest holds two holes
    assert "f32[2,3]" in page.locator("#partition-kept").inner_text()
    shot(page.locator("#op-partition"), "partition")

    open_op(page, "map")
    page.locator("#op-map button[data-value='sign(leaf)']").click()
    assert page.input_value("#map-expression") == "sign(leaf)"
    page.locator("#map-go").click()
    link = page.locator("#map-new-link")
    link.wait_for()
    new_id = link.inner_text().strip()
    assert new_id != module_id
    assert (
        "jax.tree.map(f, eqx.filter(model, eqx.is_inexact_array))"
        in page.locator("#map-result").inner_text()
    )
    wait_for_htmx_settled(page)
    shot(page.locator("#op-map"), "map")

    open_op(page, "edit")
    page.locator("#edit-path").wait_for()  # the form loads when the section opens
    wait_for_htmx_settled(page)
    page.fill("#edit-path", ".weight")
    page.fill("#edit-index", "0, 1")
    page.fill("#edit-value", "5")
    page.locator("#edit-go").click()
    page.locator("#edit-out-after").wait_for()
    text = page.locator("#edit-result").inner_text()
    assert "revision 1" in text
    change = float(re.search(r"output changed by at most ([\d.]+)", text).group(1))
    assert change > 0  # the output moved: weight[0, 1] feeds output column 1
    wait_for_htmx_settled(page)
    shot(page.locator("#op-edit"), "edit")

    page.locator("#edit-undo").click()
    page.wait_for_function(
        "() => document.querySelector('#edit-result').textContent.includes('Undid')"
    )
    text = page.locator("#edit-result").inner_text()
    assert "Nothing left to undo" in text
    assert float(re.search(r"output changed by at most ([\d.]+)", text).group(1)) == change
    wait_for_htmx_settled(page)
    shot(page.locator("#op-edit"), "undo")

    open_op(page, "compare")
    page.select_option("#compare-b", new_id)
    page.locator("#compare-go").click()
    page.locator("#compare-result .verdicts").wait_for()
    verdicts = page.locator("#compare-result .verdicts").inner_text()
    assert "Same structure" in verdicts and "jit reuses" in verdicts
    assert page.locator("#compare-result table tbody tr").count() == 2
    page.locator("#compare-result .plot .main-svg").first.wait_for()
    shot(page.locator("#op-compare"), "compare")
    page_probe.assert_clean()


def test_search_lands_on_a_deep_path_of_the_big_mlp(page, page_probe):
    seed_page(page)
    params = {"in_size": 8, "out_size": 8, "width_size": 8, "depth": 5000}
    made = page.request.post("/api/modules", data={"kind": "eqx.nn.MLP", "params": params})
    assert made.status == 201
    page.goto(f"/m/{made.json()['id']}")
    page.locator(".tree-fold").first.wait_for()
    wait_for_htmx_settled(page)
    assert "5,001 × Linear(8→8)" in page.locator(".tree-fold").first.inner_text()
    assert page.locator("button:has-text('Show 100 more')").count() == 0
    shot(page.locator(".tree-panel"), "bigtree")
    page.fill("#tree-search-path", ".layers[2500].bias")
    page.locator("#tree-search-go").click()
    target = page.locator(f"#{node_id('.layers[2500].bias')} > details > summary")
    target.wait_for()
    page.wait_for_function(
        "() => document.activeElement && document.activeElement.closest('.tree-focus')"
    )
    assert target.is_visible() and target.evaluate("el => el === document.activeElement")
    box, view = target.bounding_box(), page.viewport_size
    assert 0 <= box["y"] and box["y"] + box["height"] <= view["height"]  # in view
    assert "μ" in target.inner_text()  # the inline summary: mean ± std and its colour strip
    page.locator(f"#{node_id('.layers[2500].bias')} .leaf-detail dl").wait_for()  # opened
    assert page.locator("button:has-text('Show 100 more')").count() == 0
    wait_for_htmx_settled(page)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "ops-search.png"))
    page_probe.assert_clean()


def test_operations_at_phone_width(browser, live_server, page_probe):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.on("pageerror", lambda error: page_probe.page_errors.append(str(error)))
    page.goto(live_server.url + "/")
    page.wait_for_selector("#ops-panel")
    for name, button, ready in [
        ("partition", "#partition-go", "#partition-kept"),
        ("edit", "#edit-go", "#edit-result .op-error, #edit-out-after"),
    ]:
        open_op(page, name)
        if name == "edit":
            page.locator("#edit-value").wait_for()
            wait_for_htmx_settled(page)
            page.fill("#edit-value", "leaf * 2")
            page.locator("#op-edit input[value=expression]").check()
        page.locator(button).click()
        page.locator(ready).first.wait_for()
        wait_for_htmx_settled(page)
        shot(page.locator(f"#op-{name}"), f"{name}-phone")
    panel = page.locator("#ops-panel")
    wide, room = panel.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert wide <= room, f"the operations panel is {wide} px wide in {room} px at 390 px"
    context.close()
    page_probe.assert_clean()
