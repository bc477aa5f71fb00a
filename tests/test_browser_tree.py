"""The module page in a real headless Chromium: the seed's tree, building through the form,
folding, a leaf's figure, keyboard-only use, no console error and nothing leaving localhost.

Screenshots go to ``screenshots/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from htmx_settle import wait_for_htmx_settled

from app.templating import node_id

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"


def shot(page, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def node(path: str) -> str:
    """The CSS selector of the tree node at ``path``'s own <details>."""
    return f"#{node_id(path)} > details"


def summary(path: str) -> str:
    return f"{node(path)} > summary"


def select_and_rerender(page, selector: str, value: str) -> None:
    """Choose in a select whose change re-renders the form, and wait for the new form."""
    wait_for_htmx_settled(page)
    with page.expect_response(lambda response: "/build/form" in response.url):
        page.select_option(selector, value)
    page.wait_for_load_state("networkidle")


def wait_for_module(page, title: str) -> None:
    page.wait_for_function(
        "title => document.querySelector('#module-title')?.textContent.trim().startsWith(title)",
        arg=title,
    )
    wait_for_htmx_settled(page)


def test_first_page_tree_fold_and_leaf_figure(page, page_probe):
    page.goto("/")
    assert re.search(r"/m/[\w-]+$", page.url)
    wait_for_module(page, "Linear")
    root = page.locator("#tree-root")
    assert root.is_visible()
    assert page.locator(node("")).get_attribute("open") is not None
    weight, bias = page.locator(summary(".weight")), page.locator(summary(".bias"))
    assert weight.is_visible() and bias.is_visible()
    assert "f32[2,3]" in weight.inner_text() and "param" in weight.inner_text()
    assert "f32[3]" in bias.inner_text()
    assert page.locator("[data-testid=device]").inner_text().strip()  # CPU, or the GPU's name
    shot(page, "first_page_1280")

    # fold and unfold the root
    root.click()
    assert page.locator(node("")).get_attribute("open") is None
    assert not weight.is_visible()
    root.click()
    assert weight.is_visible()

    # open the weight: its statistics and its plotly figure
    weight.click()
    figure = page.locator(f"{node('.weight')} .plot .main-svg").first
    figure.wait_for()
    leaf = page.locator(f"{node('.weight')} .leaf-view")
    assert "Mean" in leaf.inner_text() and "(2, 3)" in leaf.inner_text()
    assert page.locator(f"{node('.weight')} .plot .heatmaplayer").count() == 1
    # the path and the tree_at accessor are one click away
    tools = page.locator(f"{node('.weight')} > .node-body > .node-tools")
    assert ".weight" in tools.inner_text()
    copy = tools.get_by_role("button", name=re.compile("tree_at"))
    assert copy.get_attribute("data-copy") == "eqx.tree_at(lambda m: m.weight, model, ...)"
    copy.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-copy]')]"
        ".some(b => /Copied|Ctrl/.test(b.textContent))"
    )
    # all the values, one more click
    page.locator(f"{node('.weight')} .values > summary").click()
    page.locator(f"{node('.weight')} .values-table").wait_for()
    assert page.locator(f"{node('.weight')} .values-table td").count() == 6
    shot(page, "leaf_figure_1280")
    page_probe.assert_clean()


def test_keyboard_only(page, page_probe):
    page.goto("/")
    wait_for_module(page, "Linear")
    # Tab to the first skip link and follow it to the module
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent").strip() == "Skip to the module"
    page.keyboard.press("Enter")
    # from the title, Tab reaches the tree's root
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "tree-root":
            break
    assert page.evaluate("document.activeElement.id") == "tree-root"
    page.keyboard.press("ArrowDown")
    assert "weight" in page.evaluate("document.activeElement.textContent")
    page.keyboard.press("Enter")  # opens the weight
    page.locator(f"{node('.weight')} .plot .main-svg").first.wait_for()
    page.keyboard.press("ArrowLeft")  # closes it again
    assert page.locator(node(".weight")).get_attribute("open") is None
    page.keyboard.press("ArrowLeft")  # up to the root
    assert page.evaluate("document.activeElement.id") == "tree-root"

    # build another kind with the keyboard only: skip to the form, pick a kind, press Enter
    page.goto(page.url.split("#")[0])  # a fresh page: the skip links come first
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent").strip() == "Skip to the build form"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-kind"
    page.keyboard.press("ArrowDown")  # the next kind: RecurrentDiscrete
    page.wait_for_selector("#f-features")
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'f-kind'")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-features"
    page.keyboard.press("Control+A")
    page.keyboard.type("6")
    page.keyboard.press("Enter")
    wait_for_module(page, "RecurrentDiscrete")
    page.wait_for_function(
        "() => document.activeElement && document.activeElement.id === 'module-title'"
    )
    assert "f32[6,6]" in page.locator(summary(".J")).inner_text()
    page_probe.assert_clean()


