"""Load test: N simulated workshop users for T seconds against a playground on loopback.

    .venv/bin/python bench/load.py --users 50 --seconds 300

Unless ``--url`` is given, it starts ``python -m app`` on a free port of 127.0.0.1 with a fresh
temporary data directory, and stops it at the end. Only loopback addresses are accepted.

Each user has its own cookie jar (so its own workspace) and walks the workshop flow in a loop,
with a think time between clicks: open the page, build the seed's Linear (or a small MLP),
inspect its tree, click a leaf, run ``jit(grad)`` of the loss (the first run of a structure
compiles, the next are warm), run per-example gradients, train a little and watch the job until
it ends (pressing Stop after ``--watch`` seconds: a job stopped is counted as an error), share
the module, open the shared link and fork it. Every user stops after ``--max-requests``
requests or when the time is up, whichever comes first.

Each simulated user is a different client: it connects from its own loopback address
(127.0.0.2, 127.0.0.3, ...), so the server's limits per client address apply per user, as for
people at their own computers.

``--hostile K``: K of the N users are hostile. They drop their cookie before every attack (a new
workspace each time) and send heavy requests in a loop, ``--hostile-loops`` at once each (the
default 2 is what ``max_computations_per_client`` allows): deep models, compile bombs (within
the estimates and beyond them), memory bombs, and the longest training the limits allow. The
others do the workshop flow; their errors and warm runs are reported apart, with the hostile
requests' outcomes by attack and status.

    .venv/bin/python bench/load.py --users 50 --hostile 5 --seconds 300

It prints the throughput, p50/p95/max latency and errors per request type (``run (warm)`` is a
run that compiled nothing), and the server's resident memory (VmRSS from /proc: the web process
and every process under it, the workers) sampled over time. ``--json FILE`` also writes
everything as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # helpers.py: shared with the tests

from helpers import LINEAR, free_port  # noqa: E402

RUN_GRAD = {
    "function": "loss",
    "loss": "mean(out)",
    "wrt": "params",
    "transforms": ["grad", "jit"],
    "input": {"shape": [5, 2], "init": "ones"},
}
RUN_PER_EXAMPLE = {
    "function": "loss",
    "loss": "mean(out)",
    "wrt": "params",
    "transforms": ["grad", "vmap", "jit"],
    "input": {"shape": [8, 2], "init": "normal", "seed": 1},
}
TRAIN = {
    "dataset": {"name": "circle", "num_examples": 200, "noise": 0.1, "seed": 0},
    "optimizer": "adam",
    "learning_rate": 0.05,
    "steps": 40,
    "batch_size": 32,
    "seed": 0,
}


def mlp(seed: int) -> dict:
    return {
        "kind": "eqx.nn.MLP",
        "params": {
            "in_size": 2,
            "out_size": 1,
            "width_size": 16,
            "depth": 2,
            "activation": "tanh",
            "seed": seed,
        },
    }


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    sys.exit(f"refusing to load {url}: only loopback addresses (127.0.0.0/8, ::1) are allowed")


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (children, their children, ...), from /proc/*/stat."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in brackets and may hold spaces: the fields after it are plain
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(fields[1])].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def vmrss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> tuple[int, int, int]:
    """Resident memory in KiB of the server ``pid`` and of all the processes under it (its
    workers), and how many those are."""
    others = descendants(pid)
    return vmrss_kib(pid), sum(vmrss_kib(child) for child in others), len(others)


class Stats:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.count = 0

    def add(self, name: str, seconds: float) -> None:
        self.latencies[name].append(seconds * 1000)
        self.count += 1

    def error(self, name: str, message: str) -> None:
        self.errors[name].append(message)
        self.count += 1


def user_address(index: int) -> str:
    """User ``index``'s own loopback address: 127.0.0.2, 127.0.0.3, ..."""
    if not 0 <= index < 250:
        sys.exit("at most 250 users: each has its own address of 127.0.0.2-127.0.0.251")
    return f"127.0.0.{index + 2}"


