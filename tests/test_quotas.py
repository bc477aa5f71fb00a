"""Storage quotas, content-addressed snapshots, deleting and cleaning workspaces, and count
limits that hold exactly under concurrent requests.

The tests take the ``settings`` fixture, so ``tests/test_postgres.py`` runs those it imports a
second time against PostgreSQL.
"""

from __future__ import annotations

import io
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import LINEAR
from sqlalchemy import func, select, text, update

from app.database import modules, shares, snapshots, workspaces
from app.main import create_app
from app.retention import IdleCleaner
from app.store import deserialise_leaves, serialise_leaves
from app.training.storage import MAX_CSV_PER_WORKSPACE
from app.workspaces import COOKIE_NAME

BIG = {"kind": "eqx.nn.Linear", "params": {"in_features": 1000, "out_features": 1000}}
MLP = {"kind": "eqx.nn.MLP", "params": {"in_size": 2, "out_size": 1, "width_size": 64}}
CONCURRENT = 80
SEEDS = itertools.count(int.from_bytes(os.urandom(3), "big"))


def unique_linear() -> dict:
    """A module whose parameters no other test holds (PostgreSQL's tests share a database)."""
    return {"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3, "seed": next(SEEDS)}}


def make_client(settings, **changes) -> TestClient:
    app = create_app(settings.model_copy(update=changes))
    return TestClient(app, base_url="http://testserver")


def new_user(client: TestClient) -> TestClient:
    """Another browser on the same app (its own cookie jar, so its own workspace)."""
    other = TestClient(client.app, base_url="http://testserver")
    other.get("/api/health")
    return other


def snapshot_rows(engine, digest: str | None = None) -> int:
    query = select(func.count()).select_from(snapshots)
    if digest is not None:
        query = query.where(snapshots.c.digest == digest)
    with engine.connect() as connection:
        return connection.execute(query).scalar_one()


def share_digest(engine, share_id: str) -> str:
    with engine.connect() as connection:
        return connection.execute(
            select(shares.c.snapshot).where(shares.c.id == share_id)
        ).scalar_one()


def sqlite_bytes(settings) -> int:
    """The SQLite database's size on disk, its write-ahead log folded in first."""
    path = settings.data_dir / "playground.db"
    import sqlite3

    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


# Content addressing ------------------------------------------------------------------------------


def test_identical_snapshots_are_stored_once(settings):
    with make_client(settings) as client:
        engine = client.app.state.services.engine
        module = client.post("/api/modules", json=unique_linear()).json()["id"]
        ids = [client.post(f"/api/modules/{module}/share").json()["share_id"] for _ in range(4)]
        digests = {share_digest(engine, share) for share in ids}
        assert len(digests) == 1
        digest = digests.pop()
        assert snapshot_rows(engine, digest) == 1
        forks = [client.post(f"/api/shared/{ids[0]}/fork").json()["id"] for _ in range(3)]
        other = new_user(client)
        forks.append(other.post(f"/api/shared/{ids[1]}/fork").json()["id"])
        with engine.connect() as connection:
            held = connection.execute(
                select(func.count()).select_from(modules).where(modules.c.snapshot == digest)
            ).scalar_one()
        assert held == 4 and snapshot_rows(engine, digest) == 1
        # the fork holds exactly the shared bytes
        store = client.app.state.services.store
        share = store.get_share(ids[0])
        fork = store.get(other.cookies[COOKIE_NAME], forks[-1])
        assert fork.trained
        assert serialise_leaves(store.load(fork)) == share.leaves
        # a fork that is trained gets its own parameters; the snapshot stays for the shares
        model = store.load(fork)
        changed = deserialise_leaves(share.leaves, model)
        store.set_leaves(fork, changed)
        assert snapshot_rows(engine, digest) == 1


def test_a_snapshot_no_share_or_fork_holds_is_deleted(settings):
    with make_client(settings) as client:
        engine = client.app.state.services.engine
        module = client.post("/api/modules", json=unique_linear()).json()["id"]
        share = client.post(f"/api/modules/{module}/share").json()["share_id"]
        digest = share_digest(engine, share)
        other = new_user(client)
        fork = other.post(f"/api/shared/{share}/fork").json()["id"]
        assert client.delete("/api/workspace").status_code == 200
        assert client.get(f"/api/shared/{share}").status_code == 404
        assert snapshot_rows(engine, digest) == 1  # the fork still holds it
        assert other.get(f"/api/modules/{fork}/leaf", params={"path": ".weight"}).status_code == 200
        assert other.delete(f"/api/modules/{fork}").status_code == 204
        assert snapshot_rows(engine, digest) == 0


def test_ten_shares_of_one_module_grow_the_database_by_one_copy(tmp_path, settings):
    if settings.database_url:
        pytest.skip("measures SQLite's file; PostgreSQL's content addressing is tested apart")
    with make_client(settings) as client:
        module = client.post("/api/modules", json=BIG).json()["id"]
        params_bytes = 1000 * 1000 * 4 + 1000 * 4
        before = sqlite_bytes(settings)
        for _ in range(10):
            assert client.post(f"/api/modules/{module}/share").status_code == 201
        grown = sqlite_bytes(settings) - before
        assert snapshot_rows(client.app.state.services.engine) == 1
    assert params_bytes <= grown <= params_bytes * 1.1 + 200_000, grown


# Quotas ---------------------------------------------------------------------------------------


def test_the_share_quota_answers_429_naming_it(settings):
    with make_client(settings, max_shares_per_workspace=3) as client:
        module = client.post("/api/modules", json=LINEAR).json()["id"]
        for _ in range(3):
            assert client.post(f"/api/modules/{module}/share").status_code == 201
        refused = client.post(f"/api/modules/{module}/share")
        assert refused.status_code == 429
        assert "max_shares_per_workspace" in refused.json()["message"]
        panel = client.post(f"/api/modules/{module}/share", headers={"HX-Request": "true"})
        assert panel.status_code == 429 and "max_shares_per_workspace" in panel.text
        # another workspace has its own quota
        other = new_user(client)
        theirs = other.post("/api/modules", json=LINEAR).json()["id"]
        assert other.post(f"/api/modules/{theirs}/share").status_code == 201


def test_the_stored_bytes_quota_answers_413_naming_it(settings):
    with make_client(settings) as client:
        store = client.app.state.services.store
        small = client.post("/api/modules", json=LINEAR).json()["id"]
        big = client.post("/api/modules", json=MLP).json()["id"]
        owner = new_user(client)
        theirs = owner.post("/api/modules", json=MLP).json()["id"]
        big_share = owner.post(f"/api/modules/{theirs}/share").json()["share_id"]
        small_size = len(
            serialise_leaves(store.load(store.get(client.cookies[COOKIE_NAME], small)))
        )
        assert len(store.get_share(big_share).leaves) > small_size + 100
        store.max_stored_bytes = small_size + 100  # room for the small module's snapshot only

        share = client.post(f"/api/modules/{small}/share")
        assert share.status_code == 201
        refused = client.post(f"/api/modules/{big}/share")
        assert refused.status_code == 413
        assert "max_stored_bytes_per_workspace" in refused.json()["message"]
        # forking a snapshot the workspace already holds adds nothing
        assert client.post(f"/api/shared/{share.json()['share_id']}/fork").status_code == 201
        assert client.get("/api/workspace").json()["stored_bytes"] == small_size
        # an empty workspace may fork the small snapshot, not the big one
        empty = new_user(client)
        assert empty.post(f"/api/shared/{share.json()['share_id']}/fork").status_code == 201
        too_big = empty.post(f"/api/shared/{big_share}/fork")
        assert too_big.status_code == 413
        assert "max_stored_bytes_per_workspace" in too_big.json()["message"]


def test_stored_bytes_count_each_snapshot_once(settings):
    with make_client(settings) as client:
        module = client.post("/api/modules", json=MLP).json()["id"]
        store = client.app.state.services.store
        workspace = client.cookies[COOKIE_NAME]
        share = client.post(f"/api/modules/{module}/share").json()["share_id"]
        one = store.stored_bytes(workspace)
        size = len(store.get_share(share).leaves)
        assert one == size
        for _ in range(3):
            client.post(f"/api/modules/{module}/share")
            client.post(f"/api/shared/{share}/fork")
        assert store.stored_bytes(workspace) == size


# Deleting and cleaning workspaces ---------------------------------------------------------


def test_a_workspace_and_everything_it_owns_can_be_deleted(settings):
    with make_client(settings) as client:
        engine = client.app.state.services.engine
        module = client.post("/api/modules", json=MLP).json()["id"]
        share = client.post(f"/api/modules/{module}/share").json()["share_id"]
        csv = b"a,b,y\n" + b"1,2,0\n" * 20
        upload = client.post("/api/datasets/csv", files={"file": ("d.csv", csv, "text/csv")})
        assert upload.status_code in (200, 201), upload.text
        other = new_user(client)
        kept = other.post("/api/modules", json=LINEAR).json()["id"]
        old_cookie = client.cookies[COOKIE_NAME]
        answer = client.delete("/api/workspace")
        assert answer.status_code == 200
        deleted = answer.json()["deleted"]
        assert deleted["modules"] == 1 and deleted["shares"] == 1
        assert deleted["uploads_and_job_records"] >= 1
        assert f'{COOKIE_NAME}=""' in answer.headers["set-cookie"]
        client.cookies.clear()
        client.cookies[COOKIE_NAME] = old_cookie
        assert client.get(f"/api/modules/{module}").status_code == 404
        assert client.get(f"/api/shared/{share}").status_code == 404
        assert client.get("/api/datasets").json().get("uploads", []) == []
        with engine.connect() as connection:
            left = connection.execute(
                select(func.count()).select_from(modules).where(modules.c.workspace == old_cookie)
            ).scalar_one()
        assert left == 0
        assert other.get(f"/api/modules/{kept}").status_code == 200


def test_the_workspace_page_deletes_only_when_confirmed(settings):
    with make_client(settings) as client:
        module = client.post("/api/modules", json=LINEAR).json()["id"]
        page = client.get("/workspace")
        assert page.status_code == 200
        assert 'name="confirm"' in page.text and "required" in page.text
        assert "Delete my workspace" in page.text
        refused = client.post("/workspace/delete", data={})
        assert refused.status_code == 422
        assert client.get(f"/api/modules/{module}").status_code == 200
        workspace = client.cookies[COOKIE_NAME]
        done = client.post("/workspace/delete", data={"confirm": "yes"}, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == "/"
        assert f'{COOKIE_NAME}=""' in done.headers["set-cookie"]
        assert client.app.state.services.store.get(workspace, module) is None


def test_idle_unsaved_workspaces_are_cleaned_and_shares_stay(settings):
    with make_client(settings, workspace_idle_days=1.0) as client:
        services = client.app.state.services
        idle = new_user(client)
        idle_module = idle.post("/api/modules", json=LINEAR).json()["id"]
        saved = new_user(client)
        saved_module = saved.post("/api/modules", json=LINEAR).json()["id"]
        saved.post(f"/api/modules/{saved_module}/share")
        sharer = new_user(client)  # shared, then deleted the module: nothing saved is left
        gone = sharer.post("/api/modules", json=LINEAR).json()["id"]
        kept_share = sharer.post(f"/api/modules/{gone}/share").json()["share_id"]
        sharer.delete(f"/api/modules/{gone}")
        sharer.post("/api/modules", json=LINEAR)
        recent = new_user(client)
        recent_module = recent.post("/api/modules", json=LINEAR).json()["id"]
        long_ago = time.time() - 2 * 86_400
        with services.engine.begin() as connection:
            connection.execute(
                update(workspaces)
                .where(workspaces.c.id != recent.cookies[COOKIE_NAME])
                .values(last_seen=long_ago)
            )
        cleaned = IdleCleaner(services).clean(time.time())
        assert idle.cookies[COOKIE_NAME] in cleaned
        assert sharer.cookies[COOKIE_NAME] in cleaned
        assert saved.cookies[COOKIE_NAME] not in cleaned
        assert recent.cookies[COOKIE_NAME] not in cleaned
        services.store._seen.clear()
        assert idle.get(f"/api/modules/{idle_module}").status_code == 404
        assert saved.get(f"/api/modules/{saved_module}").status_code == 200
        assert recent.get(f"/api/modules/{recent_module}").status_code == 200
        assert client.get(f"/api/shared/{kept_share}").status_code == 200  # shares stay


# Exact limits under concurrency -----------------------------------------------------------


ONE_ADDRESS = {"max_computations_per_client": 0, "max_jobs_per_client": 0}
"""The 80 requests at once come from one address: its own limits are not what these test."""


def _at_once(calls):
    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_80_concurrent_creates_keep_exactly_the_module_limit(settings):
    with make_client(settings, max_modules_per_workspace=40, **ONE_ADDRESS) as client:
        client.get("/api/health")
        answers = _at_once([lambda: client.post("/api/modules", json=LINEAR)] * CONCURRENT)
        assert all(answer.status_code == 201 for answer in answers), {
            a.status_code for a in answers
        }
        assert len(client.get("/api/modules").json()) == 40
        assert client.app.state.services.store.count(client.cookies[COOKIE_NAME]) == 40


def test_80_concurrent_creates_in_a_full_saved_workspace_add_none(settings):
    with make_client(settings, max_modules_per_workspace=3, **ONE_ADDRESS) as client:
        for _ in range(3):
            module = client.post("/api/modules", json=LINEAR).json()["id"]
            client.post(f"/api/modules/{module}/share")
        answers = _at_once([lambda: client.post("/api/modules", json=LINEAR)] * CONCURRENT)
        assert {answer.status_code for answer in answers} == {429}
        assert len(client.get("/api/modules").json()) == 3


def test_80_concurrent_shares_keep_exactly_the_share_quota(settings):
    with make_client(settings, max_shares_per_workspace=7, **ONE_ADDRESS) as client:
        module = client.post("/api/modules", json=LINEAR).json()["id"]
        answers = _at_once([lambda: client.post(f"/api/modules/{module}/share")] * CONCURRENT)
        codes = [answer.status_code for answer in answers]
        assert codes.count(201) == 7 and codes.count(429) == CONCURRENT - 7, set(codes)
        assert client.get("/api/workspace").json()["shares"] == 7


def test_80_concurrent_training_jobs_start_exactly_the_job_limit(settings):
    with make_client(settings, max_jobs_per_workspace=2, **ONE_ADDRESS) as client:
        # three modules (a module trains one job at a time: a second is a 409)
        modules = [client.post("/api/modules", json=MLP).json()["id"] for _ in range(3)]
        body = {"dataset": "circle", "steps": 20_000, "batch_size": 16, "learning_rate": 0.001}
        answers = _at_once(
            [
                lambda module=module: client.post(f"/api/modules/{module}/train", json=body)
                for module in modules * (CONCURRENT // 3)
            ]
        )
        codes = [answer.status_code for answer in answers]
        try:
            assert codes.count(202) == 2 and set(codes) <= {202, 409, 429}, set(codes)
            accepted = [a.json()["module"] for a in answers if a.status_code == 202]
            assert len(set(accepted)) == 2  # never two jobs of one module
        finally:
            for answer in answers:
                if answer.status_code == 202:
                    client.post(f"/api/jobs/{answer.json()['job']}/stop")


def test_80_concurrent_uploads_keep_exactly_the_upload_limit(settings):
    with make_client(settings) as client:
        client.get("/api/health")
        rows = np.arange(30.0).reshape(10, 3)
        buffer = io.StringIO()
        np.savetxt(buffer, rows, delimiter=",", header="a,b,y", comments="")
        csv = buffer.getvalue().encode()
        answers = _at_once(
            [lambda: client.post("/api/datasets/csv", files={"file": ("d.csv", csv, "text/csv")})]
            * CONCURRENT
        )
        assert all(answer.status_code < 300 for answer in answers), {a.status_code for a in answers}
        engine = client.app.state.services.engine
        with engine.connect() as connection:
            kept = connection.execute(
                text("SELECT count(*) FROM csv_datasets WHERE workspace = :w"),
                {"w": client.cookies[COOKIE_NAME]},
            ).scalar_one()
        assert kept == MAX_CSV_PER_WORKSPACE


def test_a_database_from_before_content_addressing_is_brought_up_to_date(tmp_path):
    """Shares stored with their bytes in ``shares.leaves`` (the schema before snapshots) move
    into ``snapshots`` when the app starts; their links and forks keep working."""
    import sqlite3

    from app.settings import Settings

    data = tmp_path / "old"
    with make_client(Settings(data_dir=data)) as client:
        module = client.post("/api/modules", json=MLP).json()["id"]
        store = client.app.state.services.store
        leaves = serialise_leaves(store.load(store.get(client.cookies[COOKIE_NAME], module)))
    path = data / "playground.db"
    with sqlite3.connect(path) as old:  # rewrite the two tables as they were
        old.executescript(
            """
            DROP TABLE shares; DROP TABLE snapshots; DROP INDEX ix_modules_snapshot;
            ALTER TABLE modules DROP COLUMN snapshot;
            CREATE TABLE shares (id VARCHAR(32) PRIMARY KEY, kind VARCHAR(64) NOT NULL,
                params JSON NOT NULL, leaves BLOB NOT NULL, title TEXT NOT NULL,
                trained BOOLEAN NOT NULL, created_at FLOAT NOT NULL);
            """
        )
        for share in ("old-one", "old-two"):
            old.execute(
                "INSERT INTO shares VALUES (?, 'eqx.nn.MLP', ?, ?, 'MLP', 0, 0)",
                (share, '{"in_size": 2, "out_size": 1, "width_size": 64}', leaves),
            )
    with make_client(Settings(data_dir=data)) as client:
        engine = client.app.state.services.engine
        shared = client.get("/api/shared/old-one")
        assert shared.status_code == 200, shared.text
        fork = client.post("/api/shared/old-two/fork")
        assert fork.status_code == 201
        store = client.app.state.services.store
        forked = store.get(client.cookies[COOKIE_NAME], fork.json()["id"])
        assert serialise_leaves(store.load(forked)) == leaves
        assert snapshot_rows(engine) == 1  # two old shares of the same bytes: one snapshot
        module = client.post("/api/modules", json=LINEAR).json()["id"]
        assert client.post(f"/api/modules/{module}/share").status_code == 201
