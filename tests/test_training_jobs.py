"""Training jobs in chunks: running jobs advance together, and chunking changes no number.

The numbers of a job trained over several chunks (a watched job: one chunk per pace period)
are checked against the same steps done with Optax and JAX directly, batch by batch.
"""

from __future__ import annotations

import pickle
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from fastapi.testclient import TestClient
from helpers import build, wait_for_job
from test_training_play import CIRCLE, LEAVES, MLP, forward, leaves

from app.settings import Settings
from app.training.chunks import train_chunk
from app.training.datasets import GeneratedDataset, generate
from app.workers import worker_state


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


def optax_steps(dataset: dict, initial: dict, steps: int, seed: int) -> tuple[list, dict]:
    """``(losses, parameters)`` of ``steps`` Adam steps (0.01) of the 2-16-16-1 MLP from
    ``initial`` on ``dataset``, with Optax and JAX directly: the batches are the seed's
    permutation of the training rows, 32 at a time, shuffled again after each pass."""
    data = generate(GeneratedDataset(**dataset), Settings())
    x_all, y_all = jnp.asarray(data.x_train), jnp.asarray(data.y_train, jnp.float32)
    rows = len(data.x_train)
    params = {path: jnp.asarray(value) for path, value in initial.items()}
    adam = optax.adam(0.01)
    state = adam.init(params)

    def loss(p, x, y):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(forward(p, x), y))

    rng = np.random.default_rng(seed)
    order, position, losses = rng.permutation(rows), 0, []
    for _ in range(steps):
        if position + 32 > rows:
            order, position = rng.permutation(rows), 0
        index = order[position : position + 32]
        position += 32
        value, grads = jax.value_and_grad(loss)(params, x_all[index], y_all[index])
        updates, state = adam.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        losses.append(float(value))
    return losses, params


def assert_optax_numbers(client, module: str, record: dict, dataset, initial, seed) -> None:
    """The job ``record`` of ``module`` recorded every step's batch loss, and ended with the
    parameters, of :func:`optax_steps`."""
    losses, params = optax_steps(dataset, initial, record["step"], seed)
    np.testing.assert_allclose(record["metrics"]["loss"], losses, rtol=1e-4, atol=1e-6)
    after = leaves(client, module)
    for path in LEAVES:
        np.testing.assert_allclose(after[path], np.asarray(params[path]), rtol=1e-4, atol=1e-5)


def watched_job(client, dataset: dict, seed: int) -> tuple[str, dict, dict]:
    """``(module, its initial parameters, the job's record)`` of 60 steps of a new 2-16-16-1
    MLP on ``dataset``, watched over 1.2 s: about one chunk every 0.2 s, so the steps are
    split across chunks."""
    module = build(client, "eqx.nn.MLP", MLP)
    initial = leaves(client, module)
    body = {"dataset": dataset, "steps": 60, "seed": seed, "watch_seconds": 1.2}
    job = client.post(f"/api/modules/{module}/train", json=body).json()["job"]
    record = wait_for_job(client, job)
    assert record["status"] == "done" and record["step"] == 60, record["error"]
    assert record["elapsed"] >= 1.0
    return module, initial, record


def test_a_job_in_many_chunks_gives_the_numbers_of_optax_step_by_step(client):
    module, initial, record = watched_job(client, CIRCLE, seed=5)
    # 60 steps (the 320 training rows are passed 6 times)
    assert_optax_numbers(client, module, record, CIRCLE, initial, 5)


LARGE = {"name": "circle", "noise": 0.05, "num_examples": 20_000}


def test_a_jobs_data_goes_to_a_worker_once_and_again_to_one_without_it(client, monkeypatch):
    """The first chunk carries the job's plan (its 20,000 rows), the next ones only its key;
    a worker that has not got it (here: its plans forgotten, as a new worker's) gets it
    again; the numbers are Optax's all the same."""
    pool = client.app.state.services.jobs.pool
    sizes = []
    submit = pool.submit

    def measured(fn, *args, **options):
        if fn is train_chunk:
            sizes.append(len(pickle.dumps(args)))
            if len(sizes) == 3:
                worker_state()["training.plans"].clear()
        return submit(fn, *args, **options)

    monkeypatch.setattr(pool, "submit", measured)
    module, initial, record = watched_job(client, LARGE, seed=7)

    data = generate(GeneratedDataset(**LARGE), Settings())
    rows = data.x_train.nbytes + data.y_train.nbytes + data.x_test.nbytes + data.y_test.nbytes
    assert len(sizes) >= 5, sizes
    # whole: the first chunk, and the third again (its worker had not got the plan)
    assert sizes[0] > rows and sizes[3] > rows, (sizes, rows)
    # by key: every other chunk, under 5% of the data (it carries the state: the model's and
    # Adam's arrays, about 5 kB here, the RNG, the step)
    small = [sizes[1], sizes[2], *sizes[4:]]
    assert max(small) < rows / 20, (sizes, rows)

    assert_optax_numbers(client, module, record, LARGE, initial, 7)
