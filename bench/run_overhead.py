"""What the HTTP API and the worker pool add to a warm run, against a direct call, in one run.

A real uvicorn server runs the playground on 127.0.0.1 in a thread of this process, with its
worker pool (``--workers``, 2 by default: real worker processes); a keep-alive socket posts warm
runs to it (see :class:`Client`). Three paths are timed in turns of ``BLOCK`` calls each, so
that all see the same machine load (turns of one call each would time each path just after the
others woke their own processes and threads: on two cores, that costs a small run about as much
as what is measured):

- **direct**: the same work called directly here: the same pipeline compiled by a
  :class:`~app.runs.engine.RunEngine` of this process (the worker's engine, same settings), its
  executable called with the same module arrays and input, ``jax.block_until_ready`` included;
- **HTTP**: ``POST /api/modules/{id}/run`` through the playground and its worker (the full
  default answer: output tree, values, figure, code, jaxpr, HLO);
- **bare**: a FastAPI app of one route served the same way, whose route calls a worker of the
  same kind (a :class:`~app.workers.WorkerPool` of one process, awaited in the event loop with
  ``call_async`` as the playground's run endpoint does) to do the same work as the direct
  call (:func:`bare_run`: the same compiled program, called in the worker with arrays it
  keeps) and answers ``{"ok": true}``: what uvicorn, Starlette and a computation in a worker
  process cost on this machine, with no playground around them.

Where the pool's own cost goes is printed too: the bare route calling a trivial task
(``app.workers.process.ping``), ``pool.call(ping)`` from Python (no HTTP), and the bare route
calling nothing (``run_in_threadpool`` of nothing).

Cases and targets (issue 10 item 7):

- the seed's ``library.Linear(2, 3)``: ``jit(grad)`` of ``mean(out)`` on ones of shape (5, 2);
  target: HTTP adds at most 1.5 ms to the direct call;
- a 4-layer, 512-wide ``eqx.nn.MLP`` (relu): ``jit(grad)`` of ``mean((out - 1) ** 2)`` on a
  batch of 256 normal inputs (``batched: true``); target: HTTP adds at most 1 ms more than the
  bare route adds (both against the direct call: HTTP - bare <= 1 ms), with ``?include=none``
  (an answer of timings, cost and the cache's verdict: the full answer also writes the HLO
  text, the code and the figure).

Every case is measured ``--rounds`` times (3 by default), one round after another, and the
targets are read in each case's **quietest round**: the one whose bare route calling a trivial
task in its worker (``ping route``, which none of the playground's code touches) was fastest.
This machine is a virtual one with two cores shared with others: in runs minutes apart
the same trivial trip took from 0.4 to 0.9 ms, and every path slowed with it; the round with the
fastest trivial trip is the one least disturbed from outside. Every round's figures are printed.

The batch (256 x 512) is above the default ``max_input_elements``, so the server here runs with
``max_input_elements=262144``; nothing else differs from the defaults. ``--include values`` or
``--include none`` measure leaner answers too.

    .venv/bin/python bench/run_overhead.py [--repeats 200] [--workers 2] [--include none]
        [--rounds 3]
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


BLOCK = 10
"""Calls of one path in a row, before the next path's turn."""


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


_BARE_CALLS: dict[str, object] = {}
"""In the bare route's worker: each case's direct call (:func:`bare_run`)."""


def bare_run(settings, module: dict, body: dict) -> None:
    """A task for the bare route's worker: the case's direct call (made on its first call,
    compiled by a :class:`~app.runs.engine.RunEngine` as in :func:`_direct_call`, then kept
    with its arrays), run once; nothing is sent back."""
    key = json.dumps([module, body], sort_keys=True)
    call = _BARE_CALLS.get(key)
    if call is None:
        call = _BARE_CALLS[key] = _direct_call(settings, module, body)
    call()


