"""Frames a second that a playing training job sends to its page, and the time one frame takes.

A real uvicorn server runs on 127.0.0.1 in a thread of this process. A 2-16-16-1 tanh MLP
trains on ``circle`` (400 examples) for 20,000 steps spread over ``--watch`` seconds (as the
page asks), and this script reads the page's stream, ``GET /m/{id}/jobs/{job}/frames``
(server-sent ``frame`` events with the counters and the figures: boundary, loss, accuracy),
for ``--seconds`` seconds while the job plays. It prints the frames received per second (the
page redraws once per frame; the target is at least 4), the median gap between two frames,
the median size of a frame, and how often the boundary changed between frames.

    .venv/bin/python bench/training_frames.py [--seconds 10] [--watch 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

MLP = {"in_size": 2, "out_size": 1, "width_size": 16, "depth": 2, "activation": "tanh"}


def serve(data_dir: str) -> tuple[uvicorn.Server, int]:
    config = uvicorn.Config(
        create_app(Settings(data_dir=Path(data_dir))), host="127.0.0.1", port=0, log_level="error"
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, port


def request(port: int, method: str, path: str, body=None, cookie: str | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if cookie:
        headers["Cookie"] = cookie
    connection.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = connection.getresponse()
    return response, connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--watch", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        server, port = serve(data_dir)
        response, connection = request(port, "GET", "/")
        cookie = response.getheader("set-cookie").split(";")[0]
        connection.close()
        response, connection = request(
            port, "POST", "/api/modules", {"kind": "eqx.nn.MLP", "params": MLP}, cookie
        )
        module = json.loads(response.read())["id"]
        body = {
            "dataset": {"name": "circle", "noise": 0.05, "num_examples": 400},
            "steps": 20_000,
            "watch_seconds": args.watch,
        }
        response, connection = request(port, "POST", f"/api/modules/{module}/train", body, cookie)
        job = json.loads(response.read())["job"]
        # wait until it plays (the first job compiles its step)
        while True:
            response, connection = request(port, "GET", f"/api/jobs/{job}", cookie=cookie)
            if json.loads(response.read())["step"] > 0:
                break
            time.sleep(0.1)
        response, connection = request(port, "GET", f"/m/{module}/jobs/{job}/frames", cookie=cookie)
        times, sizes, views = [], [], []
        started = time.perf_counter()
        event = None
        while time.perf_counter() - started < args.seconds:
            line = response.fp.readline().decode()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "frame":
                times.append(time.perf_counter())
                sizes.append(len(line))
                frame = json.loads(line[5:])
                views.append(json.dumps(frame["figures"].get("view", {}).get("data", [])[:1]))
            elif event == "end":
                break
        connection.close()
        request(port, "POST", f"/api/jobs/{job}/stop", cookie=cookie)[1].close()
        server.should_exit = True
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    changed = sum(1 for a, b in zip(views, views[1:], strict=False) if a != b)
    print(f"frames: {len(times)} in {span:.2f} s: {(len(times) - 1) / span:.2f} frames/s")
    print(f"median gap between frames: {1000 * statistics.median(gaps):.0f} ms")
    print(f"median frame size: {statistics.median(sizes) / 1024:.1f} KiB")
    print(f"boundary changed between frames: {changed} of {len(views) - 1}")


if __name__ == "__main__":
    main()
