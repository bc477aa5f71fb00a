"""jit made visible: what a workspace is told about compiling, and the per-call time op by op.

Two workspaces share the server's compiled functions; each is told its own story: the first
run in a workspace that did not compile says so even when the server reused a compile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.runs import eager
from app.settings import Settings

PER_EXAMPLE = {"transforms": ["grad", "vmap"], "input": {"shape": [5, 2], "init": "normal"}}
JITTED = {**PER_EXAMPLE, "transforms": ["grad", "vmap", "jit"]}
LINEAR = {"kind": "eqx.nn.Linear", "params": {"in_features": 2, "out_features": 3}}


def build(client: TestClient) -> str:
    response = client.post("/api/modules", json=LINEAR)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def run(client: TestClient, module: str, body: dict) -> dict:
    response = client.post(f"/api/modules/{module}/run", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def two(tmp_path):
    """Two workspaces (two cookie jars) on one server."""
    app = create_app(Settings(data_dir=tmp_path))
    with TestClient(app) as first, TestClient(app) as second:
        yield first, second


def test_compile_status_is_scoped_per_workspace(two):
    first, second = two
    a, b = build(first), build(second)

    one = run(first, a, PER_EXAMPLE)
    assert one["compile_scope"] == "now" and one["compiled"] is True
    compiles = one["compiles"]
    again = run(first, a, PER_EXAMPLE)
    assert again["compile_scope"] == "workspace" and again["compiled"] is False

    # the second workspace's first run: nothing compiled for it, but compiled on this server
    theirs = run(second, b, PER_EXAMPLE)
    assert theirs["compile_scope"] == "server" and theirs["compiled"] is False
    assert theirs["compiles"] == compiles
    assert run(second, b, PER_EXAMPLE)["compile_scope"] == "server"

    # the same gradients whoever compiled them (normal(seed 0) inputs, Linear: d/dW of the mean)
    assert np.allclose(
        np.asarray(theirs["values"][".weight"]), np.asarray(one["values"][".weight"])
    )

    # jit is another function: compiled now, by the second workspace this time
    jitted = run(second, b, JITTED)
    assert jitted["compile_scope"] == "now" and jitted["compiles"] == compiles + 1
    assert run(first, a, JITTED)["compile_scope"] == "server"


def test_reset_makes_the_next_run_compile_again(two):
    first, second = two
    a, b = build(first), build(second)
    assert run(first, a, PER_EXAMPLE)["compile_scope"] == "now"
    before = run(second, b, PER_EXAMPLE)
    assert before["compile_scope"] == "server"

    reset = second.post("/api/runs/compiled/reset")
    assert reset.status_code == 200 and reset.json()["scope"].startswith("workspace:")
    fresh = run(second, b, PER_EXAMPLE)
    assert fresh["compile_scope"] == "now" and fresh["compiled"] is True
    assert fresh["compiles"] == before["compiles"] + 1
    assert fresh["timings"]["compile_ms"] > 0
    assert run(second, b, PER_EXAMPLE)["compile_scope"] == "workspace"
    # the first workspace compiled it before: still its own compile as far as it knows
    assert run(first, a, PER_EXAMPLE)["compile_scope"] == "workspace"


def test_eager_and_jit_per_call_times_are_both_present(client):
    module = build(client)
    plain = run(client, module, PER_EXAMPLE)
    assert plain["eager_ms"] is not None and plain["eager_ms"] > 0
    assert plain["timings"]["run_ms"] > 0 and plain["eager_note"] is None
    jitted = run(client, module, JITTED)
    assert jitted["eager_ms"] is not None and jitted["eager_ms"] > 0
    assert jitted["timings"]["run_ms"] > 0
    # the page shows the two side by side
    page = client.post(
        f"/m/{module}/run", data={"action": "preset-per-example"}, headers={"HX-Request": "true"}
    ).text
    assert "run-eager-ms" in page and "run-jit-ms" in page and "op by op" in page


def test_the_op_by_op_pipeline_computes_what_the_compiled_one_does():
    """The eager function is the same pipeline without jit: its values equal JAX's."""
    import equinox as eqx

    from app.runs.pipeline import PipelineBuilder, make_top
    from app.runs.structure import StructureMemo

    model = eqx.nn.Linear(2, 3, key=jax.random.PRNGKey(0))
    known = StructureMemo().get(model)
    builder = PipelineBuilder(
        apply=lambda m, x: m(x),
        function="forward",
        expression=None,
        wrt="params",
        transforms=eager.without_jit(("jacfwd", "jit")),
        vmap_axis=0,
        batched=False,
        max_jacobian=10_000,
        kind="eqx.nn.Linear",
    )
    top = make_top(known.structure, builder.build)
    x = jnp.asarray([0.5, -1.0])
    eager_out = top(known.arrays, x)
    direct = jax.jacfwd(lambda m: m(x))(model)
    for got, want in zip(jax.tree.leaves(eager_out), jax.tree.leaves(direct), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)


def test_the_op_by_op_run_is_bounded(client, monkeypatch):
    monkeypatch.setattr(eager, "EAGER_MAX_LEAVES", 1)
    module = build(client)
    answer = run(client, module, PER_EXAMPLE)
    assert answer["eager_ms"] is None
    assert "Not run op by op" in answer["eager_note"] and "2 arrays" in answer["eager_note"]
    monkeypatch.setattr(eager, "EAGER_MAX_LEAVES", 400)
    monkeypatch.setattr(eager, "EAGER_MAX_FLOPS", 1.0)
    answer = run(client, module, PER_EXAMPLE)
    assert answer["eager_ms"] is None and "flops" in answer["eager_note"]
