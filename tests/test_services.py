"""The composition root: ``Services`` made by the app's lifespan and closed by it."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

import app.training.storage
from app.database import metadata
from app.main import create_app
from app.settings import Settings
from app.workspaces import COOKIE_NAME

MLP = {"kind": "eqx.nn.MLP", "params": {"in_size": 2, "out_size": 1, "width_size": 8, "depth": 1}}


def test_services_live_as_long_as_the_lifespan(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "d"))
    assert not hasattr(app.state, "services")  # building the app touches nothing
    with TestClient(app) as first, TestClient(app) as second:
        services = app.state.services
        assert first.get("/api/health").status_code == 200
        assert second.get("/api/health").status_code == 200
        assert app.state.services is services  # two servers of one app share its services
    assert app.state.lifespans == 0


def test_closing_the_app_stops_its_training_jobs(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "d"))
    with TestClient(app) as client:
        module = client.post("/api/modules", json=MLP).json()["id"]
        body = {"dataset": "circle", "steps": 500, "watch_seconds": 60}
        job = client.post(f"/api/modules/{module}/train", json=body).json()["job"]
        deadline = time.monotonic() + 60
        while client.get(f"/api/jobs/{job}").json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        workspace = client.cookies.get(COOKIE_NAME)
        services = app.state.services
        workers = services.jobs.threads
        assert workers
    # the lifespan's end stopped the job (its parameters kept) and its threads ended
    stored = services.storage.get_job(workspace, job)
    assert stored["status"] == "stopped"
    assert not [thread for thread in workers if thread.is_alive()]


def test_one_metadata_holds_every_table():
    assert {"modules", "shares", "notices", "csv_datasets", "training_jobs"} <= set(metadata.tables)
    assert not hasattr(app.training.storage, "metadata")