def test_build_mlp_and_custom_module_through_the_form(page, page_probe):
    page.goto("/")
    wait_for_module(page, "Linear")
    seed_url = page.url

    # an MLP
    select_and_rerender(page, "#f-kind", "eqx.nn.MLP")
    page.fill("#f-in_size", "2")
    page.fill("#f-out_size", "1")
    page.fill("#f-width_size", "8")
    page.fill("#f-depth", "2")
    page.select_option("#f-activation", "tanh")
    page.get_by_role("button", name=re.compile("^Build MLP")).click()
    wait_for_module(page, "MLP")
    assert page.url != seed_url and "/m/" in page.url
    assert "f32[8,2]" in page.locator(summary(".layers[0].weight")).inner_text()
    assert "3 items" in page.locator(summary(".layers")).inner_text()
    assert "<function tanh>" in page.locator(summary(".activation")).inner_text()
    mlp_url = page.url
    shot(page, "mlp_built_1280")

    # an error first: the message shows next to its field, nothing is built
    select_and_rerender(page, "#f-kind", "custom")
    page.fill("#f-name", "Linear")
    page.fill("#f-call", "x @ weight + nope")
    page.get_by_role("button", name=re.compile("^Build Custom")).click()
    error = page.locator("#f-call-error")
    error.wait_for()
    assert "nope" in error.inner_text()
    assert page.url == mlp_url
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'f-call'")

    # then the custom module: weight (2,3) normal, bias (3,) normal, x @ weight + bias
    page.fill("#f-fields-0-name", "weight")
    select_and_rerender(page, "#f-fields-0-role", "param")
    page.fill("#f-fields-0-shape", "2,3")
    select_and_rerender(page, "#f-fields-0-init", "normal")
    page.fill("#f-fields-1-name", "bias")
    page.fill("#f-fields-1-shape", "3")
    select_and_rerender(page, "#f-fields-1-init", "normal")
    page.fill("#f-seed", "0")
    page.fill("#f-call", "x @ weight + bias")
    shot(page, "custom_form_1280")
    page.get_by_role("button", name=re.compile("^Build Custom")).click()
    wait_for_module(page, "Linear")
    assert "custom" in page.locator("#module-title").inner_text()
    assert "f32[2,3]" in page.locator(summary(".weight")).inner_text()
    assert "f32[3]" in page.locator(summary(".bias")).inner_text()
    custom_id = page.url.rsplit("/", 1)[-1]
    seed_id = seed_url.rsplit("/", 1)[-1]
    for path in (".weight", ".bias"):
        ours = page.request.get(f"/api/modules/{custom_id}/leaf?path={path}").json()
        seed = page.request.get(f"/api/modules/{seed_id}/leaf?path={path}").json()
        assert ours["values"] == seed["values"]  # the seed's Linear to the last bit

    # the module list and the back button behave like links
    assert page.locator(".module-list a").count() == 3
    page.go_back()
    wait_for_module(page, "MLP")
    assert page.url == mlp_url
    page.locator(".module-list a", has_text="the seed's example").click()
    wait_for_module(page, "Linear")
    assert page.url == seed_url
    page_probe.assert_clean()


def test_stack_rows_and_layermap(page, page_probe):
    page.goto("/")
    wait_for_module(page, "Linear")
    select_and_rerender(page, "#f-kind", "stack")
    page.click("#f-rows-add")
    page.wait_for_selector("#f-rows-2-kind")
    wait_for_htmx_settled(page)
    page.wait_for_function(
        "() => document.activeElement && document.activeElement.id === 'f-rows-2-kind'"
    )
    page.get_by_role("button", name="Remove row 1").click()
    page.wait_for_selector("#f-rows-2-kind", state="detached")
    wait_for_htmx_settled(page)
    page.get_by_role("button", name=re.compile("^Build Stack")).click()
    wait_for_module(page, "Sequential")

    select_and_rerender(page, "#f-kind", "library.network")
    page.get_by_role("button", name=re.compile("^Build Reference")).click()
    wait_for_module(page, "SequentialOrchestrator")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"the page scrolls sideways ({width}px)"
    table = page.locator("table.layermap")
    assert table.locator("tbody tr").count() == 2
    page.get_by_role("link", name="RecurrentDiscrete").click()
    focused = page.evaluate("document.activeElement.closest('li')?.id")
    assert focused == node_id(".lmap._layers[1][1]")
    shot(page, "network_1280")
    page_probe.assert_clean()


def test_projector_screenshots(browser, live_server, page_probe):
    """1024x768 at 150 % zoom (a projector): the first page and an open leaf."""
    context = browser.new_context(
        viewport={"width": 683, "height": 512}, device_scale_factor=1.5, base_url=live_server.url
    )
    page = context.new_page()
    page.on(
        "console", lambda m: page_probe.console_errors.append(m.text) if m.type == "error" else None
    )
    page.on("pageerror", lambda error: page_probe.page_errors.append(str(error)))
    try:
        page.goto("/")
        wait_for_module(page, "Linear")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 683 + 1, f"the page scrolls sideways at 150 % zoom ({width}px)"
        shot(page, "projector_first_page", full_page=False)
        page.locator(summary(".weight")).click()
        page.locator(f"{node('.weight')} .plot .main-svg").first.wait_for()
        page.locator(node(".weight")).scroll_into_view_if_needed()
        shot(page, "projector_leaf", full_page=False)
        assert page.evaluate("document.documentElement.scrollWidth") <= 683 + 1
    finally:
        context.close()
    page_probe.assert_clean()
