"""Training you can play: pause, resume, one step, reset, through the JSON API.

The numbers are checked against Optax called directly: one step of the job equals one
``optax.adam`` update of the same batch, and after a reset the module's parameters are its
initial ones bit for bit.
"""

from __future__ import annotations

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fastapi.testclient import TestClient
from helpers import build, job_ended, wait_for_job

from app.main import create_app
from app.settings import Settings
from app.training.datasets import GeneratedDataset, generate
from app.workspaces import COOKIE_NAME

MLP = {"in_size": 2, "out_size": 1, "width_size": 16, "depth": 2, "activation": "tanh"}
CIRCLE = {"name": "circle", "noise": 0.05, "num_examples": 400}
LEAVES = [f".layers[{i}].{name}" for i in range(3) for name in ("weight", "bias")]


def leaves(client: TestClient, module: str) -> dict[str, np.ndarray]:
    """The module's parameters as float32 (the API writes each float32 in its shortest form,
    which reads back exactly)."""
    out = {}
    for path in LEAVES:
        response = client.get(f"/api/modules/{module}/leaf", params={"path": path})
        assert response.status_code == 200, response.text
        out[path] = np.asarray(response.json()["values"], np.float32)
    return out


def forward(params: dict, x: jax.Array) -> jax.Array:
    """The 2-16-16-1 tanh MLP written out (eqx.nn.Linear: weight @ x + bias)."""
    h = x
    for i in range(3):
        h = h @ params[f".layers[{i}].weight"].T + params[f".layers[{i}].bias"]
        if i < 2:
            h = jnp.tanh(h)
    return h[:, 0]


def test_one_step_is_one_optax_update_and_reset_restores_the_initial_parameters(client):
    module = build(client, "eqx.nn.MLP", MLP)
    initial = leaves(client, module)
    body = {"dataset": CIRCLE, "steps": 500, "paused": True, "seed": 3}
    response = client.post(f"/api/modules/{module}/train", json=body)
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    paused = wait_for_job(client, job, lambda r: r["status"] == "paused")
    assert paused["step"] == 0 and paused["paused"]

    stepped = client.post(f"/api/jobs/{job}/step")
    assert stepped.status_code == 200, stepped.text
    record = stepped.json()
    assert record["status"] == "paused" and record["step"] == 1
    assert len(record["metrics"]["loss"]) == 1  # a single step shows at once
    assert record["epoch"] == pytest.approx(32 / 320, abs=1e-4)

    client.post(f"/api/jobs/{job}/stop")
    record = wait_for_job(client, job, job_ended)
    assert record["status"] == "stopped" and record["step"] == 1
    after = leaves(client, module)

    # The same step computed directly: the job's first batch is the first 32 of the seed's
    # permutation of the training rows; the loss is logistic (one output, two classes).
    data = generate(GeneratedDataset(**CIRCLE), Settings())
    index = np.random.default_rng(3).permutation(len(data.x_train))[:32]
    x, y = jnp.asarray(data.x_train[index]), jnp.asarray(data.y_train[index], jnp.float32)
    params = {path: jnp.asarray(value) for path, value in initial.items()}

    def loss(p):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(forward(p, x), y))

    assert float(loss(params)) == pytest.approx(record["metrics"]["loss"][0], rel=1e-5)
    adam = optax.adam(0.01)
    updates, _ = adam.update(jax.grad(loss)(params), adam.init(params), params)
    expected = optax.apply_updates(params, updates)
    for path in LEAVES:
        assert not np.array_equal(after[path], initial[path])
        np.testing.assert_allclose(after[path], np.asarray(expected[path]), rtol=1e-5, atol=1e-6)

    reset = client.post(f"/api/modules/{module}/reset")
    assert reset.status_code == 200, reset.text
    assert reset.json()["trained"] is False
    restored = leaves(client, module)
    for path in LEAVES:
        assert np.array_equal(restored[path], initial[path]), path
    # ... and so does the module the server builds (bit for bit, before any JSON)
    services = client.app.state.services
    record = services.store.get(client.cookies[COOKIE_NAME], module)
    built = record.spec().build()
    for a, b in zip(
        jax.tree.leaves(services.store.load(record)), jax.tree.leaves(built), strict=True
    ):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_pause_holds_the_step_and_resume_goes_on(client):
    module = build(client, "eqx.nn.MLP", MLP)
    body = {"dataset": CIRCLE, "steps": 4000, "watch_seconds": 20}
    job = client.post(f"/api/modules/{module}/train", json=body).json()["job"]
    wait_for_job(client, job, lambda r: r["step"] > 0)
    response = client.post(f"/api/jobs/{job}/pause")
    assert response.status_code == 200, response.text
    assert response.json()["pause_requested"]
    paused = wait_for_job(client, job, lambda r: r["status"] == "paused")
    time.sleep(0.4)
    still = client.get(f"/api/jobs/{job}").json()
    assert still["status"] == "paused" and still["step"] == paused["step"]
    # the counters: steps and (fractional) epochs
    assert still["epoch"] == pytest.approx(still["step"] * 32 / 320, abs=1e-3)

    one = client.post(f"/api/jobs/{job}/step").json()
    assert one["step"] == paused["step"] + 1 and one["status"] == "paused"

    assert client.post(f"/api/jobs/{job}/resume").json()["pause_requested"] is False
    wait_for_job(client, job, lambda r: r["status"] == "running" and r["step"] > one["step"] + 2)
    client.post(f"/api/jobs/{job}/stop")
    record = wait_for_job(client, job, job_ended)
    assert record["status"] == "stopped"
    # a job that job_ended cannot be paused, resumed or stepped: 409 in words
    for action in ("pause", "resume", "step"):
        late = client.post(f"/api/jobs/{job}/{action}")
        assert late.status_code == 409, late.text
        assert "ended" in late.json()["message"]


