"""The modules API through FastAPI's test client, numbers checked against values computed here."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.catalog import CATALOG
from app.main import create_app
from app.settings import Settings


def create(client: TestClient, kind: str, params: dict | None = None, status: int = 201) -> dict:
    response = client.post("/api/modules", json={"kind": kind, "params": params or {}})
    assert response.status_code == status, response.text
    return response.json()


def nodes_by_path(node: dict) -> dict[str, dict]:
    found = {node["path"]: node}
    for child in node["children"] or []:
        found.update(nodes_by_path(child))
    return found


def error_locs(response) -> list[list]:
    return [error["loc"] for error in response.json()["detail"]]


def test_catalog_lists_every_kind_with_its_schema(client):
    response = client.get("/api/catalog")
    assert response.status_code == 200
    items = response.json()
    assert [item["kind"] for item in items] == list(CATALOG)
    assert items[0]["kind"] == "library.Linear"
    for item in items:
        assert set(item) >= {"kind", "title", "schema"}
        assert item["schema"] == CATALOG[item["kind"]].model_json_schema()
        assert item["schema"]["type"] == "object"
    linear = items[0]["schema"]["properties"]
    assert {"in_dim", "out_dim", "seed"} <= set(linear)


def test_seed_example_numbers(client):
    module = create(client, "library.Linear", {"in_dim": 2, "out_dim": 3, "seed": 0})
    assert set(module) >= {"id", "kind", "params", "tree", "code", "notices"}
    assert module["params"] == {"in_dim": 2, "out_dim": 3, "seed": 0}
    wkey, bkey = jax.random.split(jax.random.PRNGKey(0))
    weight = np.asarray(jax.random.normal(wkey, (2, 3)))
    bias = np.asarray(jax.random.normal(bkey, (3,)))

    leaf = client.get(f"/api/modules/{module['id']}/leaf", params={"path": ".weight"}).json()
    assert leaf["path"] == ".weight" and leaf["shape"] == [2, 3] and leaf["dtype"] == "float32"
    np.testing.assert_array_equal(np.asarray(leaf["values"], dtype=np.float32), weight)
    assert leaf["truncated"] is False
    assert leaf["stats"]["mean"] == pytest.approx(float(weight.astype(np.float64).mean()))
    assert leaf["stats"]["std"] == pytest.approx(float(weight.astype(np.float64).std()))
    assert leaf["stats"]["min"] == pytest.approx(float(weight.min()))
    assert leaf["stats"]["max"] == pytest.approx(float(weight.max()))

    leaf = client.get(f"/api/modules/{module['id']}/leaf", params={"path": ".bias"}).json()
    np.testing.assert_array_equal(np.asarray(leaf["values"], dtype=np.float32), bias)

    tree = module["tree"]
    assert (tree["path"], tree["type"], tree["params"]) == ("", "Linear", 9)
    assert [(c["path"], c["summary"], c["role"]) for c in tree["children"]] == [
        (".weight", "f32[2,3]", "param"),
        (".bias", "f32[3]", "param"),
    ]
    namespace: dict = {}
    exec(module["code"], namespace)  # noqa: S102 - the catalog's own script
    assert (namespace["model"].weight == weight).all()

    again = client.get(f"/api/modules/{module['id']}").json()
    assert again["tree"] == tree and again["code"] == module["code"]
    assert again["kind"] == "library.Linear"


@pytest.mark.parametrize("kind", list(CATALOG))
def test_every_kind_builds_with_its_defaults(client, kind):
    module = create(client, kind)
    assert module["kind"] == kind
    tree = module["tree"]
    model = CATALOG[kind]().build()
    arrays = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))
    assert tree["size"] == sum(int(a.size) for a in arrays)
    assert tree["type"] == type(model).__name__
    assert "model =" in module["code"]
    # every array leaf answers its values, equal to the model built here
    flat = jax.tree_util.tree_flatten_with_path(eqx.filter(model, eqx.is_array))[0]
    keys, array = flat[0] if flat else ((), None)
    if array is not None:
        path = jax.tree_util.keystr(keys)
        leaf = client.get(f"/api/modules/{module['id']}/leaf", params={"path": path}).json()
        if not leaf["truncated"]:
            np.testing.assert_allclose(np.asarray(leaf["values"]), np.asarray(array))


def test_unknown_kind_is_422_at_body_kind(client):
    response = client.post("/api/modules", json={"kind": "eqx.nn.Nope", "params": {}})
    assert response.status_code == 422
    assert ["body", "kind"] in error_locs(response)


def test_bad_params_name_the_field(client):
    response = client.post("/api/modules", json={"kind": "library.Linear", "params": {"in_dim": 0}})
    assert response.status_code == 422
    assert error_locs(response) == [["body", "params", "in_dim"]]
    assert "in_dim" in response.json()["message"]

    response = client.post(
        "/api/modules", json={"kind": "library.Linear", "params": {"in_dims": 2}}
    )
    assert response.status_code == 422
    assert ["body", "params", "in_dims"] in error_locs(response)

    stack = {
        "rows": [
            {"kind": "eqx.nn.Linear", "params": {"in_features": 2, "out_features": 4}},
            {"kind": "eqx.nn.Linear", "params": {"in_features": 5, "out_features": 1}},
        ]
    }
    response = client.post("/api/modules", json={"kind": "stack", "params": stack})
    assert response.status_code == 422
    assert ["body", "params", "rows", 1, "params", "in_features"] in error_locs(response)

    custom = {
        "name": "Linear",
        "fields": [{"name": "weight", "role": "param", "shape": [2, 3], "init": "normal"}],
        "call": "x @ weight + bias",
    }
    response = client.post("/api/modules", json={"kind": "custom", "params": custom})
    assert response.status_code == 422
    assert any(loc[:3] == ["body", "params", "call"] for loc in error_locs(response))
    assert "bias" in response.json()["message"]


def test_custom_module_is_the_seed_linear(client):
    custom = {
        "name": "Linear",
        "seed": 0,
        "fields": [
            {"name": "weight", "role": "param", "shape": [2, 3], "init": "normal"},
            {"name": "bias", "role": "param", "shape": [3], "init": "normal"},
        ],
        "call": "x @ weight + bias",
    }
    module = create(client, "custom", custom)
    seed = create(client, "library.Linear")
    for path in (".weight", ".bias"):
        ours = client.get(f"/api/modules/{module['id']}/leaf", params={"path": path}).json()
        theirs = client.get(f"/api/modules/{seed['id']}/leaf", params={"path": path}).json()
        assert ours["values"] == theirs["values"]
    assert module["tree"]["type"] == "Linear"


def test_custom_roles_in_the_tree(client):
    params = {
        "name": "Scaled",
        "fields": [
            {"name": "weight", "role": "param", "shape": [2, 2], "init": "normal"},
            {"name": "shift", "role": "buffer", "shape": [2], "init": "zeros"},
            {"name": "factor", "role": "static", "value": 3},
        ],
        "call": "x @ weight * factor + shift",
    }
    nodes = nodes_by_path(create(client, "custom", params)["tree"])
    assert nodes[".weight"]["role"] == "param"
    assert nodes[".shift"]["role"] == "buffer"
    assert nodes[".factor"]["role"] == "static" and nodes[".factor"]["summary"] == "3"
    assert nodes[""]["params"] == 4


def test_tree_endpoint_loads_lazily_and_pages(client):
    module = create(
        client, "eqx.nn.MLP", {"in_size": 2, "out_size": 2, "width_size": 2, "depth": 250}
    )
    layers = nodes_by_path(module["tree"])[".layers"]
    assert layers["child_count"] == 251 and len(layers["children"]) == 100

    url = f"/api/modules/{module['id']}/tree"
    page = client.get(url, params={"path": ".layers", "offset": 200}).json()
    assert page["path"] == ".layers" and page["children_offset"] == 200
    assert [c["path"] for c in page["children"]][:1] == [".layers[200]"]
    assert page["children"][-1]["path"] == ".layers[250]"

    node = client.get(url, params={"path": ".layers[3]"}).json()
    assert [c["path"] for c in node["children"]][:2] == [".layers[3].weight", ".layers[3].bias"]

    root = client.get(url).json()
    assert root["path"] == "" and root["type"] == "MLP"

    response = client.get(url, params={"path": ".layers[999]"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "path"]
    assert client.get(url, params={"path": "x" * 5000}).status_code == 422


def test_leaf_errors(client):
    module = create(client, "library.Linear")
    url = f"/api/modules/{module['id']}/leaf"
    for path in ["", ".nope", ".weight.T", "__import__('os')", ".weight[0]"]:
        response = client.get(url, params={"path": path})
        assert response.status_code == 422, path
        assert response.json()["detail"][0]["loc"] == ["query", "path"]
    assert client.get(url).status_code == 422  # path is required
    mlp = create(client, "eqx.nn.MLP")
    response = client.get(f"/api/modules/{mlp['id']}/leaf", params={"path": ".in_size"})
    assert response.status_code == 422 and "static field" in response.json()["message"]


def test_unknown_module_is_404(client):
    for url in [
        "/api/modules/nope",
        "/api/modules/nope/leaf?path=.weight",
        "/api/modules/nope/tree",
    ]:
        response = client.get(url)
        assert response.status_code == 404, url
    assert client.delete("/api/modules/nope").status_code == 404
    assert client.get("/api/modules/" + "a" * 200).status_code == 404


def test_workspaces_are_isolated(app):
    with TestClient(app) as alice, TestClient(app) as bob:
        module = create(alice, "library.Linear")
        assert alice.cookies.get("playground_workspace") != bob.cookies.get("playground_workspace")
        for url in [
            f"/api/modules/{module['id']}",
            f"/api/modules/{module['id']}/leaf?path=.weight",
            f"/api/modules/{module['id']}/tree",
        ]:
            assert bob.get(url).status_code == 404
            assert alice.get(url).status_code == 200
        assert bob.delete(f"/api/modules/{module['id']}").status_code == 404
        assert [m["id"] for m in bob.get("/api/modules").json()] == []
        assert [m["id"] for m in alice.get("/api/modules").json()] == [module["id"]]


def test_list_and_delete(client):
    first = create(client, "library.Linear")
    second = create(client, "eqx.nn.Linear")
    listed = client.get("/api/modules").json()
    assert [m["id"] for m in listed] == [second["id"], first["id"]]
    assert set(listed[0]) == {"id", "kind", "title", "created_at", "trained"}
    assert listed[0]["kind"] == "eqx.nn.Linear" and listed[0]["trained"] is False
    assert client.delete(f"/api/modules/{first['id']}").status_code == 204
    assert client.get(f"/api/modules/{first['id']}").status_code == 404
    assert [m["id"] for m in client.get("/api/modules").json()] == [second["id"]]


def test_limits(tmp_path):
    settings = Settings(
        data_dir=tmp_path / "data",
        max_module_params=1000,
        max_modules_per_workspace=2,
        leaf_values_limit=10,
    )
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/api/modules",
            json={"kind": "eqx.nn.Linear", "params": {"in_features": 100, "out_features": 100}},
        )
        assert response.status_code == 422
        message = response.json()["message"]
        assert "10,100" in message and "1,000" in message and "max_module_params" in message

        first = create(client, "library.Linear", {"in_dim": 4, "out_dim": 5})
        leaf = client.get(f"/api/modules/{first['id']}/leaf", params={"path": ".weight"}).json()
        assert leaf["truncated"] is True and leaf["limit"] == 10
        assert leaf["kept_shape"] == [3, 3]
        assert np.asarray(leaf["values"]).shape == (3, 3)
        assert leaf["stats"]["max"] >= np.max(leaf["values"])

        create(client, "library.Linear")
        third = create(client, "library.Linear", {"seed": 3})
        assert len(third["notices"]) == 1 and first["id"] in third["notices"][0]
        assert client.get(f"/api/modules/{first['id']}").status_code == 404


def test_openapi_documents_the_models(client):
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert {"ModuleCreate", "ModuleOut", "TreeNode", "LeafOut", "CatalogItem"} <= set(components)
    assert components["ModuleCreate"]["properties"]["kind"]["enum"] == list(CATALOG)
    post = schema["paths"]["/api/modules"]["post"]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == set(CATALOG)


def test_a_large_module_is_built_by_a_worker_not_the_web_process(app, client):
    """A deep MLP (a heavy trace estimate) is built in the worker pool, which answers its tree;
    the web process builds it only when its page or tree is asked for, and the trees agree."""
    services = app.state.services
    tasks = services.workers.status()["tasks"]
    spec = {"kind": "eqx.nn.MLP", "params": {"in_size": 2, "out_size": 1, "width_size": 3,
                                             "depth": 200, "seed": 4}}  # fmt: skip
    made = client.post("/api/modules", json=spec)
    assert made.status_code == 201, made.text
    assert services.workers.status()["tasks"] == tasks + 1
    record = services.store.find(next(iter(client.cookies.values())), made.json()["id"])
    assert services.store.built(record) is None
    tree = made.json()["tree"]
    assert tree == client.get(f"/api/modules/{record.id}").json()["tree"]
    assert services.store.built(record) is not None
    assert tree["type"] == "MLP" and tree["params"] == (2 * 3 + 3) + 199 * (3 * 3 + 3) + (3 + 1)
    small = client.post("/api/modules", json={"kind": "library.Linear", "params": {}})
    assert small.status_code == 201 and services.workers.status()["tasks"] == tasks + 1
