"""schemathesis generates requests from ``/openapi.json`` (valid and invalid ones) for every
operation of the API and checks that none gets a 5xx.

The examples are bounded (``MAX_EXAMPLES`` per operation) and the app runs with small limits so
that the valid requests stay cheap; path parameters that name a module or a share are pointed
at real ones, so the requests reach past the 404.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings

from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.slow  # end to end: generated requests against the whole API

MAX_EXAMPLES = 10
MAX_EXAMPLES_COMPUTING = 5
"""For the operations that compile or compute (run, sweep, train, dynamics)."""
COMPUTING = r"/(run|sweep|train|dynamics)$"

_data = Path(tempfile.mkdtemp(prefix="playground-schemathesis-"))
atexit.register(shutil.rmtree, _data, True)
app = create_app(
    Settings(
        data_dir=_data / "data",
        max_module_params=50_000,
        max_array_elements=20_000,
        max_input_elements=2_000,
        max_run_flops=1e8,
        max_train_steps=20,
        max_train_epochs=2,
        max_dataset_rows=300,
        max_jobs_per_workspace=1,
        compute_wait_seconds=2,
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)

_client = TestClient(app)
_client.__enter__()  # the app's lifespan: its services for every call schemathesis makes
atexit.register(_client.__exit__, None, None, None)
_module = _client.post(
    "/api/modules", json={"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3}}
).json()["id"]
_share = _client.post(f"/api/modules/{_module}/share").json()["share_id"]
_cookie = dict(_client.cookies)


def check(case) -> None:
    parameters = case.path_parameters or {}
    if "module_id" in parameters and case.method.upper() != "DELETE":
        parameters["module_id"] = _module
    if "share_id" in parameters:
        parameters["share_id"] = _share
    if case.path.endswith("/events"):
        case.path_parameters["job_id"] = "no-such-job"  # a stream would wait for its job
    response = case.call(cookies=_cookie)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )


def bounded(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


@schema.exclude(path_regex=COMPUTING).parametrize()
@bounded(MAX_EXAMPLES)
def test_no_request_gets_a_server_error(case):
    check(case)


@schema.include(path_regex=COMPUTING).parametrize()
@bounded(MAX_EXAMPLES_COMPUTING)
def test_no_computing_request_gets_a_server_error(case):
    check(case)
