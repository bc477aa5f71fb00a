"""The seed's first ``jit(grad)`` after a restart, with and without JAX's persistent cache.

Each case starts a fresh data directory and two processes one after the other, as a server
would be started, stopped and started again. Each process builds the playground app (warm-up
off, so that nothing but the measured request compiles), builds the seed's
``library.Linear(2, 3)`` and posts its ``jit(grad)`` run (``mean(out)`` on ones of shape
(5, 2)) once through the HTTP API; it prints the request's wall time, the trace and compile
times the answer reports and how many programs JAX's persistent cache served. The second
process is the restart: with ``PLAYGROUND_PERSISTENT_COMPILE_CACHE`` on, it finds the program
the first one compiled on disk and does not compile it again.

    .venv/bin/python bench/warm_restart.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # helpers.py: shared with the tests

from helpers import LINEAR, SEED_RUN  # noqa: E402

SEED_JIT_GRAD = {**SEED_RUN, "transforms": ["grad", "jit"]}


def child(data_dir: str, cache: bool) -> dict:
    """One server process's first seed ``jit(grad)``; what it cost and what the cache did."""
    sys.path.insert(0, str(ROOT))
    import jax
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    events: dict[str, int] = {}
    jax.monitoring.register_event_listener(
        lambda name, **_: events.__setitem__(name, events.get(name, 0) + 1)
    )
    settings = Settings(
        data_dir=Path(data_dir),
        persistent_compile_cache=cache,
        warm_start=False,
        allowed_hosts=["testserver"],
    )
    with TestClient(create_app(settings)) as client:
        module = client.post("/api/modules", json=LINEAR)
        module_id = module.json()["id"]
        start = time.perf_counter()
        answer = client.post(f"/api/modules/{module_id}/run", json=SEED_JIT_GRAD)
        wall_ms = (time.perf_counter() - start) * 1e3
    body = answer.json()
    return {
        "status": answer.status_code,
        "wall_ms": wall_ms,
        "trace_ms": body["timings"]["trace_ms"],
        "compile_ms": body["timings"]["compile_ms"],
        "cache_hits": events.get("/jax/compilation_cache/cache_hits", 0),
        "cache_misses": events.get("/jax/compilation_cache/cache_misses", 0),
        "weight_grad": body["values"][".weight"],
        "cached_files": sum(1 for _ in (Path(data_dir) / "jax-cache").glob("*")) if cache else 0,
    }


def start(data_dir: str, cache: bool) -> dict:
    """:func:`child` in a new Python process (a server started afresh)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", data_dir]
    if not cache:
        command.append("--no-cache")
    # the setting alone decides: no persistent cache set up by the caller's environment (the
    # test suite sets one for its own processes)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def restart(cache: bool) -> tuple[dict, dict]:
    """A first start and a restart on one fresh data directory."""
    with tempfile.TemporaryDirectory(prefix="warm-restart-") as data_dir:
        return start(data_dir, cache), start(data_dir, cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, cache=not args.no_cache)))
        return
    rows = {}
    for _ in range(args.repeats):  # the cases alternate, so both see the same machine load
        for name, cache in (("without the cache", False), ("with the cache", True)):
            rows.setdefault(name, []).append(restart(cache))
    print("The seed's jit(grad), first run after a restart (medians of", args.repeats, "restarts)")
    print(f"{'':20} {'request ms':>11} {'trace ms':>9} {'compile ms':>11} {'cache hits':>11}")
    medians = {}
    for name, pairs in rows.items():
        again = [second for _, second in pairs]
        medians[name] = statistics.median(r["wall_ms"] for r in again)
        print(
            f"{name:20} {medians[name]:11.1f} "
            f"{statistics.median(r['trace_ms'] for r in again):9.1f} "
            f"{statistics.median(r['compile_ms'] for r in again):11.1f} "
            f"{statistics.median(r['cache_hits'] for r in again):11.0f}"
        )
    first = statistics.median(first["wall_ms"] for first, _ in rows["with the cache"])
    print(f"first start with the cache (it fills the cache): {first:.1f} ms")
    ratio = medians["without the cache"] / medians["with the cache"]
    print(f"the restart's first jit(grad) is {ratio:.1f}x faster with the cache")


if __name__ == "__main__":
    main()
