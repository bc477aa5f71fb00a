"""The HTML pages and fragments: they render, every control is labelled, forms validate with the
catalog's models and put errors next to their inputs, and no inline script is needed."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest

from app.catalog import CATALOG
from app.templating import node_id

HX = {"HX-Request": "true"}


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside labels and summaries."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.label_depth = 0
        self.wrapped: set[int] = set()
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = {name: (value if value is not None else "") for name, value in attrs}
        self.tags.append((tag, attributes))
        if tag == "label":
            self.label_depth += 1
        elif tag in ("input", "select", "textarea") and self.label_depth:
            self.wrapped.add(len(self.tags) - 1)
        if tag not in ("input", "meta", "link", "br", "img", "hr"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag == "label":
            self.label_depth -= 1
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def find(self, tag: str) -> list[dict]:
        return [attrs for name, attrs in self.tags if name == tag]


def assert_controls_labelled(html: str) -> int:
    """Every input, select and textarea has a <label for> (or is wrapped in one, or has an
    aria-label); returns how many were checked."""
    elements = Elements(html)
    labelled = {attrs.get("for") for attrs in elements.find("label")}
    ids = [attrs.get("id") for _, attrs in elements.tags if attrs.get("id")]
    assert len(ids) == len(set(ids)), f"duplicate ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    checked = 0
    for index, (tag, attrs) in enumerate(elements.tags):
        if tag not in ("input", "select", "textarea") or attrs.get("type") == "hidden":
            continue
        checked += 1
        ok = (
            attrs.get("id") in labelled
            or index in elements.wrapped
            or attrs.get("aria-label")
            or attrs.get("aria-labelledby")
        )
        assert ok, f"unlabelled <{tag}> {attrs}"
    return checked


def assert_no_inline_script(html: str) -> None:
    elements = Elements(html)
    for attrs in elements.find("script"):
        assert attrs.get("src") or attrs.get("type") == "application/json", attrs
    for _, attrs in elements.tags:
        handlers = [name for name in attrs if name.startswith("on")]
        assert not handlers, f"inline event handler {handlers} in {attrs}"
        assert not any(name.startswith(("hx-on", "hx-vars")) for name in attrs), attrs
    assert "javascript:" not in html


def post_form(client, url: str, pairs: list[tuple[str, str]], **kwargs):
    """A form post with repeated names (a hidden ``false`` then a checkbox's ``on``)."""
    headers = {**HX, "Content-Type": "application/x-www-form-urlencoded"}
    return client.post(url, content=urlencode(pairs), headers=headers, **kwargs)


def section(html: str, start: str, end: str) -> str:
    begin = html.index(start)
    return html[begin : html.index(end, begin)]


def open_first_page(client) -> tuple[str, str]:
    response = client.get("/")
    assert response.status_code == 200
    module_id = str(response.url).rsplit("/", 1)[-1]
    return module_id, response.text


def test_first_page_is_the_seed_example_with_its_tree_open(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/m/")
    module_id, html = open_first_page(client)
    assert "<h1" in html and "Linear" in html
    tree = section(html, '<ul class="tree"', "</section>")
    root = re.search(r"<details[^>]*>\s*<summary id=\"tree-root\"", tree)
    assert root and " open" in root.group(0)
    assert re.search(r'n-key">weight</span>.*?n-summary">f32\[2,3\]</code>', tree, re.S)
    assert re.search(r'n-key">bias</span>.*?n-summary">f32\[3\]</code>', tree, re.S)
    assert 'badge badge-param">param' in tree
    # the header names the device; the code panel shows the catalog's script
    from app.devices import device_label

    assert f'Runs on <strong data-testid="device">{device_label()}</strong>' in html
    assert "model = Linear(2, 3, jax.random.PRNGKey(0))" in html
    # the slots of the other parts are marked in the template
    assert client.get("/").url.path == f"/m/{module_id}"
    # a second visit shows the same module, not another seed
    assert open_first_page(client)[0] == module_id


def test_page_structure_and_conventions(client):
    _, html = open_first_page(client)
    assert_no_inline_script(html)
    meta = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", html)
    config = json.loads(meta.group(1))
    assert config["allowEval"] is False and config["allowScriptTags"] is False
    assert any(rule["code"] == "[45].." and rule["swap"] for rule in config["responseHandling"])
    assert config["timeout"] > 0
    assert "/static/vendor/htmx/htmx-2.0.4.min.js" in html
    assert "/vendor/plotly/plotly.min.js" in html and "/static/playground.js" in html
    assert 'role="alert"' in html and 'id="busy"' in html
    for url in ["/static/playground.js", "/static/playground.css", "/vendor/plotly/plotly.min.js"]:
        assert client.get(url).status_code == 200
    # no page asks another host for anything
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_every_control_of_my_parts_is_labelled(client):
    _, html = open_first_page(client)
    assert assert_controls_labelled(section(html, '<form id="build-form"', "</form>")) >= 3
    for kind in CATALOG:
        response = client.get("/build/form", params={"kind": kind}, headers=HX)
        assert response.status_code == 200, kind
        assert assert_controls_labelled(response.text) >= 1, kind
        assert_no_inline_script(response.text)


def test_whole_page_controls_are_labelled(client):
    _, html = open_first_page(client)
    assert assert_controls_labelled(html) >= 4


def test_form_is_rendered_from_the_catalog_model(client):
    html = client.get("/build/form", params={"kind": "eqx.nn.MLP"}, headers=HX).text
    fields = CATALOG["eqx.nn.MLP"].model_fields
    for name, info in fields.items():
        assert f'for="f-{name}"' in html, name
        assert info.title in html
    width = Elements(html).find("input")
    width = next(a for a in width if a.get("id") == "f-width_size")
    default_width = CATALOG["eqx.nn.MLP"]().width_size
    assert width["type"] == "number" and width["min"] == "1" and width["max"] == "4096"
    assert width["value"] == str(default_width) and width["step"] == "1"
    activation = re.search(r'<select id="f-activation".*?</select>', html, re.S).group(0)
    assert 'value="tanh"' in activation and 'value="relu" selected' in activation
    assert re.search(r'type="checkbox" id="f-use_final_bias"[^>]* checked', html)
    # the picker is grouped
    assert '<optgroup label="Library">' in html and '<optgroup label="Equinox">' in html


def test_build_errors_show_next_to_their_field(client):
    response = client.post(
        "/build",
        data={"kind": "library.Linear", "in_dim": "0", "out_dim": "3", "seed": "0"},
        headers=HX,
    )
    assert response.status_code == 200
    assert response.headers["X-Form-Errors"] == "1"
    html = response.text
    error = re.search(r'<p class="field-error" id="f-in_dim-error">(.*?)</p>', html, re.S)
    assert error and "greater than or equal to 1" in error.group(1)
    assert re.search(r'id="f-in_dim"[^>]*aria-describedby="[^"]*f-in_dim-error"', html, re.S)
    assert 'aria-invalid="true"' in html and 'data-focus="f-in_dim"' in html
    # what was typed stays in the form
    assert re.search(r'id="f-in_dim" name="in_dim" value="0"', html)
    # a plain form post (no JavaScript) gets the whole page with the errors, as a 422
    plain = client.post("/build", data={"kind": "library.Linear", "in_dim": "x"})
    assert plain.status_code == 422 and 'id="f-in_dim-error"' in plain.text


def test_limit_errors_show_on_the_form(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", max_module_params=100))
    with TestClient(app) as client:
        response = client.post(
            "/build",
            data={"kind": "eqx.nn.Linear", "in_features": "50", "out_features": "50"},
            headers=HX,
        )
        assert "max_module_params" in response.text and "2,550" in response.text


def test_build_through_the_form(client):
    module_id, _ = open_first_page(client)
    data = {
        "current_module": module_id,
        "kind": "eqx.nn.MLP",
        "in_size": "2",
        "out_size": "1",
        "width_size": "8",
        "depth": "2",
        "activation": "tanh",
        "final_activation": "identity",
        "use_bias": "false",
        "use_final_bias": "false",
    }
    data_list = list(data.items()) + [("use_bias", "on")]
    response = post_form(client, "/build", data_list)
    assert response.status_code == 200
    new_id = response.headers["HX-Push-Url"].rsplit("/", 1)[-1]
    assert response.headers["HX-Retarget"] == "#app"
    assert '<main id="app"' in response.text and "<title>" in response.text
    module = client.get(f"/api/modules/{new_id}").json()
    assert module["params"]["use_bias"] is True and module["params"]["use_final_bias"] is False
    assert module["params"]["activation"] == "tanh"
    # without htmx: a redirect to the new module's page
    plain = client.post("/build", data=data, follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"].startswith("/m/")


def test_stack_rows_add_and_remove(client):
    base = {
        "kind": "stack",
        "rows.0.kind": "eqx.nn.Linear",
        "rows.0.params.in_features": "2",
        "rows.0.params.out_features": "16",
        "rows.0.activation": "relu",
        "seed": "0",
    }
    html = client.post("/build/form", data={**base, "form_action": "add-row"}, headers=HX).text
    assert "Row 2" in html and 'id="f-rows-1-kind"' in html
    assert re.search(r'id="f-rows-1-params-in_features"[^>]*value="16"', html, re.S)
    assert 'data-focus="f-rows-1-kind"' in html
    two = {**base, "rows.1.kind": "eqx.nn.Linear", "rows.1.params.in_features": "16"}
    html = client.post("/build/form", data={**two, "form_action": "remove-row:0"}, headers=HX).text
    assert "Row 2" not in html and re.search(
        r'id="f-rows-0-params-in_features"[^>]*value="16"', html
    )
    # another kind of row brings that kind's inputs
    html = client.post(
        "/build/form",
        data={**base, "rows.0.kind": "eqx.nn.MLP", "form_action": "refresh"},
        headers=HX,
    ).text
    assert 'id="f-rows-0-params-width_size"' in html
    assert_controls_labelled(html)


def test_custom_fields_editor(client):
    base = {
        "kind": "custom",
        "name": "Scaled",
        "seed": "0",
        "fields.0.name": "weight",
        "fields.0.role": "param",
        "fields.0.shape": "2,3",
        "fields.0.init": "normal",
        "call": "x @ weight",
    }
    html = client.post("/build/form", data={**base, "form_action": "add-field"}, headers=HX).text
    assert "Field 2" in html and 'id="f-fields-1-name"' in html
    static = {**base, "fields.0.role": "static", "form_action": "refresh"}
    html = client.post("/build/form", data=static, headers=HX).text
    assert 'id="f-fields-0-value"' in html and 'id="f-fields-0-shape"' not in html
    assert_controls_labelled(html)
    # the call expression is a textarea; a bad name is shown next to it
    bad = {**base, "call": "x @ weight + nope"}
    html = client.post("/build", data=bad, headers=HX).text
    assert re.search(r'<textarea id="f-call"', html)
    error = re.search(r'id="f-call-error">(.*?)</p>', html, re.S)
    assert error and "nope" in error.group(1)


def test_change_kind_renders_that_kinds_defaults(client):
    html = client.post(
        "/build/form", data={"kind": "eqx.nn.Conv2d", "form_action": "change-kind"}, headers=HX
    ).text
    assert 'id="f-in_channels"' in html and 'value="eqx.nn.Conv2d" selected' in html


def test_tree_fragments(client):
    response = client.post(
        "/api/modules",
        json={
            "kind": "eqx.nn.MLP",
            "params": {"in_size": 2, "out_size": 2, "width_size": 2, "depth": 150},
        },
    )
    module_id = response.json()["id"]
    page = client.get(f"/m/{module_id}").text
    # 151 identical layers are one folded line; opening it lists them 100 at a time
    assert "151 ×</strong> Linear(2→2)" in page
    assert "path=.layers&amp;offset=0&amp;stop=151" in page
    html = client.get(
        f"/m/{module_id}/tree", params={"path": ".layers", "offset": 0, "stop": 151}, headers=HX
    ).text
    assert "Show 51 more" in html and "151 ×" not in html
    html = client.get(
        f"/m/{module_id}/tree",
        params={"path": ".layers", "offset": 100, "stop": 151},
        headers=HX,
    ).text
    assert f'id="{node_id(".layers[100]")}"' in html and f'id="{node_id(".layers[150]")}"' in html
    assert 'class="more"' not in html  # the last page: nothing more to show
    assert "data-focus-on-load" in html
    html = client.get(f"/m/{module_id}/tree", params={"path": ".layers[7]"}, headers=HX).text
    assert ".layers[7].weight" in html and "eqx.tree_at(lambda m: m.layers[7].weight" in html
    response = client.get(f"/m/{module_id}/tree", params={"path": ".nope"}, headers=HX)
    assert response.status_code == 422 and 'role="alert"' in response.text


def test_leaf_fragment_has_stats_and_a_figure(client):
    module_id, _ = open_first_page(client)
    response = client.get(f"/m/{module_id}/leaf", params={"path": ".weight"}, headers=HX)
    assert response.status_code == 200
    html = response.text
    for label in ["Shape", "dtype", "Min", "Max", "Mean", "Std"]:
        assert f"<dt>{label}</dt>" in html
    figure_attr = re.search(r'class="plot"[^>]*data-figure="([^"]*)"', html).group(1)
    import html as html_lib

    figure = json.loads(html_lib.unescape(figure_attr))
    assert figure["data"][0]["type"] == "heatmap" and len(figure["data"][0]["z"]) == 2
    assert figure["data"][1]["type"] == "bar"  # the histogram beside it
    assert f"/api/modules/{module_id}/leaf?path=.weight" in html.replace("%2E", ".")
    values = client.get(f"/m/{module_id}/values", params={"path": ".weight"}, headers=HX).text
    assert values.count("<td>") == 6 and '<th scope="col">2</th>' in values
    bad = client.get(f"/m/{module_id}/leaf", params={"path": ""}, headers=HX)
    assert bad.status_code == 422 and "not an array leaf" in bad.text


def test_layermap_matrix(client):
    module_id = client.post("/api/modules", json={"kind": "library.network"}).json()["id"]
    html = client.get(f"/m/{module_id}").text
    table = section(html, '<table class="layermap">', "</table>")
    assert table.count('<th scope="col">slot') == 3 and table.count('<th scope="row">slot') == 2
    for path, name in [
        (".lmap._layers[1][0]", "FullyConnected"),
        (".lmap._layers[1][1]", "RecurrentDiscrete"),
        (".lmap._layers[1][2]", "FrozenFullyConnected"),
        (".lmap._layers[2][2]", "OutputLayer"),
    ]:
        anchor = f'href="#{node_id(path)}" data-reveal-node="{node_id(path)}">{name}</a>'
        assert anchor in table
        assert f'id="{node_id(path)}"' in html  # the cell's node is in the tree
    assert "no module" in table  # slot 2 receives nothing from slot 0


def test_module_list_and_navigation(client):
    first, _ = open_first_page(client)
    second = client.post("/api/modules", json={"kind": "eqx.nn.Linear"}).json()["id"]
    html = client.get(f"/m/{first}").text
    nav = section(html, '<nav aria-label="Your modules">', "</nav>")
    assert nav.index(second) < nav.index(first)
    assert re.search(rf'href="/m/{first}"[^>]*aria-current="page"', nav, re.S)
    assert f'hx-get="/m/{second}"' in nav and 'hx-push-url="true"' in nav


def test_unknown_module_page_is_a_404_page(client):
    response = client.get("/m/nope")
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]
    assert "No module nope" in response.text


def test_delete_from_the_page(client):
    module_id, _ = open_first_page(client)
    response = client.post(f"/m/{module_id}/delete", follow_redirects=False)
    assert response.status_code == 303
    assert client.get(f"/api/modules/{module_id}").status_code == 404
    # the workspace is never left empty: a fresh seed example
    assert client.get(response.headers["location"]).status_code == 200


@pytest.mark.parametrize("kind", ["custom", "stack", "library.network", "eqx.nn.Conv2d"])
def test_each_kind_builds_from_its_default_form(client, kind):
    html = client.get("/build/form", params={"kind": kind}, headers=HX).text
    data = []
    for tag, attrs in Elements(html).tags:
        if tag == "input" and attrs.get("name"):
            if attrs.get("type") == "checkbox" and "checked" not in attrs:
                continue
            data.append((attrs["name"], attrs.get("value", "")))
    for match in re.finditer(r'<select id="[^"]*" name="([^"]+)".*?</select>', html, re.S):
        selected = re.search(r'<option value="([^"]*)" selected', match.group(0))
        if selected:
            data.append((match.group(1), selected.group(1)))
    for match in re.finditer(
        r'<textarea id="[^"]*" name="([^"]+)"[^>]*>(.*?)</textarea>', html, re.S
    ):
        import html as html_lib

        data.append((match.group(1), html_lib.unescape(match.group(2))))
    data.append(("kind", kind))
    response = post_form(client, "/build", data)
    assert response.status_code == 200
    assert "HX-Push-Url" in response.headers, re.findall(
        r"field-error[^>]*>(.*?)</p>", response.text
    )


def test_a_busy_server_keeps_the_form(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "data", max_concurrent_computations=1, compute_wait_seconds=0.1
    )
    app = create_app(settings)
    with TestClient(app) as client:
        open_first_page(client)
        with app.state.services.compute.slot():  # every compute slot taken
            response = client.post(
                "/build", data={"kind": "library.Linear", "in_dim": "4"}, headers=HX
            )
        assert response.status_code == 200
        assert '<form id="build-form"' in response.text and "busy" in response.text
        assert re.search(r'id="f-in_dim" name="in_dim" value="4"', response.text)
