"""Training jobs in real worker processes (one app with two workers for the whole module):
jobs advance together there, and a job whose worker is killed fails in words while the next
job works."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from helpers import LiveServer, wait_for_job
from test_training_play import CIRCLE, MLP

from app.main import create_app
from app.settings import Settings


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("workers") / "data", workers=2)
    app = create_app(settings)
    with LiveServer(app) as live:
        live.services = app.state.services
        yield live


def workspace(server) -> httpx.Client:
    """A client of its own workspace (its own cookie jar)."""
    return httpx.Client(base_url=server.url, timeout=60)


def train(client: httpx.Client, steps: int) -> str:
    module = client.post("/api/modules", json={"kind": "eqx.nn.MLP", "params": MLP})
    assert module.status_code == 201, module.text
    response = client.post(
        f"/api/modules/{module.json()['id']}/train", json={"dataset": CIRCLE, "steps": steps}
    )
    assert response.status_code == 202, response.text
    return response.json()["job"]


def test_jobs_advance_together_in_the_workers(server):
    pool = server.services.workers
    tasks = pool.status()["tasks"]
    clients = [workspace(server) for _ in range(3)]
    jobs = [train(client, 20_000) for client in clients]
    pairs = list(zip(clients, jobs, strict=True))
    deadline = time.monotonic() + 90  # the workers compile the steps first
    first = [c.get(f"/api/jobs/{j}").json() for c, j in pairs]
    while not all(r["step"] > 0 for r in first):
        assert time.monotonic() < deadline, first
        time.sleep(0.1)
        first = [c.get(f"/api/jobs/{j}").json() for c, j in pairs]
    assert all(r["status"] == "running" for r in first), first
    time.sleep(1.0)
    later = [c.get(f"/api/jobs/{j}").json() for c, j in pairs]
    for before, after in zip(first, later, strict=True):
        assert after["status"] == "running" and after["step"] > before["step"], after
    # their chunks ran in the worker processes
    assert pool.status()["tasks"] > tasks + 6
    for client, job in pairs:
        client.post(f"/api/jobs/{job}/stop")
        assert wait_for_job(client, job)["status"] == "stopped"
        client.close()


def test_a_job_whose_worker_is_killed_fails_in_words_and_the_next_one_works(server):
    pool = server.services.workers
    client = workspace(server)
    job = train(client, 20_000)
    wait_for_job(client, job, lambda r: r["step"] > 0)
    # the first worker is the one that trains (the second is kept for light work); killed
    # while it computes a chunk (chunks follow each other: kill again if it was between two)
    deadline = time.monotonic() + 60
    while (record := client.get(f"/api/jobs/{job}").json())["status"] == "running":
        assert time.monotonic() < deadline, record
        pid = pool.pids()[0]
        if pid:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
    record = wait_for_job(client, job)
    assert record["status"] == "failed", record
    assert "worker process" in record["error"] and "ended unexpectedly" in record["error"]
    assert "503" not in record["error"] and record["revision"] is None
    # a new worker took its place: the module trains again
    module = record["module"]
    again = client.post(f"/api/modules/{module}/train", json={"dataset": CIRCLE, "steps": 30})
    assert again.status_code == 202, again.text
    assert wait_for_job(client, again.json()["job"], timeout=120)["status"] == "done"
    client.close()
