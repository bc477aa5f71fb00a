"""Pytree operations (flatten, partition, tree_map, edit, undo, compare, find) against JAX and
Equinox called directly, on several kinds of module, through the JSON API."""

from __future__ import annotations

import json
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import library
from app.catalog import parse_spec

KINDS = {
    "seed Linear": ("library.Linear", {}),
    "MLP": ("eqx.nn.MLP", {"in_size": 2, "out_size": 2, "width_size": 4, "depth": 2}),
    "custom with a static field": (
        "custom",
        {
            "name": "Scaled",
            "fields": [
                {"name": "weight", "role": "param", "shape": [2, 2], "init": "normal"},
                {"name": "shift", "role": "buffer", "shape": [2], "init": "normal"},
                {"name": "factor", "role": "static", "value": 3},
            ],
            "call": "x @ weight * factor + shift",
        },
    ),
    "library.network": (
        "library.network",
        {"input_size": 6, "hidden_size": 8, "output_size": 3},
    ),
    "stack": ("stack", {}),
}


def create(client, kind: str, params: dict) -> dict:
    response = client.post("/api/modules", json={"kind": kind, "params": params})
    assert response.status_code == 201, response.text
    return response.json()


def built(kind: str, params: dict):
    """The module as the catalog builds it (the store's model is the same pure function)."""
    return parse_spec(kind, params).build()


def leaves_of(client, module_id: str) -> dict:
    """Every leaf's values through the API, by path (the model as the server holds it)."""
    flat = client.get(f"/api/modules/{module_id}/flatten", params={"limit": 5000}).json()
    out = {}
    for leaf in flat["leaves"]:
        if leaf["shape"] is not None:
            got = client.get(f"/api/modules/{module_id}/leaf", params={"path": leaf["path"]})
            out[leaf["path"]] = np.asarray(got.json()["values"], dtype=np.float64)
    return out


@pytest.mark.parametrize("name", list(KINDS))
def test_flatten_matches_jax(client, name):
    kind, params = KINDS[name]
    module = create(client, kind, params)
    model = built(kind, params)
    answer = client.get(f"/api/modules/{module['id']}/flatten").json()
    flat, treedef = jax.tree_util.tree_flatten_with_path(model)
    assert answer["treedef"] == str(treedef)
    assert answer["num_leaves"] == len(flat) == len(answer["leaves"])
    trainable = jax.tree_util.tree_leaves(library.trainable_filter(model))
    for index, ((keys, leaf), entry) in enumerate(zip(flat, answer["leaves"], strict=True)):
        assert entry["index"] == index
        assert entry["path"] == jax.tree_util.keystr(keys)
        assert entry["kept"] == {
            "is_array": eqx.is_array(leaf),
            "is_inexact_array": eqx.is_inexact_array(leaf),
            "trainable": bool(trainable[index]),
        }
        if eqx.is_array(leaf):
            assert entry["shape"] == list(leaf.shape) and entry["dtype"] == str(leaf.dtype)
            assert entry["value"] is None
        else:
            assert entry["shape"] is None and entry["dtype"] is None
            assert entry["value"] is not None
    # the unflatten round trip, with JAX itself: the leaves in this order rebuild the module
    leaves = [leaf for _, leaf in flat]
    again = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(model), leaves)
    assert bool(eqx.tree_equal(again, model))


def test_flatten_pages_and_the_total(client):
    kind, params = KINDS["MLP"]
    module = create(client, kind, params)
    everything = client.get(f"/api/modules/{module['id']}/flatten").json()["leaves"]
    page = client.get(
        f"/api/modules/{module['id']}/flatten", params={"offset": 2, "limit": 3}
    ).json()
    assert page["num_leaves"] == len(everything)
    assert page["leaves"] == everything[2:5]
    bad = client.get(f"/api/modules/{module['id']}/flatten", params={"limit": 0})
    assert bad.status_code == 422 and "limit" in bad.text


