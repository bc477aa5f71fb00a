"""Rooms: create, join, advance (403 without the presenter's key), counts, events within a
second, a histogram of test accuracies, limits, survival across a restart, and nobody reading
another participant's workspace.

tests/test_postgres.py runs the same tests on PostgreSQL (it overrides ``settings``), so each
test goes through ``settings`` and HTTP only.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import LiveServer
from sqlalchemy import select

from app.database import room_participants, rooms
from app.main import create_app
from app.rooms import CODE_ALPHABET
from app.rooms.tokens import key_hash


def new_client(app) -> TestClient:
    return TestClient(app, base_url="http://testserver")


def create(client, lesson: str = "vmap") -> dict:
    response = client.post("/api/rooms", json={"lesson": lesson})
    assert response.status_code == 201, response.text
    return response.json()


def move(client, room: dict, step: int, key: str | None = "presenter"):
    headers = {}
    if key == "presenter":
        headers["X-Presenter-Key"] = room["presenter_key"]
    elif key is not None:
        headers["X-Presenter-Key"] = key
    return client.post(f"/api/rooms/{room['room']}/step", json={"step": step}, headers=headers)


@pytest.fixture
def people(app):
    with new_client(app) as presenter, new_client(app) as ada, new_client(app) as bob:
        yield presenter, ada, bob


def test_a_room_is_created_with_a_code_links_and_a_key_stored_only_as_a_hash(app, people):
    presenter, _, _ = people
    room = create(presenter)
    assert set(room) == {"room", "code", "join_url", "presenter_url", "presenter_key"}
    assert len(room["code"]) == 6 and set(room["code"]) <= set(CODE_ALPHABET)
    assert room["join_url"] == f"http://testserver/rooms/{room['code']}"
    assert room["presenter_url"] == f"/rooms/{room['room']}/present#key={room['presenter_key']}"
    assert len(room["presenter_key"]) >= 32
    with app.state.services.engine.connect() as connection:
        row = connection.execute(select(rooms).where(rooms.c.id == room["room"])).one()
    assert room["presenter_key"] not in [str(value) for value in row]
    assert row.key_hash == key_hash(room["presenter_key"])
    state = presenter.get(f"/api/rooms/{room['code']}").json()
    assert {k: state[k] for k in ("lesson", "step", "participants", "reached", "ran")} == {
        "lesson": "vmap",
        "step": 1,
        "participants": 0,
        "reached": 0,
        "ran": 0,
    }
    assert presenter.get(f"/api/rooms/{room['code'].lower()}").status_code == 200


def test_only_the_presenters_key_moves_the_room(people):
    presenter, ada, _ = people
    room = create(presenter)
    for client, key in ((ada, None), (ada, "wrong-key"), (presenter, None), (ada, "x" * 300)):
        response = move(client, room, 2, key)
        assert response.status_code in (403, 422), response.text
        if response.status_code == 403:
            assert "X-Presenter-Key" in response.json()["message"]
    assert presenter.get(f"/api/rooms/{room['code']}").json()["step"] == 1
    moved = move(ada, room, 2)  # the key, not the workspace, is what counts
    assert moved.status_code == 200 and moved.json()["step"] == 2
    assert moved.json()["url"] == "/lessons/vmap/2"
    too_far = move(presenter, room, 4)
    assert too_far.status_code == 422 and "steps 1 to 3" in too_far.json()["message"]
    by_code = presenter.post(
        f"/api/rooms/{room['code']}/step",
        json={"step": 3},
        headers={"X-Presenter-Key": room["presenter_key"]},
    )
    assert by_code.status_code == 404  # the room's id moves it; the public code does not


def test_participants_join_reach_and_run_and_the_counts_say_so(people):
    presenter, ada, bob = people
    room = create(presenter)
    joined = ada.post(f"/api/rooms/{room['code']}/join", json={"nickname": "  Ada   L. "})
    assert joined.status_code == 200 and joined.json()["nickname"] == "Ada L."
    assert bob.post(f"/api/rooms/{room['code']}/join").status_code == 200
    assert bob.post(f"/api/rooms/{room['code']}/join", json={}).status_code == 200  # twice: once
    counts = presenter.get(f"/api/rooms/{room['code']}").json()
    assert (counts["participants"], counts["reached"], counts["ran"]) == (2, 0, 0)

    assert ada.get("/lessons/vmap/1").status_code == 200
    assert bob.get("/lessons/vmap/1").status_code == 200
    module = ada.post("/api/lessons/vmap/1/open").json()["module"]
    assert ada.post("/api/lessons/vmap/1/run", json={"module": module}).status_code == 200
    counts = presenter.get(f"/api/rooms/{room['code']}").json()
    assert (counts["participants"], counts["reached"], counts["ran"]) == (2, 2, 1)

    assert move(presenter, room, 2).status_code == 200
    counts = presenter.get(f"/api/rooms/{room['code']}").json()
    assert (counts["step"], counts["reached"], counts["ran"]) == (2, 0, 0)
    # the presenter's own visits are not counted: it did not join
    assert presenter.get("/lessons/vmap/2").status_code == 200
    assert presenter.get(f"/api/rooms/{room['code']}").json()["reached"] == 0
    stats = presenter.get(f"/rooms/{room['room']}/stats")
    assert 'data-testid="room-joined">2<' in stats.text
    assert "Ada" not in stats.text  # counts only


@pytest.mark.parametrize(
    ("nickname", "words"),
    [("x" * 41, "at most 40 characters"), ("a\u0000b", "letters, digits"), (12, "string")],
)
def test_a_nickname_is_short_printable_text(people, nickname, words):
    presenter, ada, _ = people
    room = create(presenter)
    response = ada.post(f"/api/rooms/{room['code']}/join", json={"nickname": nickname})
    assert response.status_code == 422
    assert words in response.text and "nickname" in response.text


def test_an_unknown_room_or_lesson_is_a_404_in_words(people):
    presenter, ada, _ = people
    assert presenter.post("/api/rooms", json={"lesson": "nope"}).status_code == 404
    for path in ("/api/rooms/ZZZZZZ", "/api/rooms/ZZZZZZ/events", "/rooms/ZZZZZZ"):
        response = ada.get(path)
        assert response.status_code == 404, path
        assert "No room" in response.text
    assert ada.post("/api/rooms/ZZZZZZ/join").status_code == 404
    assert ada.post("/api/rooms/" + "x" * 40 + "/join").status_code == 422


def test_room_creation_is_limited_per_workspace_and_a_room_per_participants(settings):
    settings.max_rooms_per_workspace_per_hour = 2
    settings.max_room_participants = 1
    app = create_app(settings)
    with new_client(app) as presenter, new_client(app) as ada, new_client(app) as bob:
        room = create(presenter)
        create(presenter)
        third = presenter.post("/api/rooms", json={"lesson": "vmap"})
        assert third.status_code == 429
        assert "max_rooms_per_workspace_per_hour" in third.json()["message"]
        assert ada.post(f"/api/rooms/{room['code']}/join").status_code == 200
        full = bob.post(f"/api/rooms/{room['code']}/join")
        assert full.status_code == 429 and "max_room_participants" in full.json()["message"]
        assert ada.post(f"/api/rooms/{room['code']}/join").status_code == 200  # already in


def test_room_limits_are_exact_under_concurrent_requests(settings):
    settings.max_rooms_per_workspace_per_hour = 3
    settings.max_room_participants = 4
    app = create_app(settings)
    with new_client(app) as presenter:
        presenter.get("/lessons")  # the workspace cookie, shared by the threads below
        cookie = dict(presenter.cookies)

        def create_one(_):
            with new_client(app) as same:
                same.cookies.update(cookie)
                return same.post("/api/rooms", json={"lesson": "vmap"}).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(create_one, range(12)))
        assert sorted(statuses) == [201] * 3 + [429] * 9
        with app.state.services.engine.connect() as connection:
            code = connection.execute(select(rooms.c.code)).scalars().first()

        def join_one(_):
            with new_client(app) as person:
                return person.post(f"/api/rooms/{code}/join").status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(join_one, range(12)))
        assert sorted(statuses) == [200] * 4 + [429] * 8
        assert presenter.get(f"/api/rooms/{code}").json()["participants"] == 4


def test_a_room_survives_a_restart(settings):
    app = create_app(settings)
    with new_client(app) as presenter, new_client(app) as ada:
        room = create(presenter, "jit")
        assert (
            ada.post(f"/api/rooms/{room['code']}/join", json={"nickname": "Ada"}).status_code == 200
        )
        assert ada.get("/lessons/jit/1").status_code == 200
        assert move(presenter, room, 3).status_code == 200
        ada_cookie = dict(ada.cookies)
    app.state.services.engine.dispose()

    restarted = create_app(settings)
    with new_client(restarted) as presenter, new_client(restarted) as ada:
        state = presenter.get(f"/api/rooms/{room['code']}").json()
        assert (state["lesson"], state["step"], state["participants"]) == ("jit", 3, 1)
        assert move(presenter, room, 4).status_code == 200  # the key still works
        assert move(presenter, room, 1, None).status_code == 403
        for name, value in ada_cookie.items():
            ada.cookies.set(name, value)
        page = ada.get("/lessons/jit/4")
        assert "room-banner" in page.text and room["code"] in page.text
        assert presenter.get(f"/api/rooms/{room['code']}").json()["reached"] == 1


def test_nobody_reads_another_participants_workspace(people):
    presenter, ada, bob = people
    room = create(presenter)
    for person in (ada, bob):
        person.post(f"/api/rooms/{room['code']}/join", json={"nickname": "someone"})
    ada_module = ada.post("/api/lessons/vmap/1/open").json()["module"]
    bob_module = bob.post("/api/lessons/vmap/1/open").json()["module"]
    assert ada_module != bob_module
    assert bob.get(f"/api/modules/{ada_module}").status_code == 404
    assert bob.post("/api/lessons/vmap/1/run", json={"module": ada_module}).status_code == 404
    assert presenter.get(f"/api/modules/{ada_module}").status_code == 404
    state = bob.get(f"/api/rooms/{room['code']}").json()
    assert ada_module not in json.dumps(state) and "someone" not in json.dumps(state)


def test_the_room_database_rows_name_workspaces_only_by_their_id(app, people):
    presenter, ada, _ = people
    room = create(presenter)
    ada.post(f"/api/rooms/{room['code']}/join", json={"nickname": "Ada"})
    with app.state.services.engine.connect() as connection:
        rows = connection.execute(select(room_participants)).all()
    assert len(rows) == 1 and rows[0].nickname == "Ada"


# Events -------------------------------------------------------------------------------------


def read_events(url: str, found: queue.Queue, stop: threading.Event) -> None:
    """Put each (event, data) of the stream at ``url`` in ``found`` until the stream ends."""
    with httpx.Client(timeout=httpx.Timeout(10.0, read=30.0)) as http:
        with http.stream("GET", url) as response:
            found.put(("status", response.status_code))
            name = None
            for line in response.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: ") and name:
                    found.put((name, json.loads(line[len("data: ") :])))
                    if name == "end":
                        return


def next_event(found: queue.Queue, seconds: float) -> tuple[str, object]:
    return found.get(timeout=seconds)


def test_step_events_arrive_within_a_second_and_the_stream_ends(settings):
    settings.event_stream_seconds = 4.0
    app = create_app(settings)
    with LiveServer(app) as server:
        with httpx.Client(base_url=server.url) as presenter:
            room = presenter.post("/api/rooms", json={"lesson": "vmap"}).json()
            found: queue.Queue = queue.Queue()
            stop = threading.Event()
            url = f"{server.url}/api/rooms/{room['code']}/events"
            reader = threading.Thread(target=read_events, args=(url, found, stop), daemon=True)
            reader.start()
            assert next_event(found, 10) == ("status", 200)
            assert next_event(found, 10) == (
                "step",
                {"step": 1, "url": "/lessons/vmap/1", "title": "Per-example gradients"},
            )
            for step in (2, 3):
                moved_at = time.monotonic()
                response = presenter.post(
                    f"/api/rooms/{room['room']}/step",
                    json={"step": step},
                    headers={"X-Presenter-Key": room["presenter_key"]},
                )
                assert response.status_code == 200
                name, data = next_event(found, 5)
                assert (name, data["step"], data["url"]) == ("step", step, f"/lessons/vmap/{step}")
                assert time.monotonic() - moved_at < 1.0
            name, data = next_event(found, 10)  # the stream's bounded life
            assert name == "end"
            stop.set()
            reader.join(timeout=10)


# The presenter's histogram --------------------------------------------------------------------


@pytest.mark.slow
def test_the_presenter_sees_a_histogram_of_the_participants_test_accuracies(app, people):
    presenter, ada, bob = people
    room = create(presenter, "spiral")
    jobs = {}
    for name, person in (("ada", ada), ("bob", bob)):
        assert person.post(f"/api/rooms/{room['code']}/join").status_code == 200
        module = person.post("/api/lessons/spiral/1/open").json()["module"]
        started = person.post("/api/lessons/spiral/1/run", json={"module": module})
        assert started.status_code == 202
        jobs[name] = (person, started.json()["result"]["job"])
    accuracies = []
    for person, job in jobs.values():
        deadline = time.monotonic() + 120
        while (state := person.get(f"/api/jobs/{job}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert state["status"] == "done"
        accuracies.append(state["metrics"]["test_accuracy"][-1])
    # another workspace cannot read a participant's job; the presenter sees only the histogram
    assert presenter.get(f"/api/jobs/{jobs['ada'][1]}").status_code == 404
    stats = presenter.get(f"/rooms/{room['room']}/stats").text
    assert "Test accuracy of 2 finished runs" in stats
    bins = [0] * 10
    for value in accuracies:
        bins[min(9, int(value * 10))] += 1
    for index, count in enumerate(bins):
        if count:
            low = f"{index / 10:.1f}"
            assert f"{count} between {low} and" in stats
    state = presenter.get(f"/api/rooms/{room['code']}").json()
    assert (state["participants"], state["reached"], state["ran"]) == (2, 2, 2)


def test_a_workspace_holds_a_bounded_number_of_event_streams(settings):
    settings.max_event_streams_per_workspace = 1
    app = create_app(settings)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as person:
        room = person.post("/api/rooms", json={"lesson": "vmap"}).json()
        url = f"/api/rooms/{room['code']}/events"
        with person.stream("GET", url) as first:
            assert first.status_code == 200
            second = person.get(url)
            assert second.status_code == 429
            assert "max_event_streams_per_workspace" in second.json()["message"]
        # the first stream closed: its slot is free again
        deadline = time.monotonic() + 5
        while True:
            with person.stream("GET", url) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.2)


PER_EXAMPLE = {"transforms": ["grad", "vmap"], "input": {"shape": [5, 2], "init": "normal"}}
LINEAR = {"kind": "eqx.nn.Linear", "params": {"in_features": 2, "out_features": 3}}


def run_linear(client) -> dict:
    built = client.post("/api/modules", json=LINEAR)
    assert built.status_code == 201, built.text
    response = client.post(f"/api/modules/{built.json()['id']}/run", json=PER_EXAMPLE)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_room_shares_what_it_compiled_and_the_presenter_resets_it(people):
    presenter, ada, bob = people
    room = create(presenter, "jit")
    for client in (ada, bob):
        assert client.post(f"/api/rooms/{room['code']}/join", json={}).status_code == 200

    first = run_linear(ada)
    assert first["compile_scope"] == "now" and first["compiled"] is True
    # bob did not compile it, but someone in his room did: "you compiled it before" (the room)
    second = run_linear(bob)
    assert second["compile_scope"] == "workspace" and second["compiled"] is False
    assert second["compiles"] == first["compiles"]

    url = f"/api/rooms/{room['room']}/reset-compiled"
    for client, headers in ((bob, {}), (bob, {"X-Presenter-Key": "wrong"}), (presenter, {})):
        refused = client.post(url, headers=headers)
        assert refused.status_code == 403 and "presenter" in refused.text
    assert run_linear(bob)["compile_scope"] == "workspace"  # nothing was reset

    reset = presenter.post(url, headers={"X-Presenter-Key": room["presenter_key"]})
    assert reset.status_code == 200 and reset.json() == {"scope": f"room:{room['room']}"}
    again = run_linear(bob)
    assert again["compile_scope"] == "now" and again["compiled"] is True
    assert again["compiles"] == first["compiles"] + 1 and again["timings"]["compile_ms"] > 0
    assert run_linear(ada)["compile_scope"] == "workspace"
    missing = presenter.post(
        "/api/rooms/nosuchroom/reset-compiled", headers={"X-Presenter-Key": "x"}
    )
    assert missing.status_code == 404

    # the numbers do not depend on who compiled, nor on the reset
    for other in (second, again):
        for name, values in first["values"].items():
            np.testing.assert_allclose(np.asarray(other["values"][name]), np.asarray(values))


def test_a_workspace_outside_the_room_keeps_its_own_scope(people):
    presenter, ada, bob = people
    room = create(presenter, "jit")
    assert ada.post(f"/api/rooms/{room['code']}/join", json={}).status_code == 200
    assert run_linear(ada)["compile_scope"] == "now"
    assert run_linear(bob)["compile_scope"] == "server"  # bob did not join
    assert "/api/rooms/{room_id}/reset-compiled" in presenter.app.openapi()["paths"]
    page = presenter.get(f"/rooms/{room['room']}/present")
    assert page.status_code == 200 and "Compile again from scratch" in page.text
