"""The same sharing, forking and persistence tests against a real PostgreSQL.

A session fixture starts Debian's PostgreSQL (``initdb`` + ``pg_ctl`` in a temporary directory,
on a free port of 127.0.0.1, as the ``postgres`` OS user when the tests run as root) and the
app talks to it through ``PLAYGROUND_DATABASE_URL`` (``postgresql+psycopg://...``): the same
SQLAlchemy code as SQLite. Without the binaries the tests fail in CI (CI=true) and are skipped
elsewhere, with the reason.
"""

from __future__ import annotations

import os
import uuid

import pytest
from postgres_server import PostgresServer, find_bin_dir
from sqlalchemy import inspect, text
from test_quotas import (  # noqa: F401 - content addressing and exact limits on PostgreSQL
    test_80_concurrent_creates_in_a_full_saved_workspace_add_none,
    test_80_concurrent_creates_keep_exactly_the_module_limit,
    test_80_concurrent_shares_keep_exactly_the_share_quota,
    test_80_concurrent_training_jobs_start_exactly_the_job_limit,
    test_80_concurrent_uploads_keep_exactly_the_upload_limit,
    test_a_snapshot_no_share_or_fork_holds_is_deleted,
    test_a_workspace_and_everything_it_owns_can_be_deleted,
    test_identical_snapshots_are_stored_once,
    test_idle_unsaved_workspaces_are_cleaned_and_shares_stay,
    test_stored_bytes_count_each_snapshot_once,
    test_the_share_quota_answers_429_naming_it,
    test_the_stored_bytes_quota_answers_413_naming_it,
)

# The sharing and workspace tests, collected here a second time with the settings below.
from test_rooms import (  # noqa: F401
    people,
    test_a_room_is_created_with_a_code_links_and_a_key_stored_only_as_a_hash,
    test_a_room_shares_what_it_compiled_and_the_presenter_resets_it,
    test_a_room_survives_a_restart,
    test_only_the_presenters_key_moves_the_room,
    test_participants_join_reach_and_run_and_the_counts_say_so,
    test_room_creation_is_limited_per_workspace_and_a_room_per_participants,
    test_room_limits_are_exact_under_concurrent_requests,
    test_step_events_arrive_within_a_second_and_the_stream_ends,
)
from test_sharing import *  # noqa: F403
from test_workspaces import (  # noqa: F401
    test_a_workspace_lists_only_its_own_modules,
    test_modules_and_trained_parameters_survive_a_restart,
    test_nobody_reaches_another_workspace_s_jobs_or_uploads,
    test_nobody_reaches_another_workspace_s_module,
    two_users,
)

from app.database import create_database_engine
from app.settings import Settings

del test_share_copy_open_and_fork_in_a_browser  # noqa: F821 - the browser adds nothing here

pytestmark = pytest.mark.postgres
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def postgres():
    bin_dir = find_bin_dir()
    if bin_dir is None:
        reason = (
            "PostgreSQL's binaries (initdb, pg_ctl) are not installed: "
            "apt-get install postgresql (as .ci/run does)"
        )
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    with PostgresServer(bin_dir) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres) -> str:
    return postgres.create_database("playground_test")


@pytest.fixture
def settings(tmp_path, postgres_url) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=postgres_url)


def test_the_app_really_uses_postgresql(app, client, settings):
    engine = app.state.services.engine  # made by the app's lifespan (the client runs it)
    assert engine.dialect.name == "postgresql"
    assert engine.dialect.driver == "psycopg"
    with engine.connect() as connection:
        assert connection.execute(text("select version()")).scalar().startswith("PostgreSQL")
    assert {"modules", "shares", "notices", "rooms", "room_participants", "room_progress"} <= set(
        inspect(engine).get_table_names()
    )
    assert not (settings.data_dir / "playground.db").exists()


def test_creating_the_tables_twice_is_harmless(postgres):
    url = postgres.create_database(f"twice_{uuid.uuid4().hex[:8]}")
    for _ in range(2):
        engine = create_database_engine(url)
        engine.dispose()


def test_edit_undo_and_tree_map_on_postgresql(client):
    """The revisions kept for Undo (bytea, trimmed by count and bytes) work on PostgreSQL."""
    import numpy as np

    module = client.post("/api/modules", json={"kind": "library.Linear", "params": {}}).json()
    url = f"/api/modules/{module['id']}"
    before = client.get(f"{url}/leaf", params={"path": ".bias"}).json()["values"]
    for value in (1, 2, 3):
        answer = client.post(f"{url}/edit", json={"path": ".bias", "value": value})
        assert answer.status_code == 200, answer.text
    assert answer.json()["undo_available"] == 3
    assert client.get(f"{url}/leaf", params={"path": ".bias"}).json()["values"] == [3, 3, 3]
    undone = client.post(f"{url}/undo").json()
    assert undone["undo_available"] == 2
    assert client.get(f"{url}/leaf", params={"path": ".bias"}).json()["values"] == [2, 2, 2]
    for _ in range(2):
        assert client.post(f"{url}/undo").status_code == 200
    again = client.get(f"{url}/leaf", params={"path": ".bias"}).json()["values"]
    np.testing.assert_array_equal(again, before)
    assert client.post(f"{url}/undo").status_code == 409
    mapped = client.post(f"{url}/tree-map", json={"expression": "leaf * 2", "filter": "all"})
    assert mapped.status_code == 201, mapped.text