def _paths_and_types(node: dict, out: dict | None = None) -> dict:
    out = {} if out is None else out
    out[node["path"]] = node
    for child in node.get("children") or []:
        _paths_and_types(child, out)
    return out


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("filter_name", ["is_array", "is_inexact_array", "trainable"])
def test_partition_matches_eqx(client, name, filter_name):
    kind, params = KINDS[name]
    module = create(client, kind, params)
    model = built(kind, params)
    spec = {
        "is_array": eqx.is_array,
        "is_inexact_array": eqx.is_inexact_array,
        "trainable": library.trainable_filter(model),
    }[filter_name]
    kept, rest = eqx.partition(model, spec)
    answer = client.post(
        f"/api/modules/{module['id']}/partition", json={"filter": filter_name}
    ).json()
    for side, tree in (("kept", kept), ("rest", rest)):
        nodes = _paths_and_types(answer[side])
        flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
        for keys, leaf in flat:
            node = nodes[jax.tree_util.keystr(keys)]
            if leaf is None:
                assert node["type"] == "None", (side, node)
            elif eqx.is_array(leaf):
                assert node["shape"] == list(leaf.shape)
    # every hole on one side is a leaf on the other, and combine gives the module back
    assert bool(eqx.tree_equal(eqx.combine(kept, rest), model))


def test_partition_refuses_an_unknown_filter(client):
    module = create(client, "library.Linear", {})
    response = client.post(f"/api/modules/{module['id']}/partition", json={"filter": "params"})
    assert response.status_code == 422
    assert "filter" in response.json()["message"]


@pytest.mark.parametrize("name", list(KINDS))
def test_tree_map_makes_a_new_module_and_keeps_the_original(client, name):
    kind, params = KINDS[name]
    module = create(client, kind, params)
    model = built(kind, params)
    before = leaves_of(client, module["id"])
    response = client.post(
        f"/api/modules/{module['id']}/tree-map",
        json={"expression": "leaf / sqrt(sum(leaf ** 2))", "filter": "trainable"},
    )
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["id"] != module["id"] and new["kind"] == kind
    # JAX directly: jax.tree.map over the trainable part, combined with the rest
    params_part = eqx.filter(model, library.trainable_filter(model))
    expected = eqx.combine(jax.tree.map(lambda x: x / jnp.sqrt(jnp.sum(x**2)), params_part), model)
    got = leaves_of(client, new["id"])
    for keys, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]:
        if eqx.is_array(leaf):
            np.testing.assert_allclose(got[jax.tree_util.keystr(keys)], leaf, rtol=1e-6)
    assert leaves_of(client, module["id"]).keys() == before.keys()
    for path, values in leaves_of(client, module["id"]).items():
        np.testing.assert_array_equal(values, before[path])  # the original is unchanged


@pytest.mark.parametrize(
    ("expression", "filter_name", "reference"),
    [
        ("leaf * 2", "all", lambda x: x * 2),
        ("zeros_like(leaf)", "is_array", jnp.zeros_like),
        ("sign(leaf)", "is_inexact_array", jnp.sign),
    ],
)
def test_tree_map_expressions_on_the_mlp(client, expression, filter_name, reference):
    kind, params = KINDS["MLP"]
    module = create(client, kind, params)
    model = built(kind, params)
    new = client.post(
        f"/api/modules/{module['id']}/tree-map",
        json={"expression": expression, "filter": filter_name},
    ).json()
    expected = jax.tree.map(lambda x: reference(x) if eqx.is_array(x) else x, model)
    got = leaves_of(client, new["id"])
    for keys, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]:
        if eqx.is_array(leaf):
            np.testing.assert_allclose(got[jax.tree_util.keystr(keys)], leaf, rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"expression": "__import__('os')", "filter": "all"}, "expression"),
        ({"expression": "sum(leaf)", "filter": "all"}, "keeps its shape"),
        ({"expression": "leaf * 2", "filter": "everything"}, "filter"),
        ({"expression": "x * 2", "filter": "all"}, "x"),
    ],
)
def test_tree_map_refusals_name_the_problem(client, body, words):
    module = create(client, "library.Linear", {})
    count = len(client.get("/api/modules").json())
    response = client.post(f"/api/modules/{module['id']}/tree-map", json=body)
    assert response.status_code == 422, response.text
    assert words in response.json()["message"]
    assert len(client.get("/api/modules").json()) == count  # nothing was made


