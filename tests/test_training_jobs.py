"""Training jobs in chunks: running jobs advance together, and chunking changes no number.

The numbers of a job trained over several chunks (a watched job: one chunk per pace period)
are checked against the same steps done with Optax and JAX directly, batch by batch.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from fastapi.testclient import TestClient
from helpers import build, wait_for_job
from test_training_play import CIRCLE, LEAVES, MLP, forward, leaves

from app.settings import Settings
from app.training.datasets import GeneratedDataset, generate


def test_three_jobs_advance_together(app):
    clients = [TestClient(app) for _ in range(3)]
    with clients[0], clients[1], clients[2]:
        jobs = []
        for client in clients:
            module = build(client, "eqx.nn.MLP", MLP)
            body = {"dataset": CIRCLE, "steps": 20_000}
            response = client.post(f"/api/modules/{module}/train", json=body)
            assert response.status_code == 202, response.text
            jobs.append(response.json()["job"])

        def records() -> list[dict]:
            return [c.get(f"/api/jobs/{j}").json() for c, j in zip(clients, jobs, strict=True)]

        deadline = time.monotonic() + 60
        first = records()
        while not all(r["step"] > 0 for r in first):
            assert time.monotonic() < deadline, first
            time.sleep(0.05)
            first = records()
        # every one has stepped while none has finished: they run side by side, and they
        # go on advancing together
        assert all(r["status"] == "running" for r in first), first
        time.sleep(0.5)
        later = records()
        for before, after in zip(first, later, strict=True):
            assert after["step"] > before["step"], (before["step"], after["step"])
        assert all(r["status"] == "running" and r["step"] < r["total"] for r in later), later
        for client, job in zip(clients, jobs, strict=True):
            client.post(f"/api/jobs/{job}/stop")
            assert wait_for_job(client, job)["status"] == "stopped"


def test_a_job_in_many_chunks_gives_the_numbers_of_optax_step_by_step(client):
    module = build(client, "eqx.nn.MLP", MLP)
    initial = leaves(client, module)
    steps, seed = 60, 5
    # watched over 1.2 s: about one chunk every 0.2 s, so the steps are split across chunks
    body = {"dataset": CIRCLE, "steps": steps, "seed": seed, "watch_seconds": 1.2}
    job = client.post(f"/api/modules/{module}/train", json=body).json()["job"]
    record = wait_for_job(client, job)
    assert record["status"] == "done" and record["step"] == steps, record["error"]
    assert record["elapsed"] >= 1.0

    data = generate(GeneratedDataset(**CIRCLE), Settings())
    x_all, y_all = jnp.asarray(data.x_train), jnp.asarray(data.y_train, jnp.float32)
    params = {path: jnp.asarray(value) for path, value in initial.items()}
    adam = optax.adam(0.01)
    state = adam.init(params)

    def loss(p, x, y):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(forward(p, x), y))

    # the batches: the seed's permutation of the 320 training rows, 32 at a time, shuffled
    # again after each pass
    rng = np.random.default_rng(seed)
    order, position, losses = rng.permutation(320), 0, []
    for _ in range(steps):
        if position + 32 > 320:
            order, position = rng.permutation(320), 0
        index = order[position : position + 32]
        position += 32
        value, grads = jax.value_and_grad(loss)(params, x_all[index], y_all[index])
        updates, state = adam.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        losses.append(float(value))

    # 60 steps: a record after every step, each the loss of that step's batch
    np.testing.assert_allclose(record["metrics"]["loss"], losses, rtol=1e-4, atol=1e-6)
    after = leaves(client, module)
    for path in LEAVES:
        np.testing.assert_allclose(after[path], np.asarray(params[path]), rtol=1e-4, atol=1e-5)
