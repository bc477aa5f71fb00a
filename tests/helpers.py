"""What the tests and the benchmarks share: the seed's module and run, building and running a
module through the API, the reference network, and a live uvicorn server on a free port.

The tests import it as ``helpers`` (pytest puts ``tests/`` on ``sys.path``); a benchmark puts
``tests/`` on ``sys.path`` itself, so it still runs on its own (see ``bench/run_overhead.py``).
It imports nothing of the test fixtures, so importing it never starts anything.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import httpx
import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent

LINEAR = {"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3, "seed": 0}}
"""The seed's example, ``Linear(2, 3, jax.random.PRNGKey(0))``, as a module spec."""

SEED_RUN = {
    "function": "loss",
    "loss": "mean(out)",
    "wrt": "params",
    "transforms": ["grad"],
    "input": {"shape": [5, 2], "init": "ones"},
}
"""``grad`` of ``mean(out)`` of the seed's Linear on ones of shape (5, 2): a third everywhere."""


# The API -----------------------------------------------------------------------------------------


def post_json(client, path: str, body: Any) -> tuple[int, str]:
    """POST ``body`` as JSON with a ``TestClient``, or through a Playwright page's request
    context (which shares the page's cookie, so its workspace); ``(status, text)``."""
    if hasattr(client, "goto"):  # a Playwright page
        response = client.request.post(path, data=body)
        return response.status, response.text()
    response = client.post(path, json=body)
    return response.status_code, response.text


def create(client, spec: dict = LINEAR) -> dict:
    """Create the module ``spec`` (``{"kind": ..., "params": ...}``); the API's answer."""
    status, text = post_json(client, "/api/modules", spec)
    assert status == 201, text
    return json.loads(text)


def build(client, kind: str = "library.Linear", params: dict | None = None, **more) -> str:
    """Create a module of ``kind`` with ``params`` (and keyword ``more``); its id.

    ``build(client)`` is the seed's Linear; ``build(client, **spec)`` takes a spec dict.
    """
    return create(client, {"kind": kind, "params": {**(params or {}), **more}})["id"]


def run(client, module_id: str, status: int = 200, **body) -> dict:
    """``POST /api/modules/{id}/run`` with ``body``; the answer, asserting its ``status``."""
    code, text = post_json(client, f"/api/modules/{module_id}/run", body)
    assert code == status, text
    return json.loads(text)


def leaf(client, module_id: str, path: str) -> np.ndarray:
    """The values of the leaf at ``path`` (e.g. ``".weight"``), whole (never cut), as float64."""
    response = client.get(f"/api/modules/{module_id}/leaf", params={"path": path})
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body["truncated"], f"{path} was cut: ask for a smaller leaf"
    return np.asarray(body["values"], np.float64)


def job_ended(record: dict) -> bool:
    """Whether a training job's record is final (done, failed or stopped)."""
    return record["status"] in ("done", "failed", "stopped")


def wait_for_job(client, job: str, until=job_ended, timeout: float = 90.0) -> dict:
    """Poll ``GET /api/jobs/{job}`` until ``until(record)`` holds (by default: the job ended);
    the record. Fails, naming the job's status and step, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/api/jobs/{job}").json()
        if until(record):
            return record
        assert time.monotonic() < deadline, f"job {job}: {record['status']} at {record['step']}"
        time.sleep(0.05)


# The library ------------------------------------------------------------------------------------


class SeedLinear(eqx.Module):
    """The seed's own class, verbatim (``library.Linear`` must give the same numbers)."""

    weight: jax.Array
    bias: jax.Array

    def __init__(self, in_dim, out_dim, key):
        wkey, bkey = jax.random.split(key)
        self.weight = jax.random.normal(wkey, (in_dim, out_dim))
        self.bias = jax.random.normal(bkey, (out_dim,))

    def __call__(self, x):
        return x @ self.weight + self.bias


def reference_network(key, dim: int = 100, hidden: int = 256, classes: int = 10):
    """The wiring of the reference task (docs/library.md), built with the library directly."""
    from library import (
        FrozenFullyConnected,
        FullyConnected,
        LayerMap,
        OutputLayer,
        RecurrentDiscrete,
        SequentialOrchestrator,
    )

    k = jax.random.split(key, 4)
    return SequentialOrchestrator(
        LayerMap.from_dict(
            {
                1: {
                    0: FullyConnected(dim, hidden, 1.0, 3.5, k[0]),
                    1: RecurrentDiscrete(hidden, 0.5, 0.5, k[1]),
                    2: FrozenFullyConnected(classes, hidden, 0.3, 0.0, k[2]),
                },
                2: {1: FullyConnected(hidden, classes, 1.0, 3.5, k[3]), 2: OutputLayer()},
            }
        )
    )


# Servers ----------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A uvicorn server for ``app`` on 127.0.0.1, in a background thread of this process,
    configured as ``python -m app`` configures its own (``app.serving.server_options``) when
    ``app`` is the playground.

    ``with LiveServer(app) as server:`` waits (30 s at most) until it listens at ``server.url``.
    """

    def __init__(self, app):
        import uvicorn

        from app.serving import server_options

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options = server_options(app.settings) if hasattr(app, "settings") else {}
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, **options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the live server did not start in 30 s")
            if not self.thread.is_alive():
                raise RuntimeError("the live server stopped while starting (see its log above)")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_process(**settings: str) -> tuple[subprocess.Popen, str]:
    """A real ``python -m app`` on a free port of 127.0.0.1 with only ``settings`` among the
    ``PLAYGROUND_*`` variables (``data_dir="..."`` is ``PLAYGROUND_DATA_DIR``); answers the
    process and its base URL once ``/api/health`` answers 200 (60 s at most)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_")}
    env.update({f"PLAYGROUND_{name.upper()}": value for name, value in settings.items()})
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not start in 60 s")
