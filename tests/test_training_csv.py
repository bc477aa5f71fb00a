"""Uploaded CSV datasets: every check names the line and the column; uploads persist."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from helpers import wait_for_job

from app.main import create_app
from app.settings import Settings
from app.training.datasets import MAX_CSV_COLUMNS
from app.workspaces import COOKIE_NAME

MAX_ROWS = 60


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_dataset_rows=MAX_ROWS)


def upload(client: TestClient, text: str | bytes, name: str = "data.csv"):
    content = text.encode() if isinstance(text, str) else text
    return client.post("/api/datasets/csv", files={"file": (name, content, "text/csv")})


def rows(count: int, header: str = "x1,x2,label\n") -> str:
    lines = [f"{(i % 7) / 7:.3f},{(i % 5) / 5:.3f},{i % 2}" for i in range(count)]
    return header + "\n".join(lines) + "\n"


def test_a_good_file_is_stored_and_trains(client):
    response = upload(client, rows(40))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["rows"] == 40 and body["columns"] == 3
    assert body["names"] == ["x1", "x2", "label"]
    assert body["task"] == "classification" and body["num_classes"] == 2
    listed = client.get("/api/datasets").json()
    assert [u["csv_id"] for u in listed["uploaded"]] == [body["csv_id"]]
    assert {d["name"] for d in listed["generated"]} >= {"circle", "xor", "spiral", "sine"}

    module = client.post(
        "/api/modules", json={"kind": "eqx.nn.MLP", "params": {"in_size": 2, "out_size": 1}}
    ).json()["id"]
    job = client.post(
        f"/api/modules/{module}/train",
        json={"dataset": {"csv_id": body["csv_id"], "test_fraction": 0.25}, "steps": 10},
    )
    assert job.status_code == 202, job.text
    assert job.json()["dataset"]["train"] == 30 and job.json()["dataset"]["test"] == 10
    wait_for_job(client, job.json()["job"])


def test_no_header_semicolons_and_regression(client):
    text = "\n".join(f"{i};{i * 0.5 + 0.25}" for i in range(10))
    body = upload(client, text).json()
    assert body["rows"] == 10 and body["names"] == ["x1", "target"]
    assert body["task"] == "regression"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "a,b,y\n1,2,0\n3,abc,1\n5,6,0\n7,8,1\n",
            ["line 3, column 2 (b)", "'abc'", "not a number"],
        ),
        ("a,b,y\n1,2,0\n3,NaN,1\n5,6,0\n7,8,1\n", ["line 3, column 2 (b)", "NaN"]),
        ("a,b,y\n1,2,0\n3,4,1\n5,inf,0\n7,8,1\n", ["line 4, column 2", "infinite"]),
        ("a,b,y\n1,2,0\n3,,1\n5,6,0\n7,8,1\n", ["line 3, column 2 (b)", "empty"]),
        ("a,b,y\n1,2,0\n3,4\n5,6,0\n7,8,1\n", ["line 3 has 2 values", "header has 3 columns"]),
        ("1,2,0\n3,4,1\n5,6,0,9\n7,8,1\n", ["line 3 has 4 values", "line 1 has 3 columns"]),
        ("y\n1\n2\n3\n4\n5\n", ["at least 2 columns"]),
        ("a,y\n1,0\n2,1\n", ["2 rows of data", "at least 4"]),
        ("", ["empty"]),
        ("a,b,y\n1,2,1e999\n3,4,1\n5,6,0\n7,8,1\n", ["line 2, column 3 (y)", "too large"]),
    ],
)
def test_bad_files_are_422_naming_the_line_and_column(client, text, words):
    response = upload(client, text)
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    for word in words:
        assert word in message, message


def test_size_limits(client):
    too_many_rows = upload(client, rows(MAX_ROWS + 1))
    assert too_many_rows.status_code == 422
    assert "max_dataset_rows" in too_many_rows.json()["message"]
    assert f"{MAX_ROWS}" in too_many_rows.json()["message"]
    assert upload(client, rows(MAX_ROWS)).status_code == 201

    width = MAX_CSV_COLUMNS + 1
    wide = ",".join(str(i % 3) for i in range(width))
    too_wide = upload(client, "\n".join([wide] * 5))
    assert too_wide.status_code == 422
    assert f"{width} columns" in too_wide.json()["message"]
    assert f"limit is {MAX_CSV_COLUMNS}" in too_wide.json()["message"]

    not_text = upload(client, b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    assert not_text.status_code == 422 and "UTF-8" in not_text.json()["message"]


def test_the_target_decides_the_task_and_the_fit(client):
    # A two-feature file with 3 classes does not fit a one-output module: 422 naming both.
    text = "x1,x2,y\n" + "\n".join(f"{i % 4},{i % 3},{i % 3}" for i in range(12))
    body = upload(client, text).json()
    assert body["num_classes"] == 3
    module = client.post(
        "/api/modules", json={"kind": "eqx.nn.MLP", "params": {"in_size": 2, "out_size": 1}}
    ).json()["id"]
    response = client.post(
        f"/api/modules/{module}/train", json={"dataset": {"csv_id": body["csv_id"]}}
    )
    assert response.status_code == 422
    assert "3 classes" in response.json()["message"] and "(1,)" in response.json()["message"]
    forced = client.post(
        f"/api/modules/{module}/train",
        json={"dataset": {"csv_id": body["csv_id"], "task": "regression"}, "steps": 5},
    )
    assert forced.status_code == 202 and forced.json()["settings"]["loss"] == "mse"
    wait_for_job(client, forced.json()["job"])


def test_uploads_belong_to_the_workspace_and_survive_a_restart(client, app, settings):
    csv_id = upload(client, rows(20)).json()["csv_id"]
    with TestClient(app) as stranger:
        module = stranger.post(
            "/api/modules", json={"kind": "eqx.nn.MLP", "params": {"in_size": 2}}
        ).json()["id"]
        response = stranger.post(
            f"/api/modules/{module}/train", json={"dataset": {"csv_id": csv_id}}
        )
        assert response.status_code == 404
        assert stranger.get("/api/datasets").json()["uploaded"] == []
    cookie = client.cookies.get(COOKIE_NAME)
    with TestClient(create_app(settings)) as again:
        again.cookies.set(COOKIE_NAME, cookie)
        assert [u["csv_id"] for u in again.get("/api/datasets").json()["uploaded"]] == [csv_id]


def test_upload_from_the_page_refreshes_the_dataset_picker(client):
    module = client.post("/api/modules", json={"kind": "eqx.nn.MLP"}).json()["id"]
    response = client.post(
        f"/m/{module}/datasets/csv",
        files={"file": ("mine.csv", rows(12).encode(), "text/csv")},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert "mine.csv" in response.text and 'hx-swap-oob="true"' in response.text
    csv_id = response.text.split('value="csv:')[1].split('"')[0]
    assert f'value="csv:{csv_id}" selected' in response.text
    bad = client.post(
        f"/m/{module}/datasets/csv",
        files={"file": ("bad.csv", b"a,b\n1,x\n", "text/csv")},
        headers={"HX-Request": "true"},
    )
    assert bad.status_code == 422 and "not a number" in bad.text