def client_at(base: str, address: str, timeout: float) -> httpx.AsyncClient:
    """An HTTP client whose connections come from ``address`` (a client of its own)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base, timeout=timeout, transport=transport)


class User:
    def __init__(self, index: int, base: str, stats: Stats, deadline: float, args) -> None:
        self.index = index
        self.stats = stats
        self.deadline = deadline
        self.args = args
        self.requests = 0
        self.random = random.Random(index)
        self.client = client_at(base, user_address(index), args.timeout)

    @property
    def done(self) -> bool:
        return time.monotonic() >= self.deadline or self.requests >= self.args.max_requests

    async def think(self) -> None:
        low, high = self.args.think
        pause = self.random.uniform(low, high)
        await asyncio.sleep(max(0.0, min(pause, self.deadline - time.monotonic())))

    async def call(self, name: str, method: str, url: str, expect=(200,), **kwargs):
        if self.done:
            raise TimeoutError
        self.requests += 1
        start = time.perf_counter()
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            self.stats.error(name, f"{type(error).__name__}: {error}")
            return None
        elapsed = time.perf_counter() - start
        if response.status_code not in expect:
            self.stats.error(name, f"{response.status_code}: {response.text[:200]}")
            return None
        if name == "run":
            compiled = response.json().get("compiled")
            name = "run (cold)" if compiled else "run (warm)"
        self.stats.add(name, elapsed)
        return response

    async def flow(self) -> None:
        response = await self.call("page", "GET", "/", follow_redirects=True)
        await self.think()
        spec = LINEAR if self.random.random() < 0.5 else mlp(self.random.randrange(1000))
        response = await self.call("build", "POST", "/api/modules", json=spec, expect=(201,))
        if response is None:
            return
        module = response.json()["id"]
        await self.think()
        await self.call("tree", "GET", f"/api/modules/{module}")
        await self.think()
        leaf = ".weight" if spec["kind"] == "library.Linear" else ".layers[0].weight"
        await self.call("leaf", "GET", f"/api/modules/{module}/leaf", params={"path": leaf})
        await self.think()
        run = dict(RUN_GRAD)
        if spec["kind"] != "library.Linear":
            run = {**run, "loss": "mean(out ** 2)", "input": {"shape": [2], "init": "ones"}}
            run_vmap = {**RUN_PER_EXAMPLE, "loss": "mean(out ** 2)"}
        else:
            run_vmap = RUN_PER_EXAMPLE
        for _ in range(3):
            await self.call("run", "POST", f"/api/modules/{module}/run", json=run)
            await self.think()
        await self.call("run", "POST", f"/api/modules/{module}/run", json=run_vmap)
        await self.think()
        trainable = spec["kind"] != "library.Linear"  # circle has one output; Linear(2, 3) three
        if trainable and self.random.random() < self.args.train_fraction:
            response = await self.call(
                "train", "POST", f"/api/modules/{module}/train", json=TRAIN, expect=(202,)
            )
            if response is not None:
                await self.watch(response.json()["job"])
                await self.think()
        response = await self.call("share", "POST", f"/api/modules/{module}/share", expect=(201,))
        if response is None:
            return
        share = response.json()["share_id"]
        await self.think()
        await self.call("shared", "GET", f"/api/shared/{share}")
        await self.think()
        await self.call("shared page", "GET", f"/s/{share}")
        await self.think()
        await self.call("fork", "POST", f"/api/shared/{share}/fork", expect=(201,))
        await self.think()

    async def watch(self, job: str) -> None:
        """Watch the job as the page does (its progress every half second) until it ends. After
        ``--watch`` seconds the user presses Stop, as a person would, and waits for the job to
        say so: the page offers no second Train while a job runs. A job that fails, or that
        had to be stopped, is an error."""
        deadline = time.monotonic() + self.args.watch
        stopped = False
        while True:
            await asyncio.sleep(0.5)
            status = await self.call("job", "GET", f"/api/jobs/{job}")
            if status is None:
                return
            state = status.json()["status"]
            if state in {"done", "failed", "stopped"}:
                if state != "done":
                    self.stats.error("train", f"job ended {state}")
                return
            if not stopped and time.monotonic() > deadline:
                stopped = await self.call("stop", "POST", f"/api/jobs/{job}/stop") is not None
                if not stopped:
                    return

    async def run(self) -> None:
        # users arrive over the first seconds, as people in a room do
        await asyncio.sleep(self.random.uniform(0, self.args.ramp))
        try:
            while not self.done:
                await self.flow()
        except TimeoutError:
            pass
        finally:
            await self.client.aclose()


def deep_mlp(depth: int, size: int = 8) -> dict:
    params = {"in_size": size, "out_size": size, "width_size": size, "depth": depth}
    return {"kind": "eqx.nn.MLP", "params": {**params, "seed": 0}}


def custom(call: str, fields: list | None = None) -> dict:
    params = {"name": "Mine", "seed": 0, "fields": fields or [], "call": call}
    return {"kind": "custom", "params": params}


GELU_30 = "gelu(" * 30 + "{}" + ")" * 30
ONE_INPUT = {"function": "loss", "loss": "mean(out)", "wrt": "params", "transforms": ["grad"]}
ATTACKS: dict[str, tuple[dict, str, dict]] = {
    # name: (module, action, body)
    "deep model grad (MLP depth 5000)": (
        deep_mlp(5000),
        "run",
        {**ONE_INPUT, "input": {"shape": [8]}},
    ),
    "long compile (MLP depth 240, grad)": (  # within the estimate: compiles for many seconds
        deep_mlp(240),
        "run",
        {**ONE_INPUT, "input": {"shape": [8]}},
    ),
    "compile bomb (gelu x30 loss, 4 jacfwd)": (
        LINEAR,
        "run",
        {
            **ONE_INPUT,
            "loss": "mean(" + GELU_30.format("out") + ")",
            "transforms": ["jacfwd"] * 4,
            "input": {"shape": [2]},
        },
    ),
    "compile bomb (gelu x30 module, 3 jacfwd)": (  # within the estimate: minutes to compile
        custom(
            GELU_30.format("x @ weight"),
            [{"name": "weight", "role": "param", "shape": [2, 2], "init": "normal"}],
        ),
        "run",
        {
            "function": "forward",
            "wrt": "input",
            "transforms": ["jacfwd"] * 3,
            "input": {"shape": [2]},
        },
    ),
    "memory bomb (one_hot, 4 GB)": (
        custom("x"),
        "run",
        {
            **ONE_INPUT,
            "loss": "sum(one_hot(x, 10000))",
            "transforms": [],
            "input": {"shape": [100_000]},
        },
    ),
    "memory bomb (sort of outer, 1.6 GB)": (  # within the memory analysis' limit
        custom("x"),
        "run",
        {
            **ONE_INPUT,
            "loss": "max(sort(outer(x, x)))",
            "transforms": [],
            "input": {"shape": [20_000]},
        },
    ),
    "longest training (20,000 steps)": (
        mlp(0),
        "train",
        {**TRAIN, "steps": 20_000, "dataset": {"name": "circle", "num_examples": 2000}},
    ),
}


class Hostile:
    """A hostile user: from its own address, ``loops`` attack loops at once, each attack in a
    new workspace (the cookie dropped), no think time."""

    def __init__(self, index: int, base: str, deadline: float, args) -> None:
        self.index = index
        self.deadline = deadline
        self.random = random.Random(1000 + index)
        self.clients = [
            client_at(base, user_address(index), args.hostile_timeout)
            for _ in range(args.hostile_loops)
        ]
        self.outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.builds: dict[str, list[float]] = defaultdict(list)

    async def attack(self, client: httpx.AsyncClient, name: str) -> None:
        module, action, body = ATTACKS[name]
        client.cookies.clear()  # a new workspace for every attack
        try:
            start = time.perf_counter()
            built = await client.post("/api/modules", json=module)
            self.builds[name].append((time.perf_counter() - start) * 1000)
            if built.status_code != 201:
                self.outcomes[name][f"build {built.status_code}"] += 1
                return
            start = time.perf_counter()
            url = f"/api/modules/{built.json()['id']}/{action}"
            response = await client.post(url, json=body, params={"include": "none"})
        except httpx.HTTPError as error:
            self.outcomes[name][type(error).__name__] += 1
            return
        self.latencies[name].append((time.perf_counter() - start) * 1000)
        self.outcomes[name][str(response.status_code)] += 1

    async def loop(self, client: httpx.AsyncClient) -> None:
        names = list(ATTACKS)
        try:
            while time.monotonic() < self.deadline:
                await self.attack(client, self.random.choice(names))
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()

    async def run(self) -> None:
        await asyncio.gather(*(self.loop(client) for client in self.clients))


async def sample_memory(pid: int | None, samples: list, stop: asyncio.Event, every: float):
    start = time.monotonic()
    while pid is not None and not stop.is_set():
        samples.append((round(time.monotonic() - start, 1), *rss_kib(pid)))
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            pass


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def load(base: str, pid: int | None, args) -> dict:
    stats = Stats()
    deadline = time.monotonic() + args.seconds
    # the hostile users are spread among the others (users 0, N/K, 2N/K, ...)
    hostile_at = {round(i * args.users / args.hostile) for i in range(args.hostile)}
    users = [User(i, base, stats, deadline, args) for i in range(args.users) if i not in hostile_at]
    hostile = [Hostile(i, base, deadline, args) for i in sorted(hostile_at)]
    memory: list[tuple[float, int, int, int]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_memory(pid, memory, stop, args.memory_every))
    start = time.monotonic()
    await asyncio.gather(*(user.run() for user in [*users, *hostile]))
    elapsed = time.monotonic() - start
    stop.set()
    await sampler
    if pid is not None:
        memory.append((round(elapsed, 1), *rss_kib(pid)))
    rows = {}
    for name in sorted(set(stats.latencies) | set(stats.errors)):
        values = stats.latencies.get(name, [])
        rows[name] = {
            "count": len(values),
            "errors": len(stats.errors.get(name, [])),
            "p50_ms": round(percentile(values, 50), 1),
            "p95_ms": round(percentile(values, 95), 1),
            "max_ms": round(max(values), 1) if values else None,
            "mean_ms": round(statistics.fmean(values), 1) if values else None,
        }
    outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    latencies: dict[str, list[float]] = defaultdict(list)
    builds: dict[str, list[float]] = defaultdict(list)
    for one in hostile:
        for name, values in one.builds.items():
            builds[name] += values
        for name, counts in one.outcomes.items():
            for status, count in counts.items():
                outcomes[name][status] += count
        for name, values in one.latencies.items():
            latencies[name] += values
    return {
        "users": args.users,
        "hostile": args.hostile,
        "hostile_outcomes": {
            name: {
                "statuses": dict(sorted(outcomes[name].items())),
                "p50_ms": round(percentile(latencies[name], 50), 1),
                "max_ms": round(max(latencies[name]), 1) if latencies[name] else None,
                "build_p50_ms": round(percentile(builds[name], 50), 1),
                "build_seconds": round(sum(builds[name]) / 1000, 1),
            }
            for name in ATTACKS
            if name in outcomes
        },
        "seconds": round(elapsed, 1),
        "requests": stats.count,
        "throughput_rps": round(stats.count / elapsed, 1),
        "errors": sum(len(v) for v in stats.errors.values()),
        "error_examples": {k: v[:3] for k, v in stats.errors.items()},
        "by_type": rows,
        "memory_kib": memory,
    }


def report(result: dict) -> str:
    others = result["users"] - result["hostile"]
    lines = [
        f"{result['users']} users ({result['hostile']} hostile), {result['seconds']} s: "
        f"the {others} others sent {result['requests']} requests, "
        f"{result['throughput_rps']} requests/s, {result['errors']} errors",
        "",
        f"{'request':<14}{'count':>7}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}",
    ]
    for name, row in result["by_type"].items():
        lines.append(
            f"{name:<14}{row['count']:>7}{row['errors']:>8}{row['p50_ms']:>9}{row['p95_ms']:>9}"
            f"{row['max_ms'] if row['max_ms'] is not None else '-':>9}"
        )
    for name, examples in result["error_examples"].items():
        lines.append(f"errors of {name}: {examples}")
    if result["hostile"]:
        lines += ["", "hostile requests (each in a new workspace), outcomes by status:"]
        for name, row in result["hostile_outcomes"].items():
            statuses = ", ".join(f"{status}: {n}" for status, n in row["statuses"].items())
            lines.append(
                f"  {name}: {statuses} (p50 {row['p50_ms']} ms, max {row['max_ms']} ms; "
                f"its builds: p50 {row['build_p50_ms']} ms, {row['build_seconds']} s in all)"
            )
    memory = result["memory_kib"]
    if memory:
        lines.append("")
        lines.append("server memory (VmRSS, MiB) over time: total = web process + workers (n)")
        step = max(1, len(memory) // 12)
        picked = memory[::step] + ([memory[-1]] if (len(memory) - 1) % step else [])
        for t, web, workers, count in picked:
            lines.append(
                f"  {t:>6g} s  {(web + workers) / 1024:>6.0f} = {web / 1024:.0f} + "
                f"{workers / 1024:.0f} ({count})"
            )
        totals = [web + workers for _, web, workers, _ in memory]
        warm = [
            total
            for (t, *_), total in zip(memory, totals, strict=True)
            if t >= min(60.0, result["seconds"] / 5)
        ]
        if len(warm) >= 2:
            growth = (warm[-1] - warm[0]) / 1024
            lines.append(
                f"  after warm-up: {warm[0] / 1024:.0f} MiB -> {warm[-1] / 1024:.0f} MiB "
                f"({growth:+.0f} MiB), peak {max(totals) / 1024:.0f} MiB"
            )
    return "\n".join(lines)


def start_server(data_dir: Path, port: int, workers: int, env_extra: dict) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_")}
    env.update({"PLAYGROUND_DATA_DIR": str(data_dir), **env_extra})
    command = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers), "--log-level", "warning"]
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def wait_healthy(base: str, process: subprocess.Popen | None, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            sys.exit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"the server at {base} did not become healthy in {seconds:g} s")


@contextlib.contextmanager
def served(url: str | None, env_extra: dict, workers: int, prefix: str):
    """``(base URL, server pid or None)``: the server at ``url`` (loopback only), or a
    ``python -m app`` started on a free port with a fresh temporary data directory and
    stopped at the end."""
    if url:
        base = url.rstrip("/")
        check_loopback(base)
        wait_healthy(base, None)
        yield base, None
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = start_server(Path(tmp) / "data", port, workers, env_extra)
        try:
            wait_healthy(base, process)
            yield base, process.pid
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--url", help="a running server on loopback (default: start one)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (started)")
    parser.add_argument("--max-requests", type=int, default=2000, help="per user")
    parser.add_argument("--think", type=float, nargs=2, default=(0.5, 2.0), metavar=("MIN", "MAX"))
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which users arrive")
    parser.add_argument(
        "--train-fraction", type=float, default=0.6, help="MLP flows that train (half build one)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument(
        "--watch", type=float, default=30.0, help="seconds a user watches its job before Stop"
    )
    parser.add_argument("--memory-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--hostile", type=int, default=0, help="hostile users among --users")
    parser.add_argument(
        "--hostile-loops", type=int, default=2, help="attacks at once per hostile user"
    )
    parser.add_argument(
        "--hostile-timeout", type=float, default=90.0, help="per hostile request, seconds"
    )
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.users < 1 or args.seconds <= 0 or args.max_requests < 1:
        parser.error("--users, --seconds and --max-requests must be positive")
    if not 0 <= args.hostile < args.users or args.hostile_loops < 1:
        parser.error("--hostile must be at least 0 and less than --users")

    env_extra = dict(item.split("=", 1) for item in args.env)
    with served(args.url, env_extra, args.workers, "playground-load-") as (base, pid):
        print(f"load: {args.users} users for {args.seconds:g} s against {base}", flush=True)
        result = asyncio.run(load(base, pid, args))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