def test_a_paused_job_holds_no_worker(tmp_path):
    """With one worker thread, a second workspace's job runs while the first one is paused."""
    settings = Settings(data_dir=tmp_path, max_concurrent_computations=2)
    app = create_app(settings)
    with TestClient(app) as first, TestClient(app) as second:
        a, b = build(first, "eqx.nn.MLP", MLP), build(second, "eqx.nn.MLP", MLP)
        paused = first.post(
            f"/api/modules/{a}/train", json={"dataset": CIRCLE, "steps": 100, "paused": True}
        ).json()["job"]
        wait_for_job(first, paused, lambda r: r["status"] == "paused")
        other = second.post(f"/api/modules/{b}/train", json={"dataset": CIRCLE, "steps": 30})
        record = wait_for_job(second, other.json()["job"], job_ended)
        assert record["status"] == "done"
        assert first.get(f"/api/jobs/{paused}").json()["status"] == "paused"
        # stopping a paused job saves what it learnt (here: nothing yet, so nothing changes)
        first.post(f"/api/jobs/{paused}/stop")
        assert wait_for_job(first, paused, job_ended)["status"] == "stopped"


def test_reset_while_a_job_runs_discards_its_result(client):
    module = build(client, "eqx.nn.MLP", MLP)
    initial = leaves(client, module)
    job = client.post(
        f"/api/modules/{module}/train",
        json={"dataset": CIRCLE, "steps": 4000, "watch_seconds": 20},
    ).json()["job"]
    wait_for_job(client, job, lambda r: r["step"] > 3)
    assert client.post(f"/api/modules/{module}/reset").status_code == 200
    record = wait_for_job(client, job, job_ended)
    assert record["status"] == "stopped"
    assert "reset" in record["note"] and record["revision"] is None
    restored = leaves(client, module)
    for path in LEAVES:
        assert np.array_equal(restored[path], initial[path]), path


