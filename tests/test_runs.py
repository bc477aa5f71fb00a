"""The runs API: values against NumPy, the compile cache, and errors that teach."""

from __future__ import annotations

import math
import threading

import jax
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import build, leaf, run

from app.main import create_app
from app.settings import Settings

SEED = {"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3}}
X = [[0.5, -1.0], [2.0, 0.25], [-1.5, 1.0], [0.0, 3.0], [1.0, -2.0]]


def values_input(values) -> dict:
    return {"init": "values", "values": values}


@pytest.fixture
def seed(client) -> str:
    return build(client, in_dim=2, out_dim=3)


def custom_params(k: float = 2.0) -> dict:
    return {
        "name": "Scaled",
        "seed": 0,
        "fields": [
            {"name": "weight", "role": "param", "shape": [2, 3], "init": "normal"},
            {"name": "bias", "role": "param", "shape": [3], "init": "normal"},
            {"name": "scale", "role": "buffer", "shape": [3], "init": "ones"},
            {"name": "k", "role": "static", "value": k},
        ],
        "call": "k * (x @ weight + bias) * scale",
    }


# Values ------------------------------------------------------------------------------------


def test_seed_gradient_is_a_third_everywhere(client, seed):
    answer = run(client, seed, transforms=["grad"], input={"shape": [5, 2], "init": "ones"})
    expected_keys = {
        "output", "values", "truncated", "timings", "compiled", "compiles", "jaxpr", "hlo",
        "cost", "device", "code", "plot", "warnings",
    }  # fmt: skip
    assert expected_keys <= set(answer)
    assert set(answer["values"]) == {".weight", ".bias"}
    np.testing.assert_allclose(answer["values"][".weight"], np.full((2, 3), 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(answer["values"][".bias"], np.full(3, 1 / 3), rtol=1e-6)
    node = answer["output"]
    assert node["type"] == "Linear"
    assert [child["path"] for child in node["children"]] == [".weight", ".bias"]
    assert answer["compiled"] is True and answer["compiles"] == 1
    assert answer["truncated"] is False and answer["warnings"] == []
    assert answer["timings"]["compile_ms"] > 0 and answer["timings"]["run_ms"] > 0
    assert "dot_general" in answer["jaxpr"] and "stablehlo" in answer["hlo"]
    assert answer["cost"]["flops"] > 0
    assert answer["device"]
    assert answer["function"] == "jax.grad(loss)(model, x)"
    bars = answer["plot"]["data"][0]
    assert bars["type"] == "bar"
    assert sorted(bars["y"] if bars.get("orientation") != "h" else bars["x"]) == pytest.approx(
        sorted([math.sqrt(6) / 3, math.sqrt(3) / 3])
    )


def test_values_are_written_as_float32_text(client, seed):
    """float32 values travel as their shortest text, 0.33333334, not 0.3333333432674408."""
    body = {"transforms": ["grad"], "input": {"shape": [5, 2]}}
    text = client.post(f"/api/modules/{seed}/run", json=body).text
    assert '".bias":[0.33333334,0.33333334,0.33333334]' in text
    assert "0.3333333432674408" not in text
    loss = client.post(f"/api/modules/{seed}/run", json={"transforms": []}).json()
    assert isinstance(loss["values"], float)
    forward = {"function": "forward", "transforms": [], "input": {"shape": [5, 2]}}
    output = client.post(f"/api/modules/{seed}/run", json=forward).json()["values"]
    assert np.asarray(output).shape == (5, 3)


def test_defaults_give_the_seed_loss_and_example_input(client, seed):
    answer = run(client, seed)
    weight, bias = leaf(client, seed, ".weight"), leaf(client, seed, ".bias")
    expected = np.mean(np.ones((5, 2)) @ weight + bias)
    assert answer["values"] == pytest.approx(expected, rel=1e-5)
    assert answer["input"] == {"shape": [5, 2], "dtype": "float32", "init": "ones"}
    assert answer["plot"]["data"][0]["type"] == "indicator"


def test_input_gradient(client, seed):
    weight = leaf(client, seed, ".weight")
    answer = run(client, seed, transforms=["grad"], wrt="input", input=values_input(X))
    expected = np.tile(weight.sum(axis=1) / 15, (5, 1))
    np.testing.assert_allclose(answer["values"], expected, rtol=1e-5)
    assert answer["plot"]["data"][0]["type"] == "heatmap"


def test_per_example_gradients(client, seed):
    x = np.asarray(X)
    answer = run(client, seed, transforms=["grad", "vmap"], input=values_input(X))
    expected_weight = np.stack([np.outer(row, np.ones(3)) / 3 for row in x])
    np.testing.assert_allclose(answer["values"][".weight"], expected_weight, rtol=1e-5)
    np.testing.assert_allclose(answer["values"][".bias"], np.full((5, 3), 1 / 3), rtol=1e-5)
    assert answer["output"]["children"][0]["shape"] == [5, 2, 3]
    assert answer["plot"]["data"][0]["type"] == "heatmap"  # leaf × example norms
    jitted = run(client, seed, transforms=["grad", "vmap", "jit"], input=values_input(X))
    assert jitted["values"] == answer["values"]
    assert jitted["function"] == "jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(model, x)"


def test_vmap_over_another_axis(client):
    module = build(client, "eqx.nn.Linear", in_features=3, out_features=2)
    weight, bias = leaf(client, module, ".weight"), leaf(client, module, ".bias")
    x = np.arange(12, dtype=np.float64).reshape(3, 4) / 10
    answer = run(
        client, module, function="forward", transforms=["vmap"], vmap_axis=1,
        input=values_input(x.tolist()),
    )  # fmt: skip
    np.testing.assert_allclose(answer["values"], (weight @ x + bias[:, None]).T, rtol=1e-5)
    assert answer["plot"]["data"][0]["type"] == "heatmap"


@pytest.mark.parametrize("jacobian", ["jacfwd", "jacrev"])
def test_jacobians(client, seed, jacobian):
    weight = leaf(client, seed, ".weight")
    answer = run(
        client, seed, function="forward", transforms=[jacobian], wrt="input",
        input=values_input([0.5, -1.0]),
    )  # fmt: skip
    np.testing.assert_allclose(answer["values"], weight.T, rtol=1e-6)
    by_params = run(
        client, seed, function="forward", transforms=[jacobian], input=values_input([0.5, -1.0])
    )
    expected = np.zeros((3, 2, 3))
    for j in range(3):
        expected[j, :, j] = [0.5, -1.0]
    np.testing.assert_allclose(by_params["values"][".weight"], expected, atol=1e-7)
    np.testing.assert_allclose(by_params["values"][".bias"], np.eye(3), atol=1e-7)


def test_hessian_with_jacfwd_of_grad(client, seed):
    x = np.asarray(X)
    answer = run(
        client, seed, loss="sum(out ** 2)", transforms=["grad", "jacfwd"], wrt="input",
        input=values_input(X),
    )  # fmt: skip
    weight = leaf(client, seed, ".weight")
    hessian = np.zeros((5, 2, 5, 2))
    for n in range(5):
        hessian[n, :, n, :] = 2 * weight @ weight.T
    np.testing.assert_allclose(answer["values"], hessian, rtol=1e-5, atol=1e-6)
    assert x.shape == (5, 2)


def test_value_and_grad(client, seed):
    weight, bias = leaf(client, seed, ".weight"), leaf(client, seed, ".bias")
    answer = run(client, seed, transforms=["value_and_grad"], input=values_input(X))
    assert answer["values"]["[0]"] == pytest.approx(np.mean(np.asarray(X) @ weight + bias))
    expected = np.tile(np.asarray(X).sum(axis=0)[:, None] / 15, (1, 3))
    np.testing.assert_allclose(answer["values"]["[1].weight"], expected, rtol=1e-6)
    assert [c["path"] for c in answer["output"]["children"]] == ["[0]", "[1]"]


def test_batched_loss_of_a_single_example_layer(client):
    module = build(client, "eqx.nn.Linear", in_features=2, out_features=3)
    weight, bias = leaf(client, module, ".weight"), leaf(client, module, ".bias")
    x = np.asarray(X)
    answer = run(
        client, module, loss="mean((out - 1) ** 2)", batched=True, transforms=["grad", "jit"],
        input=values_input(X),
    )  # fmt: skip
    residual = x @ weight.T + bias - 1
    np.testing.assert_allclose(
        answer["values"][".weight"], 2 * residual.T @ x / residual.size, rtol=1e-5
    )
    np.testing.assert_allclose(
        answer["values"][".bias"], 2 * residual.sum(axis=0) / residual.size, rtol=1e-5
    )
    assert "jax.vmap(model)(x)" in answer["code"]


def test_buffers_and_static_fields_are_not_differentiated(client):
    module = build(client, "custom", **custom_params())
    answer = run(client, module, transforms=["grad"], input={"shape": [5, 2]})
    assert set(answer["values"]) == {".weight", ".bias"}
    np.testing.assert_allclose(answer["values"][".weight"], np.full((2, 3), 2 / 3), rtol=1e-6)
    assert "library.trainable_filter(model)" in answer["code"]
    assert answer["function"] == "jax.grad(loss)(params, x)"


def test_inputs(client, seed):
    linspace = run(
        client, seed, function="forward", input={"shape": [3, 2], "init": "linspace",
                                                  "start": 0, "stop": 1},
    )  # fmt: skip
    weight, bias = leaf(client, seed, ".weight"), leaf(client, seed, ".bias")
    x = np.linspace(0, 1, 6).reshape(3, 2)
    np.testing.assert_allclose(linspace["values"], x @ weight + bias, rtol=1e-5)
    pasted = run(client, seed, function="forward", input=values_input("1 2; 3 4"))
    np.testing.assert_allclose(pasted["values"], [[1, 2], [3, 4]] @ weight + bias, rtol=1e-5)
    flat = run(
        client, seed, function="forward",
        input={"shape": [2, 2], "init": "values", "values": [1, 2, 3, 4]},
    )  # fmt: skip
    assert flat["values"] == pasted["values"]
    a = run(client, seed, function="forward", input={"init": "normal", "seed": 3})
    b = run(client, seed, function="forward", input={"init": "normal", "seed": 3})
    c = run(client, seed, function="forward", input={"init": "uniform", "seed": 3})
    assert a["values"] == b["values"] != c["values"]


def test_embedding_takes_int_indices(client):
    module = build(client, "eqx.nn.Embedding", num_embeddings=10, embedding_size=4)
    table = leaf(client, module, ".weight")
    answer = run(client, module, function="forward", input=values_input(7))
    np.testing.assert_allclose(answer["values"], table[7], rtol=1e-6)
    ones = run(client, module, function="forward", input={"shape": [], "init": "ones"})
    np.testing.assert_allclose(ones["values"], table[1], rtol=1e-6)
    assert answer["input"]["dtype"] == "int32"
    grads = run(client, module, transforms=["grad", "vmap"], input=values_input([1, 7, 7]))
    assert np.asarray(grads["values"][".weight"]).shape == (3, 10, 4)


def test_nan_and_inf_come_back_with_a_warning(client, seed):
    answer = run(client, seed, function="loss", loss="log(out)", input=values_input(X))
    assert answer["warnings"] and "NaN" in answer["warnings"][0]
    flat = [v for row in answer["values"] for v in row]
    assert "NaN" in flat
    grads = run(client, seed, loss="mean(sqrt(out))", transforms=["grad"], input=values_input(X))
    assert grads["warnings"] and "NaN and infinity left out" in grads["plot"]["layout"]["title"][
        "text"]  # fmt: skip
    bars = grads["plot"]["data"][0]
    heights = bars["x"] if bars.get("orientation") == "h" else bars["y"]
    assert all(height is not None for height in heights)
    inf = run(client, seed, loss="1 / (out - out)", input=values_input(X))
    assert inf["warnings"] and "infinite" in inf["warnings"][0]
    assert {v for row in inf["values"] for v in row} <= {"Infinity", "-Infinity", "NaN"}


def test_sweep(client):
    module = build(client, "eqx.nn.Linear", in_features=2, out_features=3)
    weight, bias = leaf(client, module, ".weight"), leaf(client, module, ".bias")
    response = client.post(
        f"/api/modules/{module}/sweep",
        json={"coordinate": 1, "start": -2, "stop": 2, "points": 9, "loss": "sum(out ** 2)"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    t = np.linspace(-2, 2, 9)
    outs = np.stack([weight @ np.array([0.0, v]) + bias for v in t])
    np.testing.assert_allclose(answer["x"], t, rtol=1e-6)
    np.testing.assert_allclose(answer["f"], (outs**2).sum(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(answer["df"], 2 * outs @ weight[:, 1], rtol=1e-5, atol=1e-5)
    assert [trace["name"] for trace in answer["plot"]["data"]] == ["f", "df/dx[1]"]
    assert answer["compiled"] is True
    again = client.post(
        f"/api/modules/{module}/sweep",
        json={"coordinate": 0, "start": -2, "stop": 2, "points": 9, "loss": "sum(out ** 2)"},
    ).json()
    assert again["compiled"] is False  # the coordinate is an argument


def test_sweep_of_the_seed_moves_one_example(client, seed):
    answer = client.post(f"/api/modules/{seed}/sweep", json={"points": 5}).json()
    weight = leaf(client, seed, ".weight")
    np.testing.assert_allclose(answer["df"], np.full(5, weight[0].sum() / 3), rtol=1e-5)


# The compile cache --------------------------------------------------------------------------


def test_cache_repeat_other_seed_static_field_and_input_shape(client):
    body = {"transforms": ["grad", "jit"], "input": {"shape": [4]}}
    mlp = {"in_size": 4, "out_size": 2, "width_size": 8, "depth": 2}
    first = build(client, "eqx.nn.MLP", **mlp)
    answer = run(client, first, **body)
    assert answer["compiled"] is True and answer["compiles"] == 1
    repeat = run(client, first, **body)
    assert repeat["compiled"] is False and repeat["compiles"] == 1
    assert repeat["timings"]["trace_ms"] == 0 and repeat["timings"]["compile_ms"] == 0
    assert repeat["cache_key_changes"] == []
    other_seed = build(client, "eqx.nn.MLP", seed=7, **mlp)
    reused = run(client, other_seed, **body)
    assert reused["compiled"] is False and reused["compiles"] == 1
    assert reused["values"] != answer["values"]
    tanh = build(client, "eqx.nn.MLP", activation="tanh", **mlp)
    changed = run(client, tanh, **body)
    assert changed["compiled"] is True and changed["compiles"] == 2
    assert "module structure (static fields): .activation relu -> tanh" in changed[
        "cache_key_changes"]  # fmt: skip
    assert run(client, tanh, **body)["compiled"] is False
    wider = run(client, tanh, transforms=["grad", "jit"], input={"shape": [5, 4]}, status=422)
    assert "does not fit the module" in wider["message"]
    batched = run(client, tanh, transforms=["grad", "vmap", "jit"], input={"shape": [6, 4]})
    assert batched["compiled"] is True and batched["compiles"] == 3
    assert "input shape (4,) -> (6, 4)" in batched["cache_key_changes"]
    assert "transforms grad, jit -> grad, vmap, jit" in batched["cache_key_changes"]
    bigger = run(client, tanh, transforms=["grad", "vmap", "jit"], input={"shape": [7, 4]})
    assert bigger["compiled"] is True and bigger["compiles"] == 4
    assert bigger["cache_key_changes"] == ["input shape (6, 4) -> (7, 4)"]


def test_a_static_field_of_a_custom_module_recompiles_once(client):
    body = {"transforms": ["grad"], "input": {"shape": [5, 2]}}
    two = build(client, "custom", **custom_params(2.0))
    assert run(client, two, **body)["compiled"] is True
    three = build(client, "custom", **custom_params(3.0))
    answer = run(client, three, **body)
    assert answer["compiled"] is True and answer["compiles"] == 2
    assert answer["cache_key_changes"] == ["module structure (static fields): .k 2.0 -> 3.0"]
    np.testing.assert_allclose(answer["values"][".weight"], np.full((2, 3), 1.0), rtol=1e-6)
    again = run(client, build(client, "custom", **custom_params(3.0)), **body)
    assert again["compiled"] is False and again["compiles"] == 2


def test_the_cache_is_bounded(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data", compile_cache_size=2))
    with TestClient(app) as client:
        seed = build(client)
        for shape in ([1, 2], [2, 2], [3, 2]):
            assert run(client, seed, input={"shape": shape})["compiled"] is True
        assert run(client, seed, input={"shape": [3, 2]})["compiled"] is False
        assert run(client, seed, input={"shape": [1, 2]})["compiled"] is True  # evicted
        assert len(app.state.services.runs.local_engine().cache) == 2


def test_two_identical_requests_at_once_compile_once(client, seed):
    from app.runs.spec import RunRequest

    services = client.app.state.services
    engine = services.runs
    record = services.store.get(_workspace(client, seed), seed)
    spec, model = record.spec(), services.store.load(record)
    request = RunRequest(transforms=["grad", "vmap", "jit"], input={"shape": [64, 2]})
    outcomes, barrier = [], threading.Barrier(4)

    def go():
        barrier.wait()
        outcomes.append(engine.run(spec, model, request))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.compiled for o in outcomes) == [False, False, False, True]
    assert engine.compiles == 1


def _workspace(client: TestClient, module_id: str) -> str:
    from sqlalchemy import select

    from app.database import modules

    with client.app.state.services.engine.connect() as connection:
        query = select(modules.c.workspace).where(modules.c.id == module_id)
        return connection.execute(query).scalar_one()


# Errors that teach ------------------------------------------------------------------------


def test_grad_of_a_non_scalar_names_the_shape(client, seed):
    answer = run(client, seed, function="forward", transforms=["grad"], status=422)
    assert answer["message"] == (
        "grad needs a function that returns a scalar; this one returns f32[5,3]. Use the "
        "loss, or reduce the output with mean()"
    )
    loss = run(client, seed, loss="out * 2", transforms=["value_and_grad"], status=422)
    assert "value_and_grad needs a function that returns a scalar" in loss["message"]
    assert "f32[5,3]" in loss["message"] and "mean(out)" in loss["message"]
    twice = run(client, seed, transforms=["grad", "grad"], status=422)
    assert "grad of the loss" in twice["message"] and "jacfwd" in twice["message"]
    outside = run(client, seed, transforms=["vmap", "grad"], status=422)
    assert "f32[5]" in outside["message"] and "per-example" in outside["message"]


def test_vmap_over_a_missing_axis(client, seed):
    answer = run(client, seed, transforms=["vmap"], vmap_axis=2, status=422)
    assert "vmap cannot map over axis 2" in answer["message"]
    assert "f32[5,2]" in answer["message"]
    thrice = run(client, seed, transforms=["vmap", "vmap", "vmap"], status=422)
    assert "3 times" in thrice["message"]
    single = build(client, "eqx.nn.Linear", in_features=3, out_features=2)
    sliced = run(client, single, transforms=["grad", "vmap"], input={"shape": [3]}, status=422)
    assert "The input f32[] does not fit the module (eqx.nn.Linear)" in sliced["message"]
    assert "the input (3,) becomes f32[] inside it" in sliced["message"]
    assert "shape (5, 3)" in sliced["message"]


def test_shapes_that_do_not_fit_the_module(client, seed):
    answer = run(client, seed, input={"shape": [5, 4]}, status=422)
    assert "f32[5,4] does not fit the module (library.Linear)" in answer["message"]
    assert "(4,) and (2,)" in answer["message"]
    custom = build(client, "custom", **custom_params())
    answer = run(client, custom, input={"shape": [5, 3]}, status=422)
    assert "does not fit the module" in answer["message"] and "x @ weight" in answer["message"]


def test_loss_expressions_that_do_not_parse_or_name_unknowns(client, seed):
    bad = run(client, seed, loss="mean(out", status=422)
    assert "cannot be used" in bad["message"] and "syntax error" in bad["message"]
    unknown = run(client, seed, loss="mean(foo)", status=422)
    assert "'foo'" in unknown["message"]
    escape = run(client, seed, loss="out.__class__", status=422)
    assert "cannot be used" in escape["message"]
    shape = run(client, seed, loss="mean(out @ x)", status=422)
    assert "cannot be computed on out f32[5,3] and x f32[5,2]" in shape["message"]


def test_request_validation(client, seed):
    unknown = run(client, seed, transforms=["grad", "pmap"], status=422)
    assert "transforms" in unknown["message"]
    long = run(client, seed, transforms=["jit"] * 7, status=422)
    assert "transforms" in long["message"]
    assert run(client, seed, input={"shape": [-1, 2]}, status=422)
    assert run(client, seed, input={"init": "values", "values": [[1, 2], [3]]}, status=422)[
        "message"
    ].startswith("The input values: the values are not rectangular")
    deep = run(
        client, seed, input={"init": "values", "values": "[" * 5000 + "]" * 5000}, status=422
    )
    assert "nested" in deep["message"]
    mismatch = run(client, seed, input={"shape": [3, 2], "init": "values", "values": X}, status=422)
    assert "(5, 2)" in mismatch["message"] and "(3, 2)" in mismatch["message"]
    assert client.post("/api/modules/nope/run", json={}).status_code == 404
    assert run(client, seed, input={"init": "uniform", "start": 1, "stop": 0}, status=422)


def test_grad_with_respect_to_int_indices(client):
    module = build(client, "eqx.nn.Embedding")
    answer = run(client, module, transforms=["grad"], wrt="input", status=422)
    assert "int32" in answer["message"] and "params" in answer["message"]


def test_limits(tmp_path):
    settings = Settings(
        data_dir=tmp_path / "data", max_input_elements=100, max_run_flops=1e4,
        max_array_elements=5000,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        seed = build(client)
        big = run(client, seed, input={"shape": [60, 2]}, status=422)
        assert "120 elements" in big["message"] and "max_input_elements" in big["message"]
        jacobian = run(
            client, seed, function="forward", transforms=["jacfwd"], wrt="input",
            input={"shape": [40, 2]}, status=422,
        )  # fmt: skip
        assert "Jacobian of 9,600 numbers" in jacobian["message"]
        mlp = build(client, "eqx.nn.MLP", in_size=16, out_size=16, width_size=64, depth=3)
        flops = run(client, mlp, transforms=["grad"], input={"shape": [16]}, status=422)
        assert "max_run_flops" in flops["message"] and "1e+04" in flops["message"]


def test_include_sends_only_the_named_parts(client, seed):
    answer = run(client, seed, transforms=["grad"])
    response = client.post(
        f"/api/modules/{seed}/run", params={"include": "values"}, json={"transforms": ["grad"]}
    )
    lean = response.json()
    assert lean["values"] == answer["values"]
    assert lean["jaxpr"] is None and lean["hlo"] is None and lean["plot"] is None
    assert lean["output"] is None and lean["code"] is None
    bad = client.post(f"/api/modules/{seed}/run", params={"include": "secrets"}, json={})
    assert bad.status_code == 422
    bare = client.post(f"/api/modules/{seed}/run", params={"include": "none"}, json={}).json()
    assert bare["values"] is None and bare["compiled"] is True and bare["timings"]["run_ms"] > 0
    for name, limit in (("include", 200), ("run_id", 64)):
        long = client.post(f"/api/modules/{seed}/run", params={name: "a" * (limit + 1)}, json={})
        assert long.status_code == 422
        assert long.json()["detail"][0]["loc"] == ["query", name]
        assert f"at most {limit}" in long.json()["message"]
    documented = client.get("/openapi.json").json()["paths"]["/api/modules/{module_id}/run"]
    parameters = {p["name"]: p for p in documented["post"]["parameters"]}
    assert parameters["include"]["schema"]["maxLength"] == 200
    assert parameters["run_id"]["in"] == "query"


def test_an_answer_without_values_says_the_same_warnings(client, seed):
    """Without values and figure, the worker sends the result's digest, not its arrays: the
    answer's warnings are those of the full answer, and so is everything else it sends."""
    for loss in ("log(out)", "1 / (out - out)", "mean(out)"):
        body = {"function": "loss", "loss": loss, "input": values_input(X)}
        full = run(client, seed, **body)
        for include in ("warnings", "code,jaxpr,warnings", "output", "none"):
            lean = client.post(
                f"/api/modules/{seed}/run", params={"include": include}, json=body
            ).json()
            # without "warnings" the result is never read, so nothing is said of NaN either
            assert lean["warnings"] == (full["warnings"] if "warnings" in include else None)
            assert lean["values"] is None and lean["plot"] is None
            assert lean["input"] == full["input"] and lean["function"] == full["function"]
            assert lean["cost"] == full["cost"]
            assert (lean["output"] is None) == ("output" not in include)
            assert (lean["jaxpr"] == full["jaxpr"]) == ("jaxpr" in include)
    assert any("NaN" in w for w in run(client, seed, function="loss", loss="log(out)",
                                        input=values_input(X))["warnings"])  # fmt: skip
    empty = build(client, "eqx.nn.LayerNorm", shape=[4], use_weight=False, use_bias=False)
    no_params = client.post(
        f"/api/modules/{empty}/run", params={"include": "warnings"}, json={"transforms": ["grad"]}
    ).json()
    assert no_params["warnings"] == run(client, empty, transforms=["grad"])["warnings"]


# The page's fragments -----------------------------------------------------------------------


def test_run_panel_fragments(client, seed):
    headers = {"HX-Request": "true"}
    preset = client.post(f"/m/{seed}/run", data={"action": "preset-grad"}, headers=headers)
    assert preset.status_code == 200
    html = preset.text
    assert html.count(">0.333<") == 9
    assert 'class="plot" data-figure=' in html and "compiled now" in html
    assert "jax.grad(loss)(model, x)" in html
    again = client.post(f"/m/{seed}/run", data={"action": "preset-grad"}, headers=headers)
    assert "reused: you compiled it before" in again.text
    form = client.post(
        f"/m/{seed}/run/form",
        data={"action": "up-1", "transforms": ["grad", "vmap"]},
        headers=headers,
    )
    assert form.status_code == 200
    assert form.text.index('value="vmap" selected') < form.text.index('value="grad" selected')
    error = client.post(
        f"/m/{seed}/run",
        data={"function": "forward", "transforms": "grad", "shape": "5,2"},
        headers=headers,
    )
    assert error.status_code == 200  # the panel shows the message
    assert 'role="alert"' in error.text and "returns f32[5,3]" in error.text
    sweep = client.post(f"/m/{seed}/sweep", data={"points": "11"}, headers=headers)
    assert sweep.status_code == 200 and 'class="plot"' in sweep.text


def test_the_run_panel_says_why_a_run_has_no_result(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "refused", max_run_flops=10))
    headers = {"HX-Request": "true"}
    with TestClient(app) as client:
        seed = build(client, in_dim=2, out_dim=3)
        # the form's hidden run_id travels with every run (static/runs.js fills it)
        refused = client.post(
            f"/m/{seed}/run", data={"action": "preset-grad", "run_id": "a1-B2"}, headers=headers
        )
        assert refused.status_code == 200  # shown in the result area, not as a failure
        html = refused.text
        result = html[html.index('id="run-result"') :]
        assert '<div class="run-error" role="alert" data-error-kind="refused">' in result
        assert "This run cannot be done." in result and "max_run_flops" in result
        assert 'name="run_id"' in html and 'id="run-progress"' in html and "Cancel" in html
        sweep = client.post(f"/m/{seed}/sweep", data={"points": "11"}, headers=headers)
        assert "This sweep cannot be done." in sweep.text and "max_run_flops" in sweep.text


@pytest.mark.parametrize(
    ("status", "field", "kind", "title"),
    [
        (409, None, "cancelled", "You cancelled this run."),
        (503, None, "busy", "The server is busy."),
        (429, None, "too-many", "Too many at once."),
        (404, None, "gone", "This module is no longer here."),
        (422, "max_run_seconds", "limit", "This run was stopped at a limit."),
        (422, "input.shape", "refused", "This run cannot be done."),
    ],
)
def test_a_refusal_has_a_title_in_plain_words(status, field, kind, title):
    from app.errors import PlaygroundError
    from app.runs.panel import refusal

    said = refusal(PlaygroundError(status, "Because.", field=field), "run")
    assert said["error_kind"] == kind and said["error_title"] == title
    assert said["error"] == "Because."
    assert (said["error_hint"] is not None) == (kind in ("cancelled", "busy", "too-many", "gone"))


def test_the_module_is_an_argument_of_the_compiled_function(client, seed):
    answer = run(client, seed, transforms=["grad"], input={"shape": [5, 2]})
    # the weight, the bias and x are the jaxpr's inputs, not constants closed over
    assert answer["jaxpr"].startswith("{ lambda ; a:f32[2,3] b:f32[3] c:f32[5,2]. let")


def test_the_structure_memo_lets_modules_go():
    import gc

    import equinox as eqx
    import jax

    from app.runs.structure import StructureMemo

    memo = StructureMemo()
    model = eqx.nn.Linear(2, 3, key=jax.random.PRNGKey(0))
    structure, arrays, simple = memo.get(model)
    assert simple and len(arrays) == 2 and memo.get(model)[0] is structure
    del model, arrays
    gc.collect()
    assert len(memo) == 0


def test_cut_values_say_so_with_and_without_nan(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "cut", leaf_values_limit=4))
    with TestClient(app) as client:
        seed = build(client, in_dim=2, out_dim=3)
        body = {"function": "forward", "transforms": [], "input": values_input([[1, 2]] * 3)}
        finite = run(client, seed, **body)
        assert finite["truncated"] is True
        assert np.asarray(finite["values"]).size <= 4
        nan = run(client, seed, loss="log(-1 - out * out)", transforms=[], input=body["input"])
        assert nan["truncated"] is True and nan["warnings"]
        assert {v for row in nan["values"] for v in row} == {"NaN"}


def test_the_worker_sends_only_what_the_answer_shows(tmp_path):
    """A gradient of 131,584 numbers comes back from the worker whole for an answer with
    values, and as a few words (its digest) for ``include=warnings`` or ``none``."""
    import pickle

    from app.catalog import parse_spec
    from app.runs.digest import ResultDigest
    from app.runs.spec import RunRequest
    from app.runs.worker import ModuleSource, RunJob, run_task

    settings = Settings(data_dir=tmp_path)
    params = {"in_size": 256, "out_size": 256, "width_size": 256, "depth": 1, "seed": 3}
    spec = parse_spec("eqx.nn.MLP", params)
    request = RunRequest(transforms=["grad"], loss="mean(out ** 2)", input={"shape": [256]})

    def packed(shows):
        job = RunJob(
            token="sizes",
            settings=settings,
            spec=spec,
            source=ModuleSource(("ModuleRecord", "sizes", 0), "eqx.nn.MLP", params),
            request=request,
            eager=False,
            with_input=False,
            shows=shows,
        )
        return run_task(job)

    whole = packed(None)  # the weights' gradients beside the pickle, the biases' inside
    assert sorted(a.nbytes for a in whole.arrays) == [256 * 256 * 4, 256 * 256 * 4]
    assert len(whole.data) > 2 * 256 * 4
    lean = packed(frozenset({"warnings"}))
    assert lean.arrays == () and len(pickle.dumps(lean)) < 8_000
    from app import transfer
    from app.runs.worker import outcome_of

    outcome = outcome_of(lean)
    assert outcome.result == ResultDigest(single=False, arrays=4, warnings=())
    unread = outcome_of(packed(frozenset()))  # no warnings asked: the values are not read
    assert unread.result == ResultDigest(single=False, arrays=4, warnings=None)
    # with values shown, the leaves by path, not the module-shaped tree: the same numbers
    leaves = outcome_of(packed(frozenset({"values"}))).result
    tree = outcome_of(whole).result
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    assert leaves.single is False
    assert [path for path, _ in leaves.leaves] == [jax.tree_util.keystr(p) for p, _ in flat]
    for (_, array), (_, expected) in zip(leaves.leaves, flat, strict=True):
        np.testing.assert_array_equal(array, expected)
    assert outcome.output is None and outcome.entry.jaxpr == "" and outcome.entry.hlo == ""
    # a warm run of the same entry sends the same shared parts: the web process unpacks them once
    from app.cache import BoundedCache
    from app.runs.worker import SplitOutcome

    known = BoundedCache(8)
    first, second = packed(frozenset({"output"})), packed(frozenset({"output"}))
    split = [transfer.unpack(p) for p in (first, second)]
    assert all(isinstance(s, SplitOutcome) for s in split)
    assert split[0].shared.token == split[1].shared.token
    assert split[1].outcome.entry is None and split[1].outcome.key is None
    warm = [outcome_of(p, known) for p in (first, second)]
    assert warm[0].entry is warm[1].entry and warm[0].key is warm[1].key
    assert warm[0].output is not None and warm[0].output == warm[1].output
    assert warm[0].entry.hlo == "" and warm[0].key is not None
    # another set of parts shown: another template, with what it shows
    shown = outcome_of(packed(frozenset({"hlo"})), known)
    assert shown.entry.hlo and shown.output is None and len(known) == 2


def test_a_light_run_whose_program_is_not_light_is_run_again_in_the_heavy_lane(tmp_path):
    """Three traced operations may compute a lot (x's outer product, sorted): after compiling,
    a run of the light lane over LIGHT_BYTES is refused there and sent to the heavy lane, whose
    answer is the same as JAX's."""
    import app.runs.limits as limits

    settings = Settings(data_dir=tmp_path, worker_memory_mb=5)  # light: at most 1 MB
    app = create_app(settings)
    client = TestClient(app, base_url="http://testserver").__enter__()
    module = client.post("/api/modules", json={"kind": "custom", "params": {
        "name": "Identity", "seed": 0, "fields": [], "call": "x"}})  # fmt: skip
    assert module.status_code == 201, module.text
    x = np.linspace(-1, 1, 1000).tolist()
    body = {"function": "loss", "loss": "sum(sort(outer(x, x)))", "transforms": [],
            "input": {"init": "values", "values": x}}  # fmt: skip
    pool = app.state.services.workers
    tasks = pool.status()["tasks"]
    answer = run(client, module.json()["id"], **body)
    assert pool.status()["tasks"] == tasks + 2  # the light lane refused it, the heavy ran it
    assert answer["values"] == pytest.approx(float(np.sum(np.outer(x, x))), rel=1e-4, abs=1e-3)
    small = run(client, module.json()["id"], **{**body, "input": {"shape": [10]}})
    assert pool.status()["tasks"] == tasks + 3 and small["values"] == 100.0
    with limits.light_lane(True), pytest.raises(limits.NotLight):
        limits.check_light({"flops": 5e9}, None, Settings(data_dir=tmp_path))  # a fifth: 4e9
    with limits.light_lane(True):
        limits.check_light({"flops": 3e9}, {"temporaries": 300 * 10**6}, Settings())
    limits.check_light({"flops": 5e9}, {"temporaries": 10**9}, settings)  # not the light lane
    client.__exit__(None, None, None)


def test_an_outcome_is_packed_plainly_its_large_arrays_apart():
    """``transfer.pack``: plain pickling, arrays of 64 KiB or more as out-of-band buffers
    (what crosses the pipe once), the same values back; by the transfer's own rules for what
    plain pickling cannot do (a function JAX holds, such as ``jax.nn.relu``)."""
    import pickle

    import jax

    from app import transfer

    big = np.arange(65_536, dtype=np.float32).reshape(256, 256)
    value = {"big": big, "small": np.ones(3), "text": "x"}
    packed = transfer.pack(value)
    assert packed.plain and [a.nbytes for a in packed.arrays] == [big.nbytes]
    assert len(packed.data) < 1_000
    back = transfer.unpack(pickle.loads(pickle.dumps(packed)))  # as the pool sends it
    np.testing.assert_array_equal(back["big"], big)
    assert back["big"].dtype == np.float32 and back["big"].shape == (256, 256)
    np.testing.assert_array_equal(back["small"], np.ones(3))
    held = transfer.pack({"activation": jax.nn.relu, "big": big})
    assert not held.plain
    back = transfer.unpack(pickle.loads(pickle.dumps(held)))
    assert back["activation"] is jax.nn.relu
    np.testing.assert_array_equal(back["big"], big)


def test_a_run_goes_to_worker_processes_without_the_settings(tmp_path):
    """Worker processes are set up with the app's settings (``prepare_worker``), so a run's job
    leaves them out (they were most of its pickle); inline runs carry them."""
    import pickle
    from types import SimpleNamespace

    from app.catalog import parse_spec
    from app.runs.client import RunClient
    from app.runs.spec import RunRequest

    settings = Settings(data_dir=tmp_path)
    spec = parse_spec("library.Linear", {"in_dim": 2, "out_dim": 3})
    request = RunRequest(transforms=["grad"], loss="mean(out)")
    jobs = {}
    for workers in (2, 0):
        runs = RunClient(settings, None, SimpleNamespace(workers=workers))
        jobs[workers] = runs._prepare(spec, spec.build(), request, None, False, False, None)[0]
    assert jobs[2].settings is None and jobs[0].settings is settings
    assert len(pickle.dumps(jobs[2])) < len(pickle.dumps(jobs[0])) - 1000
