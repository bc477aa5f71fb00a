"""Limits per client address, through the API: a client that drops its cookie gets a new
workspace on every request, so what protects the others is counted by address as well.

Each test client here has its own address (``TestClient(client=...)``) and drops its cookie
before every request, as a hostile client would.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from helpers import LINEAR, SEED_RUN

from app.main import create_app
from app.settings import Settings
from app.training.jobs import FINISHED

HOSTILE, OTHER = ("10.0.0.66", 40000), ("10.0.0.7", 40000)
TRAIN = {"dataset": "circle", "optimizer": "adam", "learning_rate": 0.01, "steps": 50}
MLP = {"kind": "eqx.nn.MLP", "params": {"in_size": 2, "out_size": 1, "width_size": 4}}


@pytest.fixture
def app(tmp_path):
    settings = Settings(
        data_dir=tmp_path / "data",
        max_concurrent_computations=1,
        compute_wait_seconds=5.0,
        max_computations_per_client=1,
        max_jobs_per_workspace=2,
        max_jobs_per_client=2,
    )
    return create_app(settings)


@contextmanager
def started(app):
    with TestClient(app):  # runs the lifespan once; the clients below share its services
        yield app.state.services


def browser(app, address) -> TestClient:
    """A new workspace at ``address``: a client with no cookie yet, as one that drops it."""
    return TestClient(app, client=address)


def test_computations_per_client_address_whatever_the_workspace(app):
    with started(app) as services:
        hostile, other = browser(app, HOSTILE), browser(app, OTHER)
        mine = hostile.post("/api/modules", json=LINEAR).json()["id"]
        yours = other.post("/api/modules", json=LINEAR).json()["id"]
        answers = {}

        def build(name, client):
            answers[name] = client.post("/api/modules", json=LINEAR)

        def held(address) -> int:
            return services.compute.clients.held(address[0])

        def wait_until_held(address) -> None:
            deadline = time.monotonic() + 10
            while held(address) != 1:
                assert time.monotonic() < deadline, f"{address} never took its slot"
                time.sleep(0.01)

        # the one server-wide slot is held (by no client: as a training thread would), so the
        # first build of each address (it computes in the web process) takes its address's
        # slot and waits for the server's
        threads = [
            threading.Thread(target=build, args=("hostile", browser(app, HOSTILE))),
            threading.Thread(target=build, args=("other", browser(app, OTHER))),
        ]
        with services.compute.slot():
            threads[0].start()
            wait_until_held(HOSTILE)
            # one more computation from that address, in a new workspace: refused at once,
            # without waiting for the server's slot: a build, and a run too (a run is a task of
            # the worker pool, but it takes its address's slot as well)
            refused = browser(app, HOSTILE).post("/api/modules", json=LINEAR)
            assert refused.status_code == 429, refused.text
            message = refused.json()["message"]
            assert "max_computations_per_client=1" in message, message
            assert "PLAYGROUND_MAX_COMPUTATIONS_PER_CLIENT" in message
            assert refused.headers["retry-after"].isdigit()
            ran = hostile.post(f"/api/modules/{mine}/run", json=SEED_RUN)
            assert ran.status_code == 429, ran.text
            assert held(HOSTILE) == 1  # the refusals took nothing
            # another address is not refused: its build waits for the server's slot like anyone's
            threads[1].start()
            wait_until_held(OTHER)
        for thread in threads:
            thread.join(10)
        for name in ("hostile", "other"):
            assert answers[name].status_code == 201, answers[name].text
        expected = [[pytest.approx(1 / 3)] * 3] * 2  # d mean(x @ W + b) / dW for x = ones
        for client, module in ((hostile, mine), (other, yours)):
            answer = client.post(f"/api/modules/{module}/run", json=SEED_RUN)
            assert answer.status_code == 200, answer.text
            assert answer.json()["values"][".weight"] == expected
        # every slot was given back
        assert held(HOSTILE) == 0 and held(OTHER) == 0
        assert browser(app, HOSTILE).post("/api/modules", json=LINEAR).status_code == 201


def test_training_jobs_per_client_address_whatever_the_workspace(app):
    paused = {**TRAIN, "paused": True}  # stopped before its first step: active until stopped
    with started(app):
        started_jobs = []

        def train(address) -> tuple[TestClient, object]:
            client = browser(app, address)  # a new workspace: one job, under its own limit
            module = client.post("/api/modules", json=MLP).json()["id"]
            response = client.post(f"/api/modules/{module}/train", json=paused)
            if response.status_code == 202:
                started_jobs.append((client, response.json()["job"]))
            return client, response

        try:
            for _ in range(2):
                assert train(HOSTILE)[1].status_code == 202
            _, third = train(HOSTILE)
            assert third.status_code == 429, third.text
            message = third.json()["message"]
            assert "max_jobs_per_client=2" in message, message
            assert "PLAYGROUND_MAX_JOBS_PER_CLIENT" in message
            assert train(OTHER)[1].status_code == 202  # another address trains as usual
            # a stopped job no longer counts
            client, job = started_jobs[0]
            assert client.post(f"/api/jobs/{job}/stop").status_code == 200
            deadline = time.monotonic() + 10
            while client.get(f"/api/jobs/{job}").json()["status"] not in FINISHED:
                assert time.monotonic() < deadline, "the job never stopped"
                time.sleep(0.05)
            assert train(HOSTILE)[1].status_code == 202
        finally:
            for client, job in started_jobs:
                client.post(f"/api/jobs/{job}/stop")


def test_zero_means_no_limit_per_client(tmp_path):
    settings = Settings(
        data_dir=tmp_path / "data", max_computations_per_client=0, max_jobs_per_client=0
    )
    app = create_app(settings)
    with started(app) as services:
        assert services.compute.clients.limit == 0
        client = browser(app, HOSTILE)
        with services.compute.client_slot(), services.compute.client_slot():
            pass  # outside a request no address is counted
        assert client.post("/api/modules", json=LINEAR).status_code == 201


def test_a_client_whose_run_went_past_a_workers_limit_runs_heavy_for_a_while(tmp_path):
    """After one of its runs is refused by a worker (here the memory analysis, after
    compiling), every run of that address goes to the heavy lane, never to the worker kept for
    light work; another address's runs stay light."""
    app = create_app(Settings(data_dir=tmp_path / "data", worker_memory_mb=1))
    bomb = {
        "function": "loss",
        "loss": "sum(one_hot(x, 1000)) + mean(out)",
        "transforms": ["jit"],
        "batched": True,
        "input": {"shape": [500, 2], "init": "ones"},
    }
    with started(app) as services:
        lanes = []
        call = services.workers.call

        def spy(fn, *args, lane="light", **options):
            lanes.append(lane)
            return call(fn, *args, lane=lane, **options)

        services.workers.call = spy
        hostile, other = browser(app, HOSTILE), browser(app, OTHER)
        module = hostile.post("/api/modules", json=LINEAR).json()["id"]
        refused = hostile.post(f"/api/modules/{module}/run", json=bomb)
        assert refused.status_code == 422 and "worker_memory_mb" in refused.json()["message"]
        hostile.post(f"/api/modules/{module}/run", json=SEED_RUN)
        yours = other.post("/api/modules", json=LINEAR).json()["id"]
        other.post(f"/api/modules/{yours}/run", json=SEED_RUN)
        assert lanes == ["light", "heavy", "light"]
