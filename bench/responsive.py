"""Is the web process responsive while its workers are busy or dying? (issue 10, item 1)

    .venv/bin/python bench/responsive.py --seconds 60

It starts ``python -m app`` (3 workers, ``max_run_seconds`` 3) on a free port with a fresh
data directory. Then, for ``--seconds``:

- ``--heavy`` clients (default 3, each its own workspace) send, in a loop, runs that keep a
  worker busy (``jit(grad)`` of an MLP 4 x 512 on a batch of 192) and runs whose compile goes
  past the time limit (``grad`` of a 200-layer MLP: its worker is killed and replaced);
- every ``--kill-every`` seconds (default 4) the bench itself kills one of the server's worker
  processes with SIGKILL;
- one visitor asks ``/api/health`` and the page of an already built module, in turn, every
  100 ms, and records how long each answer took.

It prints the visitor's p50/p95/max per request type (target: every answer under 200 ms), the
heavy clients' answers by status, the workers killed, and the server's resident memory (web
process and workers) at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # helpers.py: shared with the tests

from helpers import serve_process  # noqa: E402

SEED = {"kind": "library.Linear", "params": {"in_dim": 2, "out_dim": 3}}
MLP = {
    "kind": "eqx.nn.MLP",
    "params": {"in_size": 512, "out_size": 512, "width_size": 512, "depth": 3},
}
DEEP = {  # 400 array leaves: within max_traced_leaves, but its grad compiles for seconds
    "kind": "eqx.nn.MLP",
    "params": {"in_size": 8, "out_size": 8, "width_size": 8, "depth": 199},
}
BUSY_RUN = {
    "function": "loss",
    "loss": "mean((out - 1) ** 2)",
    "transforms": ["grad", "jit"],
    "batched": True,
    "input": {"shape": [192, 512], "init": "normal", "seed": 0},
}
LONG_RUN = {
    "function": "loss",
    "loss": "mean(out ** 2)",
    "transforms": ["grad", "jit"],
    "input": {"shape": [8], "init": "normal", "seed": 1},
}


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def resident_mb(pid: int) -> float:
    total = 0
    for each in [pid, *children(pid)]:
        try:
            with open(f"/proc/{each}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total / 1e6


def worker_pids(pid: int) -> list[int]:
    """The server's worker processes (its children that are Python interpreters)."""
    found = []
    for child in children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                if b"multiprocessing" in cmdline.read():
                    found.append(child)
        except OSError:
            pass
    return found


def build(client: httpx.Client, spec: dict) -> str:
    answer = client.post("/api/modules", json=spec)
    answer.raise_for_status()
    return answer.json()["id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--heavy", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=4)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="responsive-")
    process, base = serve_process(
        data_dir=data,
        workers="3",
        max_run_seconds="3",
        warm_start="false",
        max_computations_per_client="0",  # every client here is 127.0.0.1
    )
    stop = threading.Event()
    heavy_status: Counter = Counter()
    killed = 0
    try:
        visitor = httpx.Client(base_url=base, timeout=30)
        page = f"/m/{build(visitor, SEED)}"
        visitor.get(page).raise_for_status()
        time.sleep(3)  # the workers have started
        memory_start = resident_mb(process.pid)

        def heavy_loop(index: int) -> None:
            client = httpx.Client(base_url=base, timeout=60)
            busy, deep = build(client, MLP), build(client, DEEP)
            while not stop.is_set():
                module, body = (deep, LONG_RUN) if random.random() < 0.3 else (busy, BUSY_RUN)
                try:
                    status = client.post(f"/api/modules/{module}/run", json=body).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                heavy_status[status] += 1

        threads = [threading.Thread(target=heavy_loop, args=(i,)) for i in range(args.heavy)]
        for thread in threads:
            thread.start()
        times: dict[str, list[float]] = {"health": [], "page": []}
        errors: Counter = Counter()
        started = time.monotonic()
        next_kill = started + args.kill_every
        while time.monotonic() - started < args.seconds:
            for name, path in (("health", "/api/health"), ("page", page)):
                began = time.perf_counter()
                status = visitor.get(path).status_code
                times[name].append(time.perf_counter() - began)
                if status != 200:
                    errors[(name, status)] += 1
                time.sleep(0.1)
            if time.monotonic() > next_kill:
                pids = worker_pids(process.pid)
                if pids:
                    os.kill(random.choice(pids), signal.SIGKILL)
                    killed += 1
                next_kill += args.kill_every
        stop.set()
        for thread in threads:
            thread.join(90)
        time.sleep(5)  # replaced workers start
        memory_end = resident_mb(process.pid)
        print(f"{args.seconds:g} s, {args.heavy} heavy clients, {killed} workers killed")
        for name, values in times.items():
            values.sort()
            p95 = values[int(0.95 * (len(values) - 1))]
            print(
                f"  {name:6} n={len(values):4}  p50 {statistics.median(values) * 1e3:6.1f} ms  "
                f"p95 {p95 * 1e3:6.1f} ms  max {values[-1] * 1e3:6.1f} ms"
            )
        print(f"  visitor errors: {dict(errors) or 'none'}")
        print(f"  heavy answers by status: {dict(heavy_status)}")
        print(f"  server memory (web + workers): {memory_start:.0f} MB -> {memory_end:.0f} MB")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except Exception:  # noqa: BLE001 - stop it however
            process.kill()


if __name__ == "__main__":
    main()