def test_play_api_errors_name_the_problem(client):
    assert client.post("/api/jobs/nojob/pause").status_code == 404
    assert client.post("/api/jobs/nojob/step").status_code == 404
    assert client.post("/api/modules/nomodule/reset").status_code == 404


def test_a_job_paused_too_long_is_stopped(tmp_path):
    settings = Settings(data_dir=tmp_path, max_paused_seconds=0.2)
    with TestClient(create_app(settings)) as client:
        module = build(client, "eqx.nn.MLP", MLP)
        job = client.post(
            f"/api/modules/{module}/train", json={"dataset": CIRCLE, "steps": 50, "paused": True}
        ).json()["job"]
        wait_for_job(client, job, lambda r: r["status"] == "paused")
        time.sleep(0.3)
        client.get(f"/api/modules/{module}/jobs")  # any look at the jobs expires old pauses
        record = wait_for_job(client, job, job_ended)
        assert record["status"] == "stopped" and "max_paused_seconds" in record["note"]


def stop_buttons(html: str) -> list[str]:
    """The stop controls of a page or fragment: the text of each button that posts to a job's
    ``/stop``."""
    buttons = re.findall(r"<button\b([^>]*)>(.*?)</button>", html, re.S)
    return [text.strip() for attrs, text in buttons if re.search(r'hx-post="[^"]*/stop\b', attrs)]


def test_a_running_job_has_one_stop_control_on_the_module_page_and_one_in_a_lesson(client):
    """The module page: the form's Train button is the job's Stop, the progress box has none
    (its fragments, asked for with ?form=1, bring the form's buttons along); a lesson's box,
    with no form beside it, has its own. The page's controls keep the form's mode."""
    module = build(client, "eqx.nn.MLP", MLP)
    body = {"dataset": CIRCLE, "steps": 4000, "watch_seconds": 60, "paused": True}
    job = client.post(f"/api/modules/{module}/train", json=body).json()["job"]
    wait_for_job(client, job, lambda r: r["status"] == "paused")

    panel = client.get(f"/m/{module}/train-panel").text
    assert stop_buttons(panel) == ["Stop"]
    assert 'id="train-stop-job"' in panel and 'id="train-start"' not in panel
    assert f'hx-get="/m/{module}/jobs/{job}/progress?form=1"' in panel

    base = f"/m/{module}/jobs/{job}"
    fragments = [
        client.get(f"{base}/progress", params={"form": 1}).text,
        client.post(f"{base}/resume?form=1").text,
        client.post(f"{base}/pause?form=1").text,
    ]
    held = wait_for_job(client, job, lambda r: r["status"] == "paused")["step"]
    fragments.append(client.post(f"{base}/step?form=1").text)
    for fragment in fragments:
        assert stop_buttons(fragment) == ["Stop"]  # the form's, out of band
        assert 'id="train-actions" class="form-actions" hx-swap-oob="true"' in fragment
        assert f'hx-post="{base}/step?form=1"' in fragment
    assert client.get(f"/api/jobs/{job}").json()["step"] == held + 1  # the page's Step stepped

    lesson = client.get(f"{base}/progress").text  # a lesson's box: its own Stop, no form
    assert stop_buttons(lesson) == ["Stop training"]
    assert "hx-swap-oob" not in lesson and "?form=1" not in lesson

    stopped = client.post(f"{base}/stop?form=1").text  # the form's Stop
    record = wait_for_job(client, job, job_ended)
    assert record["status"] == "stopped" and record["step"] == held + 1
    if 'data-status="stopped"' in stopped:  # ended at once: Train is back, and has the focus
        assert stop_buttons(stopped) == [] and 'data-focus="train-start"' in stopped
    else:  # stopping: the focus stays on Stop
        assert stop_buttons(stopped) == ["Stop"] and 'data-focus="train-stop-job"' in stopped
    after = client.get(f"/m/{module}/train-panel").text
    assert stop_buttons(after) == [] and 'id="train-start"' in after
