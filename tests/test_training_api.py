"""Training through the JSON API: jobs, accuracy, stop, events, limits, persistence, errors."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import build, leaf, wait_for_job

from app.main import create_app
from app.settings import Settings
from app.workspaces import COOKIE_NAME
from library.data import circle

MLP = {"in_size": 2, "out_size": 1, "width_size": 16, "depth": 2, "activation": "tanh"}
CIRCLE = {"name": "circle", "noise": 0.05, "num_examples": 400}
"""The tests' 2-D set (one shape for all of them, so they share compiled functions)."""
LEAVES = [f".layers[{i}].{name}" for i in range(3) for name in ("weight", "bias")]


def mlp_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The 2-16-16-1 tanh MLP in NumPy (eqx.nn.Linear: weight @ x + bias)."""
    h = x
    for i in range(3):
        h = h @ weights[f".layers[{i}].weight"].T + weights[f".layers[{i}].bias"]
        if i < 2:
            h = np.tanh(h)
    return h[:, 0]


@pytest.fixture
def mlp(client) -> str:
    return build(client, "eqx.nn.MLP", MLP)


@pytest.mark.slow  # convergence: trains until it reaches an accuracy
def test_mlp_learns_circle_and_its_parameters_replace_the_modules(client, settings, mlp):
    before = {path: leaf(client, mlp, path) for path in LEAVES}
    response = client.post(
        f"/api/modules/{mlp}/train",
        json={
            "dataset": CIRCLE,
            "optimizer": "adam",
            "learning_rate": 0.01,
            "steps": 500,
            "batch_size": 32,
            "loss": "auto",
            "seed": 0,
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    record = wait_for_job(client, job)
    assert record["status"] == "done", record["error"]
    assert record["step"] == record["total"] == 500
    assert record["error"] is None
    metrics = record["metrics"]
    assert metrics["test_accuracy"][-1] >= 0.95
    assert metrics["accuracy"][-1] >= 0.95
    assert metrics["loss"][-1] < metrics["loss"][0] / 3
    assert record["settings"]["loss"] == "logistic"
    assert record["dataset"]["train"] == 320 and record["dataset"]["test"] == 80

    # The module now holds the trained parameters: they classify fresh points of the circle.
    after = {path: leaf(client, mlp, path) for path in LEAVES}
    assert all(not np.allclose(after[p], before[p]) for p in LEAVES)
    x, y = circle(jax.random.PRNGKey(1234), 1000, 0.05)
    accuracy = np.mean((mlp_forward(after, np.asarray(x)) > 0) == np.asarray(y))
    assert accuracy >= 0.93
    assert record["revision"] == 1
    assert client.get(f"/api/modules/{mlp}").json()["trained"] is True

    # The diff says how far each leaf moved.
    rows = {row["path"]: row for row in record["diff"]["leaves"]}
    assert set(rows) == set(LEAVES)
    for path in LEAVES:
        change = np.linalg.norm(after[path] - before[path])
        assert rows[path]["change"] == pytest.approx(change, rel=1e-4, abs=1e-6)
        assert rows[path]["relative"] == pytest.approx(
            change / np.linalg.norm(before[path]), rel=1e-4
        )
        assert rows[path]["trained"] is True

    # A new app on the same data directory: the parameters and the job's record are still there.
    cookie = client.cookies.get(COOKIE_NAME)
    with TestClient(create_app(Settings(data_dir=settings.data_dir))) as again:
        again.cookies.set(COOKIE_NAME, cookie)
        for path in LEAVES:
            np.testing.assert_array_equal(leaf(again, mlp, path), after[path])
        stored = again.get(f"/api/jobs/{job}").json()
        assert stored["status"] == "done"
        assert stored["metrics"] == metrics
        assert [j["job"] for j in again.get(f"/api/modules/{mlp}/jobs").json()] == [job]


def test_a_repeated_job_compiles_nothing(client, mlp, caplog):
    body = {"dataset": CIRCLE, "steps": 40, "seed": 3}
    first = wait_for_job(client, client.post(f"/api/modules/{mlp}/train", json=body).json()["job"])
    assert first["status"] == "done"
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level("WARNING"):
            second = client.post(f"/api/modules/{mlp}/train", json={**body, "learning_rate": 0.03})
            assert wait_for_job(client, second.json()["job"])["status"] == "done"
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]
    assert compiled == []


@pytest.mark.slow  # convergence: trains until it reaches an accuracy
def test_library_network_learns_the_prototype_task(client):
    network = build(client, "library.network")
    response = client.post(f"/api/modules/{network}/train", json={"epochs": 3})
    assert response.status_code == 202, response.text
    record = wait_for_job(client, response.json()["job"], timeout=180)
    assert record["status"] == "done", record["error"]
    assert record["mode"] == "local"
    settings = record["settings"]
    assert settings["optimizer"] == "adam" and settings["learning_rate"] == 0.005
    assert settings["batch_size"] == 16 and settings["epochs"] == 3
    assert record["total"] == record["step"] == 3 * 62
    assert record["dataset"]["train"] == 1000
    accuracy = record["metrics"]["accuracy"]
    epochs = record["metrics"]["epoch"]
    assert len(accuracy) == len(epochs) == len(record["metrics"]["test_accuracy"])
    # a baseline before training (chance: one class in ten), then at least every 10% of an epoch
    assert epochs[0] == 0 and accuracy[0] < 0.3
    assert max(b - a for a, b in zip(epochs, epochs[1:], strict=False)) <= 0.1
    assert {1.0, 2.0, 3.0} <= set(epochs) and epochs[-1] == 3.0
    assert record["epoch"] == 3.0
    assert accuracy[-1] >= 0.95
    assert record["metrics"]["test_accuracy"][-1] >= 0.9
    # Only the trained arrays moved: the frozen feedback and the thresholds did not.
    moved = {row["path"]: row for row in record["diff"]["leaves"]}
    assert moved[".lmap._layers[1][0].W"]["change"] > 0
    assert moved[".lmap._layers[1][2].W"]["change"] == 0
    assert moved[".lmap._layers[1][1].threshold"]["change"] == 0


@pytest.mark.slow  # convergence: trains until it reaches an accuracy
def test_a_library_network_on_2d_data_uses_a_random_sign_encoding(client):
    network = build(
        client, "library.network", {"input_size": 32, "hidden_size": 32, "output_size": 2}
    )
    response = client.post(
        f"/api/modules/{network}/train",
        json={"dataset": {**CIRCLE, "name": "two_gaussians"}, "epochs": 2},
    )
    assert response.status_code == 202, response.text
    record = wait_for_job(client, response.json()["job"], timeout=120)
    assert record["status"] == "done", record["error"]
    assert "random +-1" in record["settings"]["input_encoding"]
    assert record["metrics"]["accuracy"][-1] >= 0.8
    assert (
        client.get(f"/api/jobs/{record['job']}", params={"view": True}).json()["view"]["kind"]
        == "boundary"
    )


def test_stop_keeps_what_was_learnt(client, mlp):
    before = leaf(client, mlp, ".layers[0].weight")
    job = client.post(
        f"/api/modules/{mlp}/train", json={"dataset": CIRCLE, "steps": 20_000}
    ).json()["job"]
    wait_for_job(client, job, until=lambda r: r["status"] == "running" and r["step"] > 0)
    stopped = client.post(f"/api/jobs/{job}/stop")
    assert stopped.status_code == 200
    record = wait_for_job(client, job)
    assert record["status"] == "stopped"
    assert 0 < record["step"] < record["total"] == 20_000
    assert record["revision"] == 1
    assert not np.allclose(leaf(client, mlp, ".layers[0].weight"), before)
    # Stopping again, or a finished job, changes nothing.
    assert client.post(f"/api/jobs/{job}/stop").json()["status"] == "stopped"


def test_a_watched_job_is_spread_over_its_seconds_and_stops_at_once(client, mlp):
    body = {"dataset": CIRCLE, "steps": 100, "watch_seconds": 2.0}
    job = client.post(f"/api/modules/{mlp}/train", json=body).json()["job"]
    halfway = wait_for_job(client, job, until=lambda r: r["step"] >= 50)
    assert halfway["status"] == "running" and halfway["elapsed"] >= 0.9
    record = wait_for_job(client, job)
    assert record["status"] == "done" and record["elapsed"] >= 1.9
    assert record["settings"]["watch_seconds"] == 2.0

    body = {"dataset": CIRCLE, "steps": 100, "watch_seconds": 60.0}
    job = client.post(f"/api/modules/{mlp}/train", json=body).json()["job"]
    wait_for_job(client, job, until=lambda r: r["step"] >= 1)
    client.post(f"/api/jobs/{job}/stop")
    record = wait_for_job(client, job, timeout=10)
    assert record["status"] == "stopped" and record["step"] < 10


def test_a_module_trains_one_job_at_a_time_and_the_workspace_limit_is_a_429(client, mlp):
    # At most 2 jobs per workspace, one per module.
    body = {"dataset": CIRCLE, "steps": 20_000}
    first = client.post(f"/api/modules/{mlp}/train", json=body).json()["job"]
    again = client.post(f"/api/modules/{mlp}/train", json={"dataset": CIRCLE, "steps": 10})
    assert again.status_code == 409, again.text
    assert first in again.json()["message"] and "already training" in again.json()["message"]
    other, third_module = build(client, "eqx.nn.MLP", MLP), build(client, "eqx.nn.MLP", MLP)
    second = client.post(f"/api/modules/{other}/train", json={**body, "paused": True}).json()
    third = client.post(f"/api/modules/{third_module}/train", json={"steps": 10})
    assert third.status_code == 429, client.get(f"/api/modules/{mlp}/jobs").json()
    assert "max_jobs_per_workspace=2" in third.json()["message"]
    assert third.headers["retry-after"]
    # a job that has not started (here: paused before its first step) stops at once
    assert client.post(f"/api/jobs/{second['job']}/stop").json()["status"] == "stopped"
    record = client.get(f"/api/jobs/{second['job']}").json()
    assert record["step"] == 0 and record["revision"] is None
    client.post(f"/api/jobs/{first}/stop")
    assert wait_for_job(client, first)["status"] == "stopped"
    # With the jobs ended, the module may train again.
    again = client.post(f"/api/modules/{mlp}/train", json={"dataset": CIRCLE, "steps": 5})
    assert again.status_code == 202
    wait_for_job(client, again.json()["job"])


def test_events_stream_the_progress_until_the_end(client, mlp):
    job = client.post(f"/api/modules/{mlp}/train", json={"dataset": CIRCLE, "steps": 300}).json()[
        "job"
    ]
    events = []
    with client.stream("GET", f"/api/jobs/{job}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
    names = [name for name, _ in events]
    assert names[0] == "progress" and names[-1] == "end" and names.count("end") == 1
    for _, payload in events:
        assert {"status", "step", "total", "metrics", "error"} <= set(payload)
    steps = [payload["step"] for _, payload in events]
    assert steps == sorted(steps)
    assert events[-1][1]["status"] == "done" and events[-1][1]["step"] == 300
    # A finished job's stream is one progress and the end.
    with client.stream("GET", f"/api/jobs/{job}/events") as response:
        text = "".join(response.iter_text())
    assert text.count("event: progress") == 1 and text.count("event: end") == 1


def test_jobs_belong_to_their_workspace(client, app, mlp):
    job = client.post(f"/api/modules/{mlp}/train", json={"dataset": CIRCLE, "steps": 20}).json()[
        "job"
    ]
    with TestClient(app) as stranger:
        assert stranger.get(f"/api/jobs/{job}").status_code == 404
        assert stranger.post(f"/api/jobs/{job}/stop").status_code == 404
        assert stranger.get(f"/api/jobs/{job}/events").status_code == 404
        assert stranger.post(f"/api/modules/{mlp}/train", json={}).status_code == 404
    wait_for_job(client, job)
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/api/jobs/" + "x" * 40).status_code == 422


def test_regression_on_sine_with_mse(client):
    module = build(client, "eqx.nn.MLP", {**MLP, "in_size": 1})
    job = client.post(
        f"/api/modules/{module}/train", json={"dataset": "sine", "steps": 150}
    ).json()["job"]
    record = wait_for_job(client, job)
    assert record["status"] == "done", record["error"]
    assert record["settings"]["loss"] == "mse"
    assert record["metrics"]["accuracy"] == [] and record["metrics"]["test_accuracy"] == []
    assert record["metrics"]["test_loss"][-1] < record["metrics"]["test_loss"][0]
    view = client.get(f"/api/jobs/{job}", params={"view": True}).json()["view"]
    assert view["kind"] == "fit" and len(view["prediction"]) == len(view["x"])


def test_a_batched_library_module_with_one_output_per_class_gets_softmax(client):
    # The seed's Linear takes a batch: trained as it is, no vmap.
    linear = build(client, "library.Linear", {"in_dim": 2, "out_dim": 2})
    record = wait_for_job(
        client,
        client.post(
            f"/api/modules/{linear}/train",
            json={"dataset": {**CIRCLE, "name": "two_gaussians"}, "steps": 200},
        ).json()["job"],
    )
    assert record["status"] == "done", record["error"]
    assert record["settings"]["loss"] == "softmax_cross_entropy"
    assert record["metrics"]["test_accuracy"][-1] >= 0.9


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"learning_rate": 0}, "greater than 0"),
        ({"steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"dataset": "moons"}, "dataset"),
        ({"dataset": {"name": "circle", "noise": -1}}, "noise"),
        ({"dataset": {"name": "circle", "num_examples": 10**6}}, "max_dataset_rows"),
        ({"steps": 10**6}, "max_train_steps"),
        ({"steps": 10, "epochs": 2}, "not both"),
        ({"surprise": 1}, "surprise"),
        ({"loss": "hinge"}, "loss"),
        ({"dataset": "sine"}, "inputs of shape (1,), but the module takes inputs of shape (2,)"),
        ({"dataset": "prototypes"}, "(100,)"),
        ({"dataset": "circle", "loss": "softmax_cross_entropy"}, "one output per class"),
        ({"weight_decay": 0.1}, "adamw"),
        ({"dataset": {"csv_id": "missing"}}, "No uploaded CSV"),
        ({"watch_seconds": -1}, "watch_seconds"),
        ({"watch_seconds": 61}, "watch_seconds"),
    ],
)
def test_bad_settings_are_422_with_a_message(client, mlp, body, words):
    response = client.post(f"/api/modules/{mlp}/train", json=body)
    assert response.status_code in (422, 404), response.text
    assert response.status_code == (404 if "csv_id" in json.dumps(body) else 422)
    assert words in response.json()["message"]


def test_datasets_that_do_not_fit_name_both_shapes(client):
    wide = build(client, "eqx.nn.MLP", {**MLP, "in_size": 3})
    response = client.post(f"/api/modules/{wide}/train", json={"dataset": "circle"})
    assert response.status_code == 422
    assert "(2,)" in response.json()["message"] and "(3,)" in response.json()["message"]
    three = build(client, "eqx.nn.MLP", {**MLP, "out_size": 3})
    response = client.post(f"/api/modules/{three}/train", json={"dataset": "circle"})
    assert response.status_code == 422
    assert "(3,)" in response.json()["message"] and "2 classes" in response.json()["message"]
    response = client.post(
        f"/api/modules/{three}/train", json={"dataset": "sine", "loss": "logistic"}
    )
    assert response.status_code == 422
    network = build(client, "library.network")
    for body, words in [
        ({"dataset": "circle"}, "output slot has shape (10,)"),
        ({"steps": 10}, "epochs"),
        ({"epochs": 10**4}, "max_train_epochs"),
        ({"loss": "mse"}, "local"),
        ({"dataset": "sine"}, "regression"),
    ]:
        response = client.post(f"/api/modules/{network}/train", json=body)
        assert response.status_code == 422, body
        assert words in response.json()["message"], response.json()
    embedding = build(client, "eqx.nn.Embedding")
    response = client.post(f"/api/modules/{embedding}/train", json={"dataset": "circle"})
    assert response.status_code == 422 and "int32" in response.json()["message"]
    frozen = build(client, "library.Ferromagnetic", {"features": 2})
    response = client.post(f"/api/modules/{frozen}/train", json={"dataset": "circle"})
    assert response.status_code == 422 and "nothing to train" in response.json()["message"]


def test_a_custom_module_with_a_batch_in_its_example_shape_trains_per_example(client):
    fields = [
        {"name": "weight", "role": "param", "shape": [2, 1], "init": "normal"},
        {"name": "bias", "role": "param", "shape": [1], "init": "zeros"},
        {"name": "scale", "role": "buffer", "shape": [1], "init": "ones"},
    ]
    params = {"name": "Logit", "seed": 0, "call": "(x @ weight + bias) * scale", "fields": fields}
    module = build(client, "custom", params)
    response = client.post(
        f"/api/modules/{module}/train",
        json={"dataset": {**CIRCLE, "name": "two_gaussians"}, "steps": 100},
    )
    assert response.status_code == 202, response.text
    record = wait_for_job(client, response.json()["job"])
    assert record["status"] == "done" and record["settings"]["loss"] == "logistic"
    assert record["metrics"]["test_accuracy"][-1] >= 0.9
    moved = {row["path"]: row for row in record["diff"]["leaves"]}
    assert moved[".weight"]["change"] > 0 and moved[".scale"]["change"] == 0
    assert moved[".scale"]["trained"] is False


def test_the_training_panel_renders(client, mlp):
    response = client.get(f"/m/{mlp}/train-panel")
    assert response.status_code == 200
    assert 'id="train-form"' in response.text and "circle" in response.text
    form = {
        "dataset": "circle",
        "noise": "0.05",
        "num_examples": "400",
        "steps": "20",
        "learning_rate": "0.01",
        "batch_size": "32",
    }
    response = client.post(f"/m/{mlp}/train", data=form)
    assert response.status_code == 200
    assert "<progress" in response.text and 'for="train-progress-bar"' in response.text
    job = response.text.split(f'hx-get="/m/{mlp}/jobs/')[1].split("/")[0]
    assert f'data-frames-url="/m/{mlp}/jobs/{job}/frames"' in response.text
    wait_for_job(client, job)
    fragment = client.get(f"/m/{mlp}/jobs/{job}/progress").text
    assert (  # an ended job's fragment follows no frames
        "How far each leaf moved" in fragment
        and "data-frames-url" not in fragment.split('id="train-progress"')[1].split(">")[0]
    )
    other = build(client, "eqx.nn.MLP", MLP)  # a job is reached under its own module only
    assert client.get(f"/m/{other}/jobs/{job}/progress").status_code == 404
    assert client.post(f"/m/{other}/jobs/{job}/stop").status_code == 404
    bad = client.post(
        f"/m/{mlp}/train",
        data={**form, "learning_rate": "-1"},
        headers={"HX-Request": "true"},
    )
    assert bad.status_code == 422 and "learning_rate" in bad.text
