"""Tasks the worker tests send to real worker processes (module-level: they travel by name)."""

from __future__ import annotations

import os
import time

from app.errors import PlaygroundError
from app.workers import stage, worker_state


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def sleep_in(stage_name: str, seconds: float) -> float:
    with stage(stage_name):
        time.sleep(seconds)
    return seconds


def allocate(megabytes: int, hold_seconds: float = 5.0) -> int:
    """Touch ``megabytes`` of memory, then hold it."""
    with stage("running"):
        block = bytearray(megabytes * 1_000_000)
        for index in range(0, len(block), 4096):
            block[index] = 1
        time.sleep(hold_seconds)
    return len(block)


def refuse() -> None:
    raise PlaygroundError(422, "refused on purpose", field="x")


def fail() -> None:
    raise ValueError("a plain failure")


def count_calls() -> int:
    """How many times this worker ran this task (its state lives as long as it does)."""
    state = worker_state()
    state["calls"] = state.get("calls", 0) + 1
    return state["calls"]


def jax_sum(n: int) -> float:
    import jax.numpy as jnp

    with stage("running"):
        return float(jnp.arange(n, dtype=jnp.float32).sum())


def prepare() -> None:
    """The test pool's worker set-up: JAX imported and its backend started, as the app's
    set-up does, so no task pays for them within its time limit."""
    import jax

    jax.devices()


def unpicklable_result() -> object:
    return lambda: None  # a lambda cannot be pickled


def large(megabytes: int) -> bytes:
    return b"x" * (megabytes * 1_000_000)


def echo(value: object) -> object:
    return value


def raise_unpicklable() -> None:
    class Local(Exception):  # a class made here cannot be pickled by name
        pass

    raise Local("made in the worker")
