"""Every limit of the playground, through the API, with small limits set in Settings.

Each refusal is a 413, 422, 429 or 503 whose message names the limit (its setting) and its value,
answered before anything large is built or computed (so each answers in well under a second).
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from fastapi.testclient import TestClient
from helpers import SEED_RUN, wait_for_job

from app.main import create_app
from app.settings import Settings, get_settings

SMALL = dict(
    max_array_elements=1_000,
    max_input_elements=500,
    max_module_params=2_000,
    max_module_leaves=50,
    max_modules_per_workspace=3,
    max_body_bytes=4_000,
    max_expression_length=60,
    max_expression_nodes=12,
    max_run_flops=50_000.0,
    max_concurrent_computations=1,
    compute_wait_seconds=0.3,
    max_jobs_per_workspace=1,
    max_train_steps=300,
    max_train_epochs=3,
    max_dataset_rows=500,
    leaf_values_limit=16,
)
# seconds: only a hang guard (speed is for bench/, not unit tests); a refusal that built the
# huge thing first would take minutes or run out of memory, not a few seconds
FAST = 10.0


def linear(in_dim=2, out_dim=3, seed=0) -> dict:
    return {
        "kind": "library.Linear",
        "params": {"in_dim": in_dim, "out_dim": out_dim, "seed": seed},
    }


def custom(fields, call="x", name="Mine") -> dict:
    return {"kind": "custom", "params": {"name": name, "seed": 0, "fields": fields, "call": call}}


@pytest.fixture
def limited(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", **SMALL)
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as client:
        client.services = app.state.services
        yield client


def refused(response, status: int, *names: str, elapsed: float | None = None) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    message = body.get("message") or str(body.get("detail"))
    for name in names:
        assert name in message, (name, message)
    if elapsed is not None:
        assert elapsed < FAST, f"the refusal took {elapsed:.2f} s"
    return message


def timed(call, *args, **kwargs):
    start = time.perf_counter()
    response = call(*args, **kwargs)
    return response, time.perf_counter() - start


def test_elements_per_array(limited):
    fields = [{"name": "w", "role": "param", "shape": [40, 40], "init": "normal"}]
    response, elapsed = timed(limited.post, "/api/modules", json=custom(fields, "x @ w"))
    refused(response, 422, "max_array_elements", "1,000", elapsed=elapsed)
    fields = [{"name": "w", "role": "param", "shape": [30, 30], "init": "normal"}]
    assert limited.post("/api/modules", json=custom(fields, "x @ w")).status_code == 201


def test_parameters_per_module(limited):
    fields = [
        {"name": f"w{i}", "role": "param", "shape": [30, 30], "init": "normal"} for i in range(3)
    ]
    response, elapsed = timed(limited.post, "/api/modules", json=custom(fields, "x @ w0"))
    refused(response, 422, "max_module_params", "2,000", elapsed=elapsed)
    # a huge one is refused as fast: nothing is built
    response, elapsed = timed(limited.post, "/api/modules", json=linear(4096, 4096))
    refused(response, 422, "max_module_params", elapsed=elapsed)
    assert limited.post("/api/modules", json=linear(20, 20)).status_code == 201


def test_leaves_per_module(limited):
    body = {
        "kind": "eqx.nn.MLP",
        "params": {"in_size": 1, "out_size": 1, "width_size": 1, "depth": 40, "seed": 0},
    }
    response, elapsed = timed(limited.post, "/api/modules", json=body)
    refused(response, 422, "max_module_leaves", "50", elapsed=elapsed)


def test_elements_per_input(limited):
    module = limited.post("/api/modules", json=linear()).json()["id"]
    body = {**SEED_RUN, "input": {"shape": [1000, 2], "init": "ones"}}
    response, elapsed = timed(limited.post, f"/api/modules/{module}/run", json=body)
    refused(response, 422, "max_input_elements", "500", elapsed=elapsed)
    body = {**SEED_RUN, "input": {"shape": [10**6, 10**6], "init": "normal"}}
    response, elapsed = timed(limited.post, f"/api/modules/{module}/run", json=body)
    assert 400 <= response.status_code < 500 and elapsed < FAST
    ok = limited.post(f"/api/modules/{module}/run", json={**SEED_RUN, "input": {"shape": [200, 2]}})
    assert ok.status_code == 200, ok.text


def test_modules_per_workspace_evicts_the_oldest_unsaved_with_a_notice(limited):
    first, second, third = (
        limited.post("/api/modules", json=linear(seed=i)).json()["id"] for i in range(3)
    )
    share = limited.post(f"/api/modules/{first}/share")  # the oldest is saved: it stays
    assert share.status_code == 201
    fourth = limited.post("/api/modules", json=linear(seed=3))
    assert fourth.status_code == 201
    notices = fourth.json()["notices"]
    assert len(notices) == 1
    assert second in notices[0] and "max_modules_per_workspace=3" in notices[0]
    ids = {m["id"] for m in limited.get("/api/modules").json()}
    assert ids == {first, third, fourth.json()["id"]}
    assert limited.get(f"/api/modules/{second}").status_code == 404
    assert limited.get(f"/api/modules/{first}").status_code == 200
    # the notice is said once
    assert limited.get(f"/api/modules/{first}").json()["notices"] == []


def test_a_workspace_full_of_saved_modules_refuses_with_429(limited):
    for seed in range(3):
        module = limited.post("/api/modules", json=linear(seed=seed)).json()["id"]
        assert limited.post(f"/api/modules/{module}/share").status_code == 201
    response, elapsed = timed(limited.post, "/api/modules", json=linear(seed=9))
    refused(response, 429, "max_modules_per_workspace=3", elapsed=elapsed)


def test_request_body_size(limited):
    body = custom([], call="x" + " + x" * 2000)
    response, elapsed = timed(limited.post, "/api/modules", json=body)
    refused(response, 413, "max_body_bytes=4000", elapsed=elapsed)


def test_expression_length_and_size_in_a_loss(limited):
    module = limited.post("/api/modules", json=linear()).json()["id"]
    long_loss = "mean(out)" + " + 0" * 20
    response = limited.post(f"/api/modules/{module}/run", json={**SEED_RUN, "loss": long_loss})
    refused(response, 422, "limit is 60 (max_expression_length, PLAYGROUND_MAX_EXPRESSION_LENGTH)")
    big_loss = "mean(out + out + out + out + out + out + out + out)"
    response = limited.post(f"/api/modules/{module}/run", json={**SEED_RUN, "loss": big_loss})
    refused(response, 422, "limit is 12 (max_expression_nodes, PLAYGROUND_MAX_EXPRESSION_NODES)")


def test_expression_limits_of_a_custom_module_come_from_the_environment(monkeypatch, tmp_path):
    from app.catalog import custom as custom_kind

    monkeypatch.setenv("PLAYGROUND_MAX_EXPRESSION_LENGTH", "20")
    monkeypatch.setenv("PLAYGROUND_MAX_EXPRESSION_NODES", "8")
    get_settings.cache_clear()
    custom_kind._parses.clear()
    try:
        app = create_app(Settings(data_dir=tmp_path / "env"))
        fields = [{"name": "w", "role": "param", "shape": [2, 3], "init": "normal"}]
        with TestClient(app) as client:
            long_call = "x @ w" + " + 1" * 10
            refused(client.post("/api/modules", json=custom(fields, long_call)), 422, "20")
            big_call = "x@w+x@w+x@w+1"
            refused(client.post("/api/modules", json=custom(fields, big_call)), 422, "limit is 8")
            assert client.post("/api/modules", json=custom(fields, "x @ w")).status_code == 201
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        custom_kind._parses.clear()


def test_compute_per_run_is_estimated_before_it_runs(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "flops", max_run_flops=50_000.0))
    with TestClient(app) as limited:
        body = {
            "kind": "eqx.nn.MLP",
            "params": {"in_size": 2, "out_size": 2, "width_size": 16, "depth": 2, "seed": 0},
        }
        module = limited.post("/api/modules", json=body).json()["id"]
        run = {
            **SEED_RUN,
            "transforms": ["grad", "vmap"],
            "input": {"shape": [250, 2], "init": "ones"},
        }
        response = limited.post(f"/api/modules/{module}/run", json=run)
        # the estimate needs the compiled program, so compile time (not a fixed bound) sets
        # how long this takes; what matters is that nothing over the budget is kept or run
        refused(response, 422, "max_run_flops")
        assert limited.app.state.services.runs.compiles == 0
        small = {**run, "input": {"shape": [2, 2], "init": "ones"}}
        assert limited.post(f"/api/modules/{module}/run", json=small).status_code == 200


def test_concurrent_computations_wait_then_503_with_retry_after(limited):
    module = limited.post("/api/modules", json=linear()).json()["id"]
    slots = limited.services.compute
    holding = threading.Event()
    release = threading.Event()

    def hold():
        with slots.slot():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(5)
        # building a module computes in the web process: it waits for a slot, then 503
        response, elapsed = timed(limited.post, "/api/modules", json=linear())
        message = refused(response, 503, "max_concurrent_computations=1")
        assert response.headers["retry-after"].isdigit()
        assert 0.25 <= elapsed < 3, "a short wait, then the answer"
        assert "busy" in message
        # a run is a task of the worker pool, which bounds runs itself: it does not wait
        assert limited.post(f"/api/modules/{module}/run", json=SEED_RUN).status_code == 200
    finally:
        release.set()
        holder.join()
    assert limited.post("/api/modules", json=linear()).status_code == 201


def test_training_jobs_per_workspace(limited):
    module = limited.post("/api/modules", json=linear(2, 1)).json()["id"]
    body = {"dataset": "circle", "optimizer": "adam", "learning_rate": 0.01, "steps": 300}
    first = limited.post(f"/api/modules/{module}/train", json=body)
    assert first.status_code == 202, first.text
    try:
        second, elapsed = timed(limited.post, f"/api/modules/{module}/train", json=body)
        if second.status_code == 202:  # the first one had already finished
            pytest.skip("the first job ended before the second was asked for")
        refused(second, 429, "max_jobs_per_workspace=1", elapsed=elapsed)
    finally:
        limited.post(f"/api/jobs/{first.json()['job']}/stop")


def test_training_steps_epochs_and_rows(limited):
    module = limited.post("/api/modules", json=linear(2, 1)).json()["id"]
    steps = {"dataset": "circle", "steps": 301}
    refused(limited.post(f"/api/modules/{module}/train", json=steps), 422, "max_train_steps")
    rows = {"dataset": {"name": "circle", "num_examples": 501}, "steps": 10}
    refused(limited.post(f"/api/modules/{module}/train", json=rows), 422, "max_dataset_rows")


def test_csv_rows(limited):
    csv = "a,b,y\n" + "0,0,1\n" * 520  # under max_body_bytes, over max_dataset_rows
    response = limited.post(
        "/api/datasets/csv", files={"file": ("big.csv", csv.encode(), "text/csv")}
    )
    refused(response, 422, "max_dataset_rows")


def test_leaf_values_are_cut_to_the_limit(limited):
    module = limited.post("/api/modules", json=linear(10, 10)).json()["id"]
    leaf = limited.get(f"/api/modules/{module}/leaf", params={"path": ".weight"}).json()
    assert leaf["truncated"] is True and leaf["limit"] == 16
    assert sum(len(row) for row in leaf["values"]) <= 16


# --- what a run costs: the trace before tracing, the memory before running, a job as a whole ----


def mlp(depth: int, width: int = 2, in_size: int = 2, out_size: int = 2) -> dict:
    params = {"in_size": in_size, "out_size": out_size, "width_size": width, "depth": depth}
    return {"kind": "eqx.nn.MLP", "params": {**params, "seed": 0}}


def test_traced_leaves_are_estimated_before_tracing(tmp_path):
    import equinox as eqx
    import jax

    app = create_app(Settings(data_dir=tmp_path / "trace", max_traced_leaves=60))
    with TestClient(app) as client:
        engine_compiles = lambda: client.app.state.services.runs.compiles  # noqa: E731
        deep = client.post("/api/modules", json=mlp(9)).json()["id"]
        # the module's arrays, counted with JAX directly: 10 layers of weight and bias
        model = eqx.nn.MLP(2, 2, 2, 9, key=jax.random.PRNGKey(0))
        leaves = len(jax.tree.leaves(eqx.filter(model, eqx.is_array)))
        assert leaves == 20
        forward = {**SEED_RUN, "function": "forward", "transforms": [], "input": {"shape": [2]}}
        assert client.post(f"/api/modules/{deep}/run", json=forward).status_code == 200
        before = engine_compiles()
        grad = {**SEED_RUN, "input": {"shape": [2]}}  # "mean(out)" has 2 parts: mean(...) and out
        response, elapsed = timed(client.post, f"/api/modules/{deep}/run", json=grad)
        message = refused(response, 422, "max_traced_leaves", "60", elapsed=elapsed)
        assert f"{(leaves + 2) * 3:,} leaf operations" in message  # (20 + 2) x 3 for grad
        assert "at most 18 leaves fit" in message  # 60 // 3 - 2
        assert engine_compiles() == before  # nothing was traced
        jacobian = {**forward, "transforms": ["jacfwd"]}  # 20 x 8 for jacfwd
        refused(client.post(f"/api/modules/{deep}/run", json=jacobian), 422, "160 leaf")
        sweep = {"coordinate": 0, "points": 5, "loss": "mean(out)"}
        refused(client.post(f"/api/modules/{deep}/sweep", json=sweep), 422, "max_traced_leaves")
        # 8 layers, 18 leaves: (18 + 2) x 3 = 60 fits
        fits = client.post("/api/modules", json=mlp(8)).json()["id"]
        assert client.post(f"/api/modules/{fits}/run", json=grad).status_code == 200
        train = {"dataset": "circle", "steps": 10}  # a step is grad: 22 arrays x 3 > 60
        deeper = client.post("/api/modules", json=mlp(10, in_size=2, out_size=1)).json()["id"]
        message = refused(
            client.post(f"/api/modules/{deeper}/train", json=train), 422, "max_traced_leaves"
        )
        assert "training job" in message and "66 leaf operations" in message


def test_memory_is_checked_after_compiling_before_running(tmp_path):
    import jax
    import jax.numpy as jnp

    app = create_app(Settings(data_dir=tmp_path / "memory", worker_memory_mb=1))
    with TestClient(app) as client:
        module = client.post("/api/modules", json=custom([], "x")).json()["id"]
        loss = "sum(one_hot(x, 100))"
        body = {**SEED_RUN, "loss": loss, "transforms": [], "input": {"shape": [5000]}}
        response, elapsed = timed(client.post, f"/api/modules/{module}/run", json=body)
        message = refused(response, 422, "worker_memory_mb", "PLAYGROUND_WORKER_MEMORY_MB")
        assert elapsed < 5

        # the same program compiled with JAX directly: its memory analysis gives the figure
        def f(x):
            return jnp.sum(jax.nn.one_hot(x.astype(jnp.int32), 100))

        stats = jax.jit(f).lower(jnp.ones((5000,))).compile().memory_analysis()
        total = stats.temp_size_in_bytes + stats.output_size_in_bytes
        total += stats.argument_size_in_bytes
        assert total > 1_000_000
        assert f"about {total / 1e6:,.0f} MB" in message and "limit is 1 MB" in message
        small = {**body, "input": {"shape": [500]}}  # 0.2 MB of temporaries
        answer = client.post(f"/api/modules/{module}/run", json=small)
        assert answer.status_code == 200 and answer.json()["values"] == 500.0


def test_a_training_job_is_budgeted_as_a_whole(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "job", max_train_flops=1e8))
    with TestClient(app) as client:
        module = client.post("/api/modules", json=mlp(2, 16, 2, 1)).json()["id"]
        body = {"dataset": "circle", "optimizer": "adam", "batch_size": 32, "steps": 5000}
        response, elapsed = timed(client.post, f"/api/modules/{module}/train", json=body)
        message = refused(response, 422, "max_train_flops", "1e+08")
        step = float(re.search(r"5,000 steps of ([0-9.e+]+)", message).group(1))
        # by hand: a forward pass is 2 x (2*16 + 16*16 + 16*1) = 608 flops per example in its
        # matrix products; a step is the forward and backward passes (3 times) on 32 examples
        by_hand = 3 * 32 * 608
        assert by_hand <= step <= 2 * by_hand, (step, by_hand)
        fits = int(re.search(r"at most ([0-9,]+) steps", message).group(1).replace(",", ""))
        assert 0 < fits < 5000
        over = client.post(f"/api/modules/{module}/train", json={**body, "steps": fits + 1})
        refused(over, 422, "max_train_flops")
        job = client.post(f"/api/modules/{module}/train", json={**body, "steps": fits})
        assert job.status_code == 202, job.text
        client.post(f"/api/jobs/{job.json()['job']}/stop")


def test_the_compile_cache_is_bounded_in_bytes_as_well_as_entries(tmp_path):
    from app.runs.cache import CompileCache, Compiled

    def entry(size: int) -> Compiled:
        return Compiled(
            0.0, 0.0, "", False, "", False, None, key=None, executable=None, size_bytes=size
        )

    cache = CompileCache(10, max_bytes=1000)
    for key in "abc":
        cache.get_or_compile(key, lambda: entry(400))
    assert len(cache) == 2 and cache.bytes == 800 and cache.get("a") is None
    cache.get_or_compile("huge", lambda: entry(5000))  # the newest entry always stays
    assert len(cache) == 1 and cache.bytes == 5000

    # 0 MB: only the newest entry stays, however small
    app = create_app(Settings(data_dir=tmp_path / "bytes", compile_cache_mb=0))
    with TestClient(app) as client:
        module = client.post("/api/modules", json=linear()).json()["id"]
        for shape in ([1, 2], [2, 2], [3, 2]):
            body = {**SEED_RUN, "input": {"shape": shape}}
            assert client.post(f"/api/modules/{module}/run", json=body).json()["compiled"]
        cache = client.app.state.services.runs.local_engine().cache
        (newest,) = cache._entries.values()
        assert cache.bytes == newest.size_bytes >= len(newest.hlo) + len(newest.jaxpr) > 0
        assert newest.key.input_shape == (3, 2)
        first = client.post(
            f"/api/modules/{module}/run", json={**SEED_RUN, "input": {"shape": [1, 2]}}
        )
        assert first.json()["compiled"] is True  # it had been evicted


def test_a_library_network_job_is_budgeted_in_flops_with_its_sweeps(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "net", max_train_flops=2e9))
    with TestClient(app) as client:
        network = client.post("/api/modules", json={"kind": "library.network"}).json()["id"]
        body = {"dataset": "prototypes", "epochs": 3}
        response, elapsed = timed(client.post, f"/api/modules/{network}/train", json=body)
        message = refused(response, 422, "max_train_flops", "2e+09", elapsed=elapsed)
        batch = float(re.search(r"186 batches of ([0-9.e+]+)", message).group(1))
        # by hand: a batch runs steps_train = 10 sweeps with every message, each at least the
        # matrix products of the edges 0->1 (100x256), 1->1 (256x256), 2->1 (10x256) and
        # 1->2 (256x10) on 16 examples, then 10 inference sweeps (at least 0->1 and 1->2);
        # the compiler counts a loop's body once, so a sweep left out would be 10 times less
        train = 10 * 16 * 2 * (100 * 256 + 256 * 256 + 10 * 256 + 256 * 10)
        inference = 10 * 16 * 2 * (100 * 256 + 256 * 10)
        assert train + inference <= batch <= 2 * (train + inference), (batch, train, inference)
        assert "smaller" in message


def test_a_training_job_is_budgeted_in_seconds(tmp_path):
    """The backstop: a job whose steps the estimate lets through (it counts only what a step
    must cost: here about 0.6 s for 20,000 steps) but which its first chunks measure to be
    too long fails at once, and its structure is refused up front from then on."""
    app = create_app(Settings(data_dir=tmp_path / "seconds", max_job_seconds=3.0))
    with TestClient(app) as client:
        module = client.post("/api/modules", json=mlp(2, 16, 2, 1)).json()["id"]
        body = {"dataset": "circle", "steps": 20_000}
        response = client.post(f"/api/modules/{module}/train", json=body)
        assert response.status_code == 202, response.text
        record = wait_for_job(client, response.json()["job"])
        # measured on its first steps, far from the end: failed, in words, the module unchanged
        assert record["status"] == "failed" and record["step"] < 5_000, record
        assert "max_job_seconds" in record["error"] and "3 s" in record["error"]
        assert "measured on its first steps" in record["error"]
        assert record["revision"] is None
        assert client.get(f"/api/modules/{module}").json()["trained"] is False
        fits = int(re.search(r"at most ([0-9,]+) steps", record["error"]).group(1).replace(",", ""))
        assert 0 < fits < 20_000
        # measured once, the next job of this structure is refused at once
        again, elapsed = timed(client.post, f"/api/modules/{module}/train", json=body)
        message = refused(
            again, 422, "max_job_seconds", "PLAYGROUND_MAX_JOB_SECONDS", elapsed=elapsed
        )
        assert "measured on its first steps" in message
        small = client.post(f"/api/modules/{module}/train", json={**body, "steps": 10})
        assert small.status_code == 202, small.text
        assert wait_for_job(client, small.json()["job"])["status"] == "done"


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found is not None, (pattern, text)
    return float(found.group(1).replace(",", ""))


def test_a_job_that_cannot_fit_is_refused_before_its_structure_was_ever_timed(tmp_path):
    """A structure never trained: its steps' seconds are estimated from the compiler's flops
    and this machine's measured speed, so 20,000 steps of a 2-256-256-1 MLP on batches of
    1,024 are refused before any chunk runs, with the numbers; 20 steps train, and take at
    least the estimate."""
    settings = Settings(data_dir=tmp_path / "estimate", max_job_seconds=1.0, max_train_flops=1e15)
    app = create_app(settings)
    with TestClient(app) as client:
        module = client.post("/api/modules", json=mlp(2, 256, 2, 1)).json()["id"]
        body = {"dataset": {"name": "circle", "num_examples": 2000}, "batch_size": 1024}
        response, elapsed = timed(
            client.post, f"/api/modules/{module}/train", json={**body, "steps": 20_000}
        )
        message = refused(
            response, 422, "max_job_seconds", "PLAYGROUND_MAX_JOB_SECONDS", "1 s", elapsed=elapsed
        )
        assert response.json()["detail"][0]["loc"] == ["steps"]
        assert client.get(f"/api/modules/{module}/jobs").json() == []  # nothing was queued
        assert client.get(f"/api/modules/{module}").json()["trained"] is False
        # the numbers: the estimate is the steps times a step's seconds; a step's flops are
        # at least forward and backward of the three layers by hand (2 x 3 flops per weight
        # and row), and at most twice that (the loss, Adam)
        estimate = number(r"compute for about ([0-9.e+]+) s", message)
        per_step = number(r"20,000 steps of ([0-9.e+]+) ms", message) / 1000
        assert estimate == pytest.approx(20_000 * per_step, rel=0.02)  # (3 digits each)
        flops = number(r"([0-9.e+]+) floating-point operations", message)
        by_hand = 6 * 1024 * (2 * 256 + 256 * 256 + 256)
        assert by_hand <= flops <= 2 * by_hand, (flops, by_hand)
        fits = number(r"at most ([0-9,]+) steps", message)
        assert fits == pytest.approx(1.0 / per_step, rel=0.01)  # (the message's 3 digits)

        small = client.post(f"/api/modules/{module}/train", json={**body, "steps": 20})
        assert small.status_code == 202, small.text
        record = wait_for_job(client, small.json()["job"])
        assert record["status"] == "done" and record["step"] == 20, record
        # the estimate is what a step must at least cost: the steps computed longer
        assert record["compute_seconds"] / 19 >= per_step, (record["compute_seconds"], per_step)
