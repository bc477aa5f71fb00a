"""Workspaces: an HttpOnly SameSite cookie with an unguessable id; nobody reaches another
workspace's modules (404 everywhere); modules and their trained parameters are persisted, so a
new app on the same data directory (a restart) serves the same modules and links."""

from __future__ import annotations

import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import LINEAR, SEED_RUN

from app.main import create_app
from app.workspaces import COOKIE_NAME


def new_client(app) -> TestClient:
    return TestClient(app, base_url="http://testserver")


def test_the_cookie_is_httponly_samesite_and_unguessable(client):
    response = client.get("/api/health")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", value)  # 24 random bytes
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path", "max-age", "samesite"} <= attributes
    assert "samesite=lax" in cookie.lower()
    assert "secure" not in attributes
    # once set, it is not set again
    assert "set-cookie" not in client.get("/api/health").headers


def test_every_browser_gets_its_own_workspace(app):
    ids = set()
    for _ in range(20):
        with new_client(app) as fresh:
            ids.add(fresh.get("/api/health").cookies[COOKIE_NAME])
    assert len(ids) == 20


def test_a_forged_or_malformed_cookie_gets_a_new_workspace(app):
    with new_client(app) as fresh:
        for bad in ("../../etc", "a" * 31, "a" * 33, "x;y", "%C3%A9" * 8, "a" * 31 + "."):
            fresh.cookies.clear()
            response = fresh.get("/api/health", headers={"Cookie": f"{COOKIE_NAME}={bad}"})
            assert response.status_code == 200
            issued = response.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
            assert issued != bad and len(issued) == 32


def test_secure_cookie_when_configured(tmp_path):
    from app.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "d", cookie_secure=True))
    with new_client(app) as fresh:
        assert "; Secure" in fresh.get("/api/health").headers["set-cookie"]


@pytest.fixture
def two_users(app):
    with new_client(app) as alice, new_client(app) as bob:
        yield alice, bob


def test_nobody_reaches_another_workspace_s_module(two_users):
    alice, bob = two_users
    created = alice.post("/api/modules", json=LINEAR)
    assert created.status_code == 201, created.text
    module = created.json()["id"]
    assert alice.get(f"/api/modules/{module}").status_code == 200
    attempts = {
        "read": bob.get(f"/api/modules/{module}"),
        "leaf": bob.get(f"/api/modules/{module}/leaf", params={"path": ".weight"}),
        "run": bob.post(f"/api/modules/{module}/run", json=SEED_RUN),
        "train": bob.post(
            f"/api/modules/{module}/train",
            json={"dataset": "circle", "optimizer": "adam", "learning_rate": 0.01, "steps": 5},
        ),
        "share": bob.post(f"/api/modules/{module}/share"),
        "delete": bob.delete(f"/api/modules/{module}"),
    }
    for what, response in attempts.items():
        assert response.status_code == 404, (what, response.status_code, response.text)
        assert "weight" not in response.text.lower() or what == "leaf", what
    # the tree view is the module's answer; a page of the module also hides it
    page = bob.get(f"/m/{module}")
    assert page.status_code == 404, page.status_code
    assert bob.post(f"/m/{module}/delete", headers={"Origin": "http://testserver"}).status_code in (
        404,
        405,
    )
    # and alice's module is untouched
    after = alice.get(f"/api/modules/{module}")
    assert after.status_code == 200
    assert after.json()["tree"] == created.json()["tree"]


def test_a_workspace_lists_only_its_own_modules(two_users):
    alice, bob = two_users
    a = alice.post("/api/modules", json=LINEAR).json()["id"]
    b = bob.post("/api/modules", json=LINEAR).json()["id"]
    assert a != b
    listing = alice.get("/api/modules")
    if listing.status_code == 200:
        ids = {m["id"] for m in listing.json()}
        assert a in ids and b not in ids


