"""What the HTTP API adds to a warm run: the round trip against the same compiled call in Python.

A real uvicorn server runs on 127.0.0.1 in a thread of this process; a keep-alive socket posts
warm runs to it (see :class:`Client`).

The same compiled executable (taken from the server's compile cache) is then called
directly with the same module arrays and input, ``jax.block_until_ready`` included. For
reference, a bare FastAPI app (one ``async`` route that runs the same call in the thread pool
and answers ``{"ok": true}``, no middleware, no body) is served by a second uvicorn in the same
process: it is the floor that uvicorn, Starlette and the thread pool set on this machine. The
three are timed alternately, call by call, so that all see the same machine load; the medians,
the time the playground adds and their ratio are printed.

Cases:

- the seed's ``library.Linear(2, 3)``: ``jit(grad)`` of ``mean(out)`` on ones of shape (5, 2);
  target: at most 3 ms added.
- a 4-layer, 512-wide ``eqx.nn.MLP`` (512 -> 512 -> 512 -> 512 -> 512, relu): ``jit(grad)`` of
  the MSE loss ``mean((out - 1) ** 2)`` on a batch of 256 normal inputs. ``eqx.nn.MLP`` takes
  one example, so the run uses ``batched: true`` (``out = jax.vmap(model)(x)`` inside the loss),
  which makes the loss one number over the whole batch; target: a ratio of at most 1.3.

The batch (256 × 512 = 131,072 numbers) is above the default ``max_input_elements`` (100,000),
so the server here runs with ``max_input_elements=262144``; nothing else differs from the
defaults. Both runs answer the full default response (output tree, values, figure, code, jaxpr,
HLO); ``--include values`` (only the values) or ``--include none`` (timings and the cache's
verdict only) measure leaner answers too.

    .venv/bin/python bench/run_overhead.py [--repeats 200] [--include values] [--include none]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # helpers.py: the live server the tests use too

import jax  # noqa: E402
from helpers import LiveServer  # noqa: E402

from app.devices import device_label  # noqa: E402
from app.main import create_app  # noqa: E402
from app.runs.structure import module_structure  # noqa: E402
from app.settings import Settings  # noqa: E402

SEED = (
    "seed Linear(2, 3): jit(grad) of mean(out), ones (5, 2)",
    {"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3}},
    {"transforms": ["grad", "jit"], "loss": "mean(out)", "input": {"shape": [5, 2]}},
)
MLP = (
    "MLP 4 x 512 (relu): jit(grad) of mean((out - 1) ** 2), batch 256",
    {
        "kind": "eqx.nn.MLP",
        "params": {"in_size": 512, "out_size": 512, "width_size": 512, "depth": 3},
    },
    {
        "transforms": ["grad", "jit"],
        "loss": "mean((out - 1) ** 2)",
        "batched": True,
        "input": {"shape": [256, 512], "init": "normal", "seed": 0},
    },
)


class Client:
    """HTTP/1.1 over one keep-alive socket, carrying the workspace cookie.

    It writes the request in one ``sendall`` and reads the answer by its Content-Length into a
    reused buffer, like the load generators ``wrk`` and ``ab``: the client lives in the
    server's process, so every microsecond it spends is counted against the API
    (``http.client`` parses headers with the ``email`` package and ``httpx`` costs about a
    millisecond per call).
    """

    def __init__(self, port: int):
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray(1 << 20)
        self.cookie = b""

    def post(self, path: str, body: dict) -> tuple[int, bytes]:
        content = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(content)}\r\n"
        ).encode()
        if self.cookie:
            head += b"Cookie: " + self.cookie + b"\r\n"
        self.socket.sendall(head + b"\r\n" + content)
        filled, end = 0, -1
        while end < 0:
            filled += self._receive(filled, len(self.buffer))
            end = self.buffer.find(b"\r\n\r\n", 0, filled)
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        status, length = int(lines[0].split(" ", 2)[1]), 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "set-cookie":
                self.cookie = value.strip().split(";", 1)[0].encode()
        total = end + 4 + length
        if total > len(self.buffer):
            self.buffer.extend(bytes(total - len(self.buffer)))
        while filled < total:
            filled += self._receive(filled, total)
        return status, bytes(self.buffer[end + 4 : total])

    def _receive(self, start: int, stop: int) -> int:
        received = self.socket.recv_into(memoryview(self.buffer)[start:stop])
        if not received:
            raise ConnectionError("the server closed the connection")
        return received

    def post_json(self, path: str, body: dict) -> dict:
        status, content = self.post(path, body)
        if status >= 300:
            raise RuntimeError(f"{path}: {status} {content[:500]!r}")
        return json.loads(content)


class BareServer(LiveServer):
    """A FastAPI app with one route that makes ``self.call()`` in the thread pool."""

    def __init__(self):
        from fastapi import FastAPI
        from fastapi.concurrency import run_in_threadpool

        bare = FastAPI()
        self.call = lambda: None

        @bare.post("/run")
        async def run() -> dict:
            await run_in_threadpool(self.call)
            return {"ok": True}

        super().__init__(bare)


def measure(
    app, client: Client, bare_server: BareServer, case, repeats: int, include: str | None
) -> dict:
    title, module, body = case
    module_id = client.post_json("/api/modules", module)["id"]
    url = f"/api/modules/{module_id}/run" + (f"?include={include}" if include else "")
    client.post_json(url, body)

    services = app.state.services
    engine = services.runs.local_engine()  # the runs are inline here (no worker pool yet)
    record = services.store.get(_workspace(services, module_id), module_id)
    model = services.store.load(record)
    _, arrays = module_structure(model)
    prepared = engine.inputs.get(
        _input_spec(body), record.spec().example_input_shape(), "float32", 1 << 30
    )
    entry = next(
        e
        for e in engine.cache._entries.values()
        if e.key.input_shape == prepared.shape and e.key.kind == module["kind"]
    )
    args = (arrays, prepared.array)

    cpu = {"http": 0.0, "direct": 0.0}
    bare_client = Client(bare_server.port)

    def direct() -> float:
        cpu_start, started = time.process_time(), time.perf_counter()
        jax.block_until_ready(entry.executable(*args))
        took = time.perf_counter() - started
        cpu["direct"] += time.process_time() - cpu_start
        return took

    def http() -> float:
        cpu_start, started = time.process_time(), time.perf_counter()
        status, content = client.post(url, body)
        took = time.perf_counter() - started
        cpu["http"] += time.process_time() - cpu_start
        if status != 200:
            raise RuntimeError(content[:500])
        return took

    def bare() -> float:
        started = time.perf_counter()
        status, content = bare_client.post("/run", {})
        if status != 200:
            raise RuntimeError(content[:500])
        return time.perf_counter() - started

    bare_server.call = lambda: jax.block_until_ready(entry.executable(*args))
    for _ in range(max(5, repeats // 10)):  # warm every path
        http()
        bare()
        direct()
    http_times, bare_times, direct_times = [], [], []
    cpu["http"] = cpu["direct"] = 0.0
    for _ in range(repeats):
        http_times.append(http())
        bare_times.append(bare())
        direct_times.append(direct())
    last = client.post_json(url, body)
    assert last["compiled"] is False
    http_ms = statistics.median(http_times) * 1e3
    direct_ms = statistics.median(direct_times) * 1e3
    bare_ms = statistics.median(bare_times) * 1e3
    return {
        "case": title,
        "include": include or "all",
        "http_ms": http_ms,
        "direct_ms": direct_ms,
        "bare_ms": bare_ms,
        "bare_ratio": bare_ms / direct_ms,
        "added_ms": http_ms - direct_ms,
        "ratio": http_ms / direct_ms,
        "http_cpu_ms": cpu["http"] / repeats * 1e3,
        "direct_cpu_ms": cpu["direct"] / repeats * 1e3,
        "response_bytes": len(json.dumps(last)),
        "compiles": last["compiles"],
    }


def _input_spec(body):
    from app.runs.spec import InputSpec

    return InputSpec.model_validate(body.get("input", {}))


def _workspace(services, module_id: str) -> str:
    from sqlalchemy import select

    from app.database import modules

    with services.engine.connect() as connection:
        query = select(modules.c.workspace).where(modules.c.id == module_id)
        return connection.execute(query).scalar_one()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed calls of each path")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        help="also measure the answer with ?include=... (e.g. 'values' or 'none'); repeatable",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(data_dir=Path(data), max_input_elements=262_144)
        app = create_app(settings)
        with LiveServer(app) as server, BareServer() as bare_server:
            client = Client(server.port)
            print(f"device: {device_label()}; jax {jax.__version__}; {args.repeats} calls each")
            rows = []
            for case in (SEED, MLP):
                rows.append(measure(app, client, bare_server, case, args.repeats, None))
                for include in args.include:
                    rows.append(measure(app, client, bare_server, case, args.repeats, include))
    print()
    print(
        f"{'case':66} {'include':8} {'HTTP ms':>9} {'direct ms':>10} {'added ms':>9} "
        f"{'ratio':>6} {'bare ms':>8} {'bare ratio':>10} {'CPU HTTP':>9} {'CPU direct':>10}"
    )
    for row in rows:
        print(
            f"{row['case']:66} {row['include']:8} {row['http_ms']:9.3f} {row['direct_ms']:10.3f} "
            f"{row['added_ms']:9.3f} {row['ratio']:6.2f} {row['bare_ms']:8.3f} "
            f"{row['bare_ratio']:10.2f} {row['http_cpu_ms']:9.3f} {row['direct_cpu_ms']:10.3f}"
        )
    print(
        "(medians of wall time per call; bare: the same call behind a one-route FastAPI app; "
        "CPU: the process's CPU time per call of the playground's HTTP path and of the direct "
        "call, all threads, client and server included)"
    )
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    seed, mlp = rows[0], next(r for r in rows if r["case"] == MLP[0] and r["include"] == "all")
    print()
    print(
        f"seed: {seed['added_ms']:.2f} ms added (target <= 3 ms): "
        f"{'OK' if seed['added_ms'] <= 3 else 'MISSED'}"
    )
    print(
        f"MLP: ratio {mlp['ratio']:.2f} (target <= 1.3): "
        f"{'OK' if mlp['ratio'] <= 1.3 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