def test_edit_matches_tree_at_and_undo_goes_back(client):
    module = create(client, "library.Linear", {})
    model = built("library.Linear", {})
    module_id = module["id"]
    answer = client.post(
        f"/api/modules/{module_id}/edit", json={"path": ".weight", "index": [1, 2], "value": 3.5}
    )
    assert answer.status_code == 200, answer.text
    first = answer.json()
    assert first["revision"] == 1 and first["undo_available"] == 1
    expected = eqx.tree_at(lambda m: m.weight, model, model.weight.at[1, 2].set(3.5))
    np.testing.assert_array_equal(leaves_of(client, module_id)[".weight"], expected.weight)
    second = client.post(
        f"/api/modules/{module_id}/edit", json={"path": ".bias", "expression": "leaf * -1"}
    ).json()
    assert second["revision"] == 2
    expected = eqx.tree_at(lambda m: m.bias, expected, -expected.bias)
    np.testing.assert_allclose(leaves_of(client, module_id)[".bias"], expected.bias)
    pasted = client.post(
        f"/api/modules/{module_id}/edit", json={"path": ".bias", "value": "1 2 3"}
    ).json()
    np.testing.assert_array_equal(leaves_of(client, module_id)[".bias"], [1, 2, 3])
    assert pasted["undo_available"] == 3
    # Undo, three times: back through every revision to the module as built
    client.post(f"/api/modules/{module_id}/undo")
    np.testing.assert_allclose(leaves_of(client, module_id)[".bias"], expected.bias)
    client.post(f"/api/modules/{module_id}/undo")
    np.testing.assert_allclose(leaves_of(client, module_id)[".bias"], model.bias)
    last = client.post(f"/api/modules/{module_id}/undo").json()
    assert last["undo_available"] == 0 and last["trained"] is False
    got = leaves_of(client, module_id)
    np.testing.assert_array_equal(got[".weight"], model.weight)
    np.testing.assert_array_equal(got[".bias"], model.bias)
    nothing = client.post(f"/api/modules/{module_id}/undo")
    assert nothing.status_code == 409 and "no earlier revision" in nothing.json()["message"]


