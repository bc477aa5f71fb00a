"""Connections against a real ``python -m app``: idle sockets, slow request heads, idle
keep-alive connections, the cap per client address, the server's overload answers; and the
request limit and event streams' bounds in the app.

The idle and greedy clients bind other loopback addresses (127.0.0.2, 127.0.0.3), so that the
"other client" asking ``/api/health`` from 127.0.0.1 is another address, as on a network.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient
from helpers import serve_process
from test_security import assert_security_headers

from app.main import create_app
from app.serving import KeyedSlots
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HEADER_TIMEOUT = 2.0
KEEP_ALIVE = 3.0
PER_CLIENT = 64
SECURITY_HEADER_NAMES = (b"content-security-policy", b"x-content-type-options", b"x-frame-options")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m app`` with short time-outs, as a deployment would set them."""
    process, base = serve_process(
        data_dir=str(tmp_path_factory.mktemp("serving")),
        header_timeout_seconds=str(HEADER_TIMEOUT),
        keep_alive_seconds=str(KEEP_ALIVE),
        max_connections_per_client=str(PER_CLIENT),
    )
    port = int(base.rsplit(":", 1)[1])
    yield port
    process.terminate()
    process.wait(timeout=15)


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """Everything until the server closes, or until a whole answer arrived."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:") and len(body) >= int(line[15:]):
                return data


def health(port: int, source: str = "127.0.0.1", timeout: float = 10) -> tuple[int, bytes]:
    with connect(port, source, timeout) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = read_answer(sock)
    return int(answer.split(b" ", 2)[1]), answer


def closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    """How long until the server closed ``sock`` (and what it said); fails past ``seconds``."""
    start = time.monotonic()
    sock.settimeout(seconds)
    said = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return time.monotonic() - start, said
            said += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {seconds} s") from None
    except ConnectionResetError:
        return time.monotonic() - start, said


def test_515_idle_sockets_of_one_client_do_not_shut_out_another(server):
    idle = []
    try:
        for _ in range(515):
            try:
                idle.append(connect(server, source="127.0.0.2", timeout=5))
            except OSError:
                break  # refused outright: fine, nothing held
        start = time.monotonic()
        status, answer = health(server, timeout=10)
        assert status == 200, answer[:300]
        assert time.monotonic() - start < 10
    finally:
        for sock in idle:
            sock.close()


def test_connections_past_the_cap_per_client_get_a_503_with_the_headers(server):
    held = [connect(server, source="127.0.0.3") for _ in range(PER_CLIENT)]
    try:
        extra = connect(server, source="127.0.0.3")
        answer = read_answer(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        head = answer.split(b"\r\n\r\n")[0].lower()
        for name in SECURITY_HEADER_NAMES:
            assert name in head
        assert b"max_connections_per_client" in answer
        # another address is not affected
        assert health(server)[0] == 200
    finally:
        for sock in held:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(server):
    with connect(server) as sock:
        elapsed, said = closed_within(sock, HEADER_TIMEOUT + 3)
    assert HEADER_TIMEOUT - 0.5 <= elapsed <= HEADER_TIMEOUT + 2
    assert said.startswith(b"HTTP/1.1 408")
    assert b"header_timeout_seconds" in said


def test_a_slowloris_client_is_cut_off_within_the_header_timeout(server):
    with connect(server) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        stop = threading.Event()

        def drip():  # one more header line every 0.5 s, as long as the server listens
            n = 0
            while not stop.wait(0.5):
                try:
                    sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())
                except OSError:
                    return
                n += 1

        dripper = threading.Thread(target=drip)
        dripper.start()
        try:
            elapsed, said = closed_within(sock, HEADER_TIMEOUT + 5)
        finally:
            stop.set()
            dripper.join()
    assert elapsed <= HEADER_TIMEOUT + 2, f"kept for {elapsed:.1f} s"
    assert said.startswith(b"HTTP/1.1 408")


def test_a_slow_head_on_a_kept_alive_connection_is_cut_off_too(server):
    with connect(server) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /api/health HTTP/1.1\r\n")  # the next head, never finished
        elapsed, said = closed_within(sock, HEADER_TIMEOUT + 3)
    assert elapsed <= HEADER_TIMEOUT + 2
    assert said.startswith(b"HTTP/1.1 408")


def test_an_idle_keep_alive_connection_is_closed(server):
    with connect(server) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 200")
        elapsed, said = closed_within(sock, KEEP_ALIVE + 3)
    assert said == b""
    assert KEEP_ALIVE - 1 <= elapsed <= KEEP_ALIVE + 2


def test_a_normal_keep_alive_client_is_served(server):
    with connect(server) as sock:
        for _ in range(5):
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(0.5)


def test_a_request_the_server_cannot_parse_gets_a_400_with_the_headers(server):
    with connect(server) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n")  # no colon
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 400")
    head = answer.split(b"\r\n\r\n")[0].lower()
    for name in SECURITY_HEADER_NAMES:
        assert name in head


def test_python_m_app_answers_only_its_hosts(server):
    with connect(server) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 400")
    with connect(server) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost:1\r\nConnection: close\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 200")


# In the app ----------------------------------------------------------------------------------


def test_too_many_requests_at_once_get_a_503_with_the_headers(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data", max_concurrent_requests=1))
    release = threading.Event()

    @app.get("/hold")
    async def hold() -> dict:
        await anyio.to_thread.run_sync(release.wait)
        return {"held": True}

    with TestClient(app) as client:
        held = []

        def hold_one():  # refused while the main thread's request is in flight: again
            while (answer := client.get("/hold")).status_code == 503:
                time.sleep(0.01)
            held.append(answer)

        holder = threading.Thread(target=hold_one)
        holder.start()
        try:
            deadline = time.monotonic() + 10
            while (busy := client.get("/api/health")).status_code != 503:
                assert time.monotonic() < deadline, f"the held request never counted: {held}"
                time.sleep(0.05)
            assert busy.headers["retry-after"] == "2"
            assert "max_concurrent_requests" in busy.json()["detail"]
            assert_security_headers(busy)
        finally:
            release.set()
            holder.join(timeout=10)
        assert held[0].json() == {"held": True}
        assert client.get("/api/health").status_code == 200


def test_keyed_slots_hold_at_most_the_limit_per_key():
    slots = KeyedSlots(2, "job event streams open", "max_event_streams_per_workspace")
    first, second = slots.acquire("a"), slots.acquire("a")
    with pytest.raises(Exception) as refused:
        slots.acquire("a")
    assert refused.value.status_code == 429
    assert "max_event_streams_per_workspace" in refused.value.message
    other = slots.acquire("b")  # another workspace is not affected
    first()
    first()  # a second release gives nothing back twice
    assert slots.held("a") == 1
    third = slots.acquire("a")
    for release in (second, third, other):
        release()
    assert slots.held("a") == 0 and slots.held("b") == 0


LONG_TRAIN = {"dataset": "circle", "steps": 20_000, "batch_size": 16, "learning_rate": 0.001}


def test_event_streams_have_a_bounded_life_and_a_cap_per_workspace(tmp_path):
    settings = Settings(
        data_dir=tmp_path / "data", event_stream_seconds=1.0, max_event_streams_per_workspace=1
    )
    app = create_app(settings)
    mlp = {"kind": "eqx.nn.MLP", "params": {"in_size": 2, "out_size": 1, "width_size": 8}}
    with TestClient(app) as client:
        module = client.post("/api/modules", json=mlp).json()["id"]
        job = client.post(f"/api/modules/{module}/train", json=LONG_TRAIN)
        assert job.status_code == 202, job.text
        job_id = job.json()["job"]
        try:
            start = time.monotonic()
            with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
                second = client.get(f"/api/jobs/{job_id}/events")
                assert second.status_code == 429
                assert "max_event_streams_per_workspace" in second.json()["detail"]
                text = "".join(stream.iter_text())
            assert "event: timeout" in text
            assert time.monotonic() - start < 8
            # the slot is free again
            with client.stream("GET", f"/api/jobs/{job_id}/events") as again:
                assert again.status_code == 200
        finally:
            client.post(f"/api/jobs/{job_id}/stop")
