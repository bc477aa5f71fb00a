"""What runs in each worker process around its tasks: the initializer and the task wrapper."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from app.workers import stage as stage_module
from app.workers.stage import CODES


def initialize(
    pid_value: Any, stage_value: Any, nice: int, setup: Callable | None, setup_args: tuple
) -> None:
    """Run once in each new worker process, before its first task: lower its CPU priority by
    ``nice`` (before JAX starts its threads, which inherit it), publish its pid and stage to
    the web process, then ``setup(*setup_args)`` (e.g. configure JAX's caches)."""
    if nice:
        os.nice(nice)
    stage_module._process_stage = stage_value
    stage_value.value = CODES["idle"]
    if setup is not None:
        setup(*setup_args)
    pid_value.value = os.getpid()  # ready: the web process prefers it to a worker still starting


def run_task(fn: Callable, args: tuple) -> Any:
    """``fn(*args)`` with the stage shown as ``computing`` until the task reports its own,
    and ``idle`` afterwards."""
    with stage_module.stage("computing"):
        return fn(*args)


def ping() -> int:
    """A task that does nothing: starts a worker, or measures the pool's own cost."""
    return os.getpid()