@pytest.mark.parametrize("name", ["MLP", "stack", "library.network", "custom with a static field"])
def test_edit_on_other_kinds_matches_tree_at(client, name):
    kind, params = KINDS[name]
    module = create(client, kind, params)
    model = built(kind, params)
    flat = client.get(f"/api/modules/{module['id']}/flatten").json()["leaves"]
    target = next(leaf for leaf in flat if leaf["kept"]["trainable"])
    path = target["path"]
    index = [0] * len(target["shape"])
    answer = client.post(
        f"/api/modules/{module['id']}/edit",
        json={"path": path, "index": index, "expression": "leaf + 1"},
    )
    assert answer.status_code == 200, answer.text
    old = np.asarray(jax.tree_util.tree_leaves(model)[target["index"]])
    new = old.copy()
    new[tuple(index)] += 1
    np.testing.assert_allclose(leaves_of(client, module["id"])[path], new, rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"path": ".nope", "value": 1}, "path", "no child"),
        ({"path": "", "value": 1}, "path", "not an array"),
        ({"path": ".weight", "index": [5, 0], "value": 1}, "index", "out of range"),
        ({"path": ".weight", "index": [0], "value": 1}, "index", "one number per axis"),
        ({"path": ".weight", "value": [1, 2]}, "value", "shape"),
        ({"path": ".weight", "expression": "sum(leaf)"}, "expression", "keeps its shape"),
        ({"path": ".weight", "value": 1, "expression": "leaf"}, "value", "not both"),
        ({"path": ".weight", "expression": "open('x')"}, "expression", "cannot be used"),
    ],
)
def test_edit_refusals_name_the_problem(client, body, field, words):
    module = create(client, "library.Linear", {})
    response = client.post(f"/api/modules/{module['id']}/edit", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()
    assert words in detail["message"]
    assert field in json.dumps(detail["detail"])
    assert client.get(f"/api/modules/{module['id']}").json()["trained"] is False


def test_edit_refuses_static_fields_and_dtype_changes(client):
    kind, params = KINDS["custom with a static field"]
    module = create(client, kind, params)
    static = client.post(f"/api/modules/{module['id']}/edit", json={"path": ".factor", "value": 2})
    assert static.status_code == 422 and "static field" in static.json()["message"]
    embedding = create(client, "eqx.nn.Embedding", {})
    ints = client.post(
        f"/api/modules/{embedding['id']}/edit", json={"path": ".weight", "value": 0.5}
    )
    assert ints.status_code == 200  # float weights take a float
    lstm = create(client, "eqx.nn.MLP", {"in_size": 2, "out_size": 1, "width_size": 2})
    wrong = client.post(
        f"/api/modules/{lstm['id']}/edit",
        json={"path": ".layers[0].weight", "expression": "leaf > 0"},
    )
    assert wrong.status_code == 422


def test_compare_numbers_against_numpy(client):
    module = create(client, "eqx.nn.MLP", KINDS["MLP"][1])
    mapped = client.post(
        f"/api/modules/{module['id']}/tree-map",
        json={"expression": "leaf * 2 + 0.5", "filter": "all"},
    ).json()
    answer = client.get("/api/compare", params={"a": module["id"], "b": mapped["id"]}).json()
    assert answer["same_structure"] is True and answer["jit_reuses"] is True
    assert answer["structural"] == []
    a, b = leaves_of(client, module["id"]), leaves_of(client, mapped["id"])
    assert [leaf["path"] for leaf in answer["leaves"]] == list(a)
    for leaf in answer["leaves"]:
        diff = a[leaf["path"]] - b[leaf["path"]]
        assert leaf["max_abs"] == pytest.approx(np.abs(diff).max(), rel=1e-6)
        assert leaf["norm"] == pytest.approx(np.linalg.norm(diff), rel=1e-6)
        assert leaf["relative"] == pytest.approx(
            np.linalg.norm(diff) / np.linalg.norm(a[leaf["path"]]), rel=1e-6
        )


def test_compare_structural_diff_and_jit(client):
    small = create(client, "eqx.nn.MLP", {"in_size": 2, "out_size": 1, "width_size": 4})
    wide = create(client, "eqx.nn.MLP", {"in_size": 2, "out_size": 1, "width_size": 5})
    deeper = create(
        client, "eqx.nn.MLP", {"in_size": 2, "out_size": 1, "width_size": 4, "depth": 3}
    )
    answer = client.get("/api/compare", params={"a": small["id"], "b": wide["id"]}).json()
    assert answer["same_structure"] is False and answer["jit_reuses"] is False
    changes = {(c["path"], c["change"]) for c in answer["structural"]}
    assert (".layers[0].weight", "shape") in changes
    assert any(c["change"] == "static" for c in answer["structural"])  # width_size
    answer = client.get("/api/compare", params={"a": small["id"], "b": deeper["id"]}).json()
    changes = {(c["path"], c["change"]) for c in answer["structural"]}
    assert (".layers[3].weight", "added") in changes
    assert answer["leaves"] == []
    # the same kind with another seed: same structure, so one compiled function serves both
    other_seed = create(
        client, "eqx.nn.MLP", {"in_size": 2, "out_size": 1, "width_size": 4, "seed": 1}
    )
    answer = client.get("/api/compare", params={"a": small["id"], "b": other_seed["id"]}).json()
    assert answer["same_structure"] is True and answer["jit_reuses"] is True


def test_compare_with_a_run_result(client):
    module = create(client, "library.Linear", {})
    model = built("library.Linear", {})
    run = 'run:{"transforms": ["grad"], "function": "loss", "loss": "mean(out)"}'
    answer = client.get("/api/compare", params={"a": module["id"], "b": run})
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    x = parse_spec("library.Linear", {}).example_input()  # the run's default input
    params, rest = eqx.partition(model, library.trainable_filter(model))
    grads = jax.grad(lambda p: jnp.mean(eqx.combine(p, rest)(x)))(params)
    assert answer["same_structure"] is True
    assert [leaf["path"] for leaf in answer["leaves"]] == [".weight", ".bias"]
    for leaf, a, g in zip(
        answer["leaves"], (model.weight, model.bias), (grads.weight, grads.bias), strict=True
    ):
        diff = np.asarray(a, dtype=np.float64) - np.asarray(g, dtype=np.float64)
        assert leaf["max_abs"] == pytest.approx(np.abs(diff).max(), rel=1e-5)
        assert leaf["norm"] == pytest.approx(np.linalg.norm(diff), rel=1e-5)
    bad = client.get("/api/compare", params={"a": module["id"], "b": "run:{oops"})
    assert bad.status_code == 422 and "run request" in bad.json()["message"]
    missing = client.get("/api/compare", params={"a": module["id"], "b": "nope"})
    assert missing.status_code == 404


def test_operations_stay_in_the_callers_workspace(app, client):
    from fastapi.testclient import TestClient

    module = create(client, "library.Linear", {})
    with TestClient(app, base_url="http://testserver") as stranger:
        for method, url, body in [
            ("get", f"/api/modules/{module['id']}/flatten", None),
            ("post", f"/api/modules/{module['id']}/partition", {"filter": "is_array"}),
            ("post", f"/api/modules/{module['id']}/tree-map", {"expression": "leaf"}),
            ("post", f"/api/modules/{module['id']}/edit", {"path": ".bias", "value": 1}),
            ("post", f"/api/modules/{module['id']}/undo", None),
            ("get", f"/api/modules/{module['id']}/find?path=.bias", None),
        ]:
            response = getattr(stranger, method)(url, **({"json": body} if body else {}))
            assert response.status_code == 404, (url, response.text)
        response = stranger.get("/api/compare", params={"a": module["id"], "b": module["id"]})
        assert response.status_code == 404


def test_find_on_the_big_mlp(client):
    module = create(
        client, "eqx.nn.MLP", {"in_size": 8, "out_size": 8, "width_size": 8, "depth": 5000}
    )
    chain = client.get(
        f"/api/modules/{module['id']}/find", params={"path": ".layers[2500].bias"}
    ).json()
    assert [node["path"] for node in chain] == [
        "",
        ".layers",
        ".layers[2500]",
        ".layers[2500].bias",
    ]
    assert chain[-1]["shape"] == [8] and chain[-1]["role"] == "param"
    assert chain[1]["child_count"] == 5001
    bad = client.get(f"/api/modules/{module['id']}/find", params={"path": ".layers[9999]"})
    assert bad.status_code == 422 and "[9999]" in bad.json()["message"]


# Big trees at a glance ----------------------------------------------------------------------

BIG_MLP = {"in_size": 8, "out_size": 8, "width_size": 8, "depth": 5000}


def test_identical_runs_fold_and_others_do_not():
    from app.trees import describe_tree

    model = eqx.nn.MLP(2, 1, 4, depth=6, key=jax.random.PRNGKey(0))  # 2→4, 5 × 4→4, 4→1
    tree = describe_tree(model, fold=True, stats=True)
    layers = next(c for c in tree["children"] if c["path"] == ".layers")["children"]
    assert [entry.get("fold", False) for entry in layers] == [False, True, False]
    assert layers[0]["path"] == ".layers[0]" and layers[2]["path"] == ".layers[6]"
    fold = layers[1]
    assert (fold["start"], fold["stop"], fold["count"]) == (1, 6, 5)
    assert fold["label"] == "Linear(4→4)"
    # every array node carries its numbers without a click: mean and std as NumPy has them
    weight = next(c for c in layers[0]["children"] if c["path"] == ".layers[0].weight")
    values = np.asarray(model.layers[0].weight, dtype=np.float64)
    assert weight["inline"]["mean"] == pytest.approx(values.mean())
    assert weight["inline"]["std"] == pytest.approx(values.std())
    assert 1 <= len(weight["inline"]["strip"]) <= 16
    # the API's trees are unchanged: no folds, no inline numbers
    plain = describe_tree(model)
    assert all("fold" not in c for c in plain["children"][0]["children"])
    assert "inline" not in plain["children"][0]["children"][0]["children"][0]


def test_the_big_mlp_folds_into_one_line_and_search_lands_on_a_deep_path(client):
    from app.templating import node_id

    module = create(client, "eqx.nn.MLP", BIG_MLP)
    page = client.get(f"/m/{module['id']}").text
    assert "5,001 ×</strong> Linear(8→8)" in page
    assert "Show 100 more" not in page
    hx = {"hx-request": "true"}
    html = client.get(
        f"/m/{module['id']}/tree-view", params={"focus": ".layers[2500].bias"}, headers=hx
    ).text
    assert "Show 100 more" not in html
    assert "2,500 ×</strong> Linear(8→8)" in html  # [0]–[2499] and [2501]–[5000], folded
    assert "[0]–[2499]" in html and "[2501]–[5000]" in html
    target_id = node_id(".layers[2500].bias")
    target = re.search(rf'"tree-node tree-focus" id="{target_id}">\s*<details[^>]*open', html)
    assert target, "the target is rendered open and marked"
    assert html.count("data-focus-on-load") == 1
    for path in ("", ".layers", ".layers[2500]"):  # every node on the way is open
        assert re.search(rf'id="{node_id(path)}">\s*<details[^>]*\sopen', html), path
    # the inline numbers of the target are its own
    bias = np.asarray(built("eqx.nn.MLP", BIG_MLP).layers[2500].bias, dtype=np.float64)
    mean = re.search(r"μ ([−\-\d.e]+) ±", html[html.index(node_id(".layers[2500].bias")) :])
    assert float(mean.group(1).replace("−", "-")) == pytest.approx(bias.mean(), rel=1e-2)
    # a fold opens on request, a page at a time, within its own range
    opened = client.get(
        f"/m/{module['id']}/tree",
        params={"path": ".layers", "offset": 2501, "stop": 5001},
        headers=hx,
    ).text
    assert node_id(".layers[2501]") in opened and node_id(".layers[2600]") in opened
    assert node_id(".layers[2601]") not in opened and "Show 100 more" in opened
    missing = client.get(
        f"/m/{module['id']}/tree-view", params={"focus": ".layers[9000]"}, headers=hx
    )
    assert missing.status_code == 200 and "No such path" in missing.text


def test_undo_keeps_at_most_the_limit(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", max_undo_revisions=2))
    with TestClient(app, base_url="http://testserver") as client:
        module = create(client, "library.Linear", {})
        url = f"/api/modules/{module['id']}"
        for value in (1, 2, 3, 4):
            answer = client.post(f"{url}/edit", json={"path": ".bias", "value": value}).json()
        assert answer["undo_available"] == 2  # the two newest earlier revisions
        client.post(f"{url}/undo")
        client.post(f"{url}/undo")
        bias = client.get(f"{url}/leaf", params={"path": ".bias"}).json()["values"]
        assert bias == [2, 2, 2]
        assert client.post(f"{url}/undo").status_code == 409