def test_modules_and_trained_parameters_survive_a_restart(settings):
    app = create_app(settings)
    with new_client(app) as user:
        module = user.post("/api/modules", json=LINEAR).json()["id"]
        cookie = user.cookies[COOKIE_NAME]
        # train it (or, without the training part, store changed parameters as a job would)
        services = app.state.services
        record = services.store.get(cookie, module)
        model = services.store.load(record)
        import jax

        changed = jax.tree_util.tree_map(lambda a: a * 2 + 1, model)
        services.store.set_leaves(record, changed)
        before = user.get(f"/api/modules/{module}/leaf", params={"path": ".weight"}).json()
        share = user.post(f"/api/modules/{module}/share").json()
    services.engine.dispose()

    restarted = create_app(settings)
    with new_client(restarted) as user:
        user.cookies.set(COOKIE_NAME, cookie)
        again = user.get(f"/api/modules/{module}")
        assert again.status_code == 200, again.text
        after = user.get(f"/api/modules/{module}/leaf", params={"path": ".weight"}).json()
        assert after["values"] == before["values"]
        np.testing.assert_array_equal(
            np.asarray(after["values"], np.float32),
            np.asarray(changed.weight, np.float32),
        )
        shared = user.get(f"/api/shared/{share['share_id']}")
        assert shared.status_code == 200
        assert shared.json()["leaves"][".weight"] == before["values"]


def test_a_record_leaves_the_parameters_in_the_database_until_a_build_needs_them(settings):
    import dataclasses

    import jax

    from app.errors import PlaygroundError

    app = create_app(settings)
    with new_client(app) as user:
        module = user.post("/api/modules", json=LINEAR).json()["id"]
        workspace = user.cookies[COOKIE_NAME]
        store = app.state.services.store
        record = store.get(workspace, module)
        assert record.trained is False and record.revision == 0
        assert "leaves" not in {field.name for field in dataclasses.fields(record)}
        model = store.load(record)
        changed = jax.tree_util.tree_map(lambda a: a * 3 - 1, model)
        updated = store.set_leaves(record, changed)
        assert updated.trained is True and updated.revision == 1
        assert [r.trained for r in store.list(workspace) if r.id == module] == [True]
        np.testing.assert_array_equal(
            np.asarray(store.load(updated).weight), np.asarray(model.weight) * 3 - 1
        )
        # a record read before newer parameters were stored is refused, not built from them
        store.set_leaves(updated, model)
        store.forget_built(module)
        with pytest.raises(PlaygroundError) as refused:
            store.load(updated)
        assert refused.value.status_code == 409 and "changed" in refused.value.message


def test_nobody_reaches_another_workspace_s_jobs_or_uploads(two_users):
    alice, bob = two_users
    mlp = {"kind": "eqx.nn.MLP", "params": {"in_size": 2, "out_size": 1, "width_size": 4}}
    module = alice.post("/api/modules", json=mlp).json()["id"]
    job = alice.post(
        f"/api/modules/{module}/train", json={"dataset": "circle", "steps": 5, "batch_size": 8}
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["job"]
    assert alice.get(f"/api/jobs/{job_id}").status_code == 200
    assert bob.get(f"/api/jobs/{job_id}").status_code == 404
    assert bob.get(f"/api/jobs/{job_id}/events").status_code == 404
    assert bob.post(f"/api/jobs/{job_id}/stop").status_code == 404
    assert bob.get(f"/api/modules/{module}/jobs").status_code == 404

    csv = b"a,b,y\n" + b"0,0,0\n1,1,1\n0,1,1\n1,0,0\n" * 5
    upload = alice.post("/api/datasets/csv", files={"file": ("d.csv", csv, "text/csv")})
    assert upload.status_code == 201, upload.text
    csv_id = upload.json()["csv_id"]
    mine = bob.post("/api/modules", json=mlp).json()["id"]
    theirs = bob.post(
        f"/api/modules/{mine}/train", json={"dataset": {"csv_id": csv_id}, "steps": 5}
    )
    assert theirs.status_code in (404, 422), theirs.text
    assert csv_id not in theirs.text or "no" in theirs.text.lower()
