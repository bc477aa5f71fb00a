"""A room of thirty presses Train at once: how long until each job shows progress, and is done.

    .venv/bin/python bench/room.py                 # 30 workspaces, 2 rounds
    .venv/bin/python bench/room.py --users 30 --rounds 2 --env PLAYGROUND_WORKERS=3

It starts ``python -m app`` on a free port of 127.0.0.1 with a fresh temporary data directory
(unless ``--url`` names a running one on loopback). Each of ``--users`` workspaces (its own
cookie jar, its own loopback address, as people at their own computers) builds the 2-16-16-1
tanh MLP; then, all at the same moment, each presses Train as the page does: 500 Adam steps on
circle, watched over 5 s, and follows its job's events (``/api/jobs/{id}/events``, the stream
a page reads). For every job it prints the time from its Train to its first progress (a step
done) and to done, then the slowest of each against the targets (every first progress within
3 s, every job done within 30 s).

Round 1 is a fresh server (each worker compiles the training step once); the next rounds are
the same room pressing Train again (new modules of the same structure: nothing compiles).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
from load import client_at, served, user_address

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # helpers.py: shared with the tests


MLP = {
    "kind": "eqx.nn.MLP",
    "params": {"in_size": 2, "out_size": 1, "width_size": 16, "depth": 2, "activation": "tanh"},
}
TRAIN = {"dataset": "circle", "optimizer": "adam", "steps": 500, "watch_seconds": 5.0}
FIRST_PROGRESS_TARGET = 3.0
DONE_TARGET = 30.0


async def follow(client: httpx.AsyncClient, job: str, pressed: float, timeout: float) -> dict:
    """Read the job's events until it ends: the seconds from ``pressed`` to its first step and
    to its end, and its last record."""
    first = None
    async with client.stream("GET", f"/api/jobs/{job}/events", timeout=timeout) as response:
        response.raise_for_status()
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: ") and name in ("progress", "end"):
                record = json.loads(line[len("data: ") :])
                now = time.perf_counter() - pressed
                if first is None and record["step"] > 0:
                    first = now
                if name == "end":
                    return {"first": first, "done": now, "status": record["status"], **record}
    raise RuntimeError(f"the events of job {job} closed before it ended")


async def room_round(clients: list[httpx.AsyncClient], timeout: float) -> list[dict]:
    modules = []
    for client in clients:
        response = await client.post("/api/modules", json=MLP)
        response.raise_for_status()
        modules.append(response.json()["id"])
    start = asyncio.Event()

    async def press(client: httpx.AsyncClient, module: str) -> dict:
        await start.wait()
        pressed = time.perf_counter()
        response = await client.post(f"/api/modules/{module}/train", json=TRAIN)
        if response.status_code != 202:
            return {"status": f"refused {response.status_code}: {response.text[:200]}"}
        answered = time.perf_counter() - pressed
        result = await follow(client, response.json()["job"], pressed, timeout)
        return {**result, "answered": answered}

    tasks = [asyncio.create_task(press(c, m)) for c, m in zip(clients, modules, strict=True)]
    await asyncio.sleep(0.2)  # every task waits at the start line
    start.set()
    return await asyncio.gather(*tasks)


def summary(results: list[dict]) -> tuple[str, bool]:
    ok = [r for r in results if r.get("status") == "done"]
    lines = []
    for index, r in enumerate(results):
        if r.get("status") != "done":
            lines.append(f"  job {index:2d}: {r.get('status')} {r.get('error') or ''}")
            continue
        lines.append(
            f"  job {index:2d}: Train answered in {r['answered'] * 1000:5.0f} ms, first progress "
            f"{r['first']:5.2f} s, done {r['done']:5.2f} s (computed {r['compute_seconds']:.2f} s)"
        )
    if len(ok) < len(results):
        return "\n".join(lines) + f"\n  {len(results) - len(ok)} job(s) did not finish", False
    firsts = [r["first"] for r in ok]
    dones = [r["done"] for r in ok]
    met = max(firsts) <= FIRST_PROGRESS_TARGET and max(dones) <= DONE_TARGET
    lines.append(
        f"  first progress: median {statistics.median(firsts):.2f} s, slowest {max(firsts):.2f} s "
        f"(target {FIRST_PROGRESS_TARGET:g} s)"
    )
    lines.append(
        f"  done: median {statistics.median(dones):.2f} s, slowest {max(dones):.2f} s "
        f"(target {DONE_TARGET:g} s; a job watched over 5 s cannot end sooner)"
    )
    lines.append(f"  targets {'met' if met else 'NOT met'}")
    return "\n".join(lines), met


async def bench(base: str, args) -> bool:
    clients = [client_at(base, user_address(i), args.timeout) for i in range(args.users)]
    met = True
    try:
        for round_ in range(1, args.rounds + 1):
            began = time.perf_counter()
            results = await room_round(clients, args.timeout)
            what = "fresh server" if round_ == 1 and not args.url else "again"
            print(
                f"round {round_} ({what}): {args.users} jobs in {time.perf_counter() - began:.1f} s"
            )
            text, round_met = summary(results)
            print(text, flush=True)
            met = met and round_met
    finally:
        for client in clients:
            await client.aclose()
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--url", help="a running server on loopback (default: start one)")
    parser.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args()
    env_extra = dict(item.split("=", 1) for item in args.env)
    with served(args.url, env_extra, 1, "playground-room-") as (base, _):
        settings = ", ".join(args.env) or "the default settings"
        print(f"room: {args.users} workspaces press Train at once against {base} ({settings})")
        met = asyncio.run(bench(base, args))
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