class BareServer(LiveServer):
    """A FastAPI app with three routes: ``/compute`` calls :func:`bare_run` in a worker of
    ``pool``, ``/worker`` calls ``ping`` there (both as the playground's run endpoint calls
    its workers, awaiting ``WorkerPool.call_async`` in the event loop), ``/nothing`` calls
    nothing in the thread pool."""

    def __init__(self, pool, settings):
        from fastapi import Body, FastAPI
        from fastapi.concurrency import run_in_threadpool

        from app.workers.process import ping

        bare = FastAPI()

        @bare.post("/compute")
        async def compute(case: dict = Body()) -> dict:  # noqa: B008
            await pool.call_async(bare_run, settings, case["module"], case["body"])
            return {"ok": True}

        @bare.post("/worker")
        async def worker() -> dict:
            await pool.call_async(ping)
            return {"ok": True}

        @bare.post("/nothing")
        async def nothing() -> dict:
            await run_in_threadpool(lambda: None)
            return {"ok": True}

        super().__init__(bare)


def _direct_call(settings, module: dict, body: dict):
    """The same run compiled in this process: a function that calls its executable once."""
    from app.catalog import parse_spec
    from app.runs.engine import RunEngine
    from app.runs.spec import RunRequest

    engine = RunEngine(settings)
    spec = parse_spec(module["kind"], module["params"])
    model = spec.build()
    request = RunRequest.model_validate(body)
    engine.run(spec, model, request, eager=False)
    (entry,) = engine.cache._entries.values()
    args = (
        engine.structures.get(model).arrays,
        engine.inputs.get(
            request.input, spec.example_input_shape(), "float32", settings.max_input_elements
        ).array,
    )
    return lambda: jax.block_until_ready(entry.executable(*args))


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure(
    settings, client: Client, bare_port: int, pool, case, repeats: int, include: str | None
) -> dict:
    from app.workers.process import ping

    title, module, body = case
    module_id = client.post_json("/api/modules", module)["id"]
    url = f"/api/modules/{module_id}/run" + (f"?include={include}" if include else "")
    client.post_json(url, body)
    direct = _direct_call(settings, module, body)
    bare = Client(bare_port)  # connected now: an idle keep-alive connection closes after 5 s

    def http() -> None:
        status, content = client.post(url, body)
        if status != 200:
            raise RuntimeError(content[:500])

    paths = {
        "http": http,
        "direct": direct,
        "bare": lambda: bare.post_json("/compute", {"module": module, "body": body}),
        "bare_ping": lambda: bare.post_json("/worker", {}),
        "bare_nothing": lambda: bare.post_json("/nothing", {}),
        "pool_ping": lambda: pool.call(ping),
    }
    for _ in range(max(5, repeats // 10)):  # warm every path
        for call in paths.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(max(1, repeats // BLOCK)):
        for name, call in paths.items():
            for _ in range(BLOCK):
                times[name].append(_timed(call))
    last = client.post_json(url, body)
    assert last["compiled"] is False
    ms = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    return {
        "case": title,
        "include": include or "all",
        **{f"{name}_ms": value for name, value in ms.items()},
        "added_ms": ms["http"] - ms["direct"],
        "bare_added_ms": ms["bare"] - ms["direct"],
        "over_bare_ms": ms["http"] - ms["bare"],
        "response_bytes": len(json.dumps(last)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed calls of each path")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        help="also measure the answer with ?include=... (e.g. 'values' or 'none'); repeatable",
    )
    parser.add_argument("--workers", type=int, default=2, help="the playground's workers")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="times every case is measured, one after another (the targets are read in the "
        "quietest round: see the module's docstring)",
    )
    args = parser.parse_args()
    from app.workers import WorkerPool

    with tempfile.TemporaryDirectory() as data:
        settings = Settings(
            data_dir=Path(data),
            max_input_elements=262_144,
            workers=args.workers,
            warm_start=False,
        )
        app = create_app(settings)
        pool = WorkerPool(
            1,
            max_run_seconds=settings.max_run_seconds,
            memory_mb=settings.worker_memory_mb,
            wait_seconds=settings.compute_wait_seconds,
        ).start()
        try:
            with LiveServer(app) as server, BareServer(pool, settings) as bare_server:
                client = Client(server.port)
                print(
                    f"device: {device_label()}; jax {jax.__version__}; {args.repeats} calls "
                    f"each; the playground with {args.workers} workers"
                )
                rows = []
                for round_number in range(1, max(1, args.rounds) + 1):
                    for case in (SEED, MLP):
                        for include in (None, *args.include):
                            row = measure(
                                settings,
                                client,
                                bare_server.port,
                                pool,
                                case,
                                args.repeats,
                                include,
                            )
                            rows.append({**row, "round": round_number})
        finally:
            pool.close()
    print()
    print(
        f"{'case':66} {'include':8} {'round':>5} {'HTTP ms':>8} {'direct':>7} {'added':>7} "
        f"{'bare':>7} {'bare added':>10} {'HTTP-bare':>9} {'ping route':>10} {'ping':>6} "
        f"{'no-worker':>9}"
    )
    for row in sorted(rows, key=lambda r: (r["case"] != SEED[0], r["include"], r["round"])):
        print(
            f"{row['case']:66} {row['include']:8} {row['round']:5} {row['http_ms']:8.3f} "
            f"{row['direct_ms']:7.3f} {row['added_ms']:7.3f} {row['bare_ms']:7.3f} "
            f"{row['bare_added_ms']:10.3f} {row['over_bare_ms']:9.3f} {row['bare_ping_ms']:10.3f} "
            f"{row['pool_ping_ms']:6.3f} {row['bare_nothing_ms']:9.3f}"
        )
    print(
        "(medians of wall time per call, ms. added: HTTP - direct; bare: the bare app's route "
        "doing the same work in its worker; bare added: bare - direct; HTTP-bare: what the "
        "playground adds beyond the bare route; ping route: the bare app's route calling a "
        "trivial task in its worker; ping: pool.call of that task from Python; no-worker: the "
        "bare route calling nothing)"
    )
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    seed_rows = [r for r in rows if r["case"] == SEED[0] and r["include"] == "all"]
    mlp_include = "none" if "none" in args.include else "all"
    mlp_rows = [r for r in rows if r["case"] == MLP[0] and r["include"] == mlp_include]
    seed, mlp = quietest(seed_rows), quietest(mlp_rows)
    print()
    print(
        f"seed, full answer, quietest of {len(seed_rows)} rounds (round {seed['round']}, ping "
        f"route {seed['bare_ping_ms']:.2f} ms): {seed['added_ms']:.2f} ms added (target <= "
        f"1.5 ms): {'OK' if seed['added_ms'] <= 1.5 else 'MISSED'}; every round: "
        + ", ".join(f"{r['added_ms']:.2f}" for r in seed_rows)
    )
    print(
        f"MLP (include={mlp_include}), quietest round (round {mlp['round']}, ping route "
        f"{mlp['bare_ping_ms']:.2f} ms): {mlp['added_ms']:.2f} ms added, {mlp['over_bare_ms']:.2f} "
        f"ms more than the bare route adds ({mlp['bare_added_ms']:.2f} ms; target <= 1 ms): "
        f"{'OK' if mlp['over_bare_ms'] <= 1 else 'MISSED'}; every round: "
        + ", ".join(f"{r['over_bare_ms']:.2f}" for r in mlp_rows)
    )


def quietest(rows: list[dict]) -> dict:
    """The round measured while the machine was quietest: the lowest median of the bare
    route's trivial worker trip (``ping route``), which no code of the playground touches."""
    return min(rows, key=lambda r: r["bare_ping_ms"])


if __name__ == "__main__":
    main()
