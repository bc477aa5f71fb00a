"""Inside a task: say which stage it is in, and keep caches for the worker's lifetime.

``with stage("compiling"):`` makes the stage visible to the web process at once (a shared
integer per worker, read by :attr:`TaskHandle.stage`); it costs a memory write. In a task run
inline (``workers=0``) it reports to the task's handle instead.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any

STAGES = (
    "idle",
    "waiting",
    "starting",
    "tracing",
    "compiling",
    "running",
    "training",
    "computing",
    "done",
)
"""Every stage a task can report, by code (the shared integer holds the index)."""
CODES = {name: code for code, name in enumerate(STAGES)}

_local = threading.local()
_process_stage: Any = None
"""In a worker process: its shared ``multiprocessing.Value`` (set by the initializer)."""
_state: dict[str, Any] = {}


def _set(name: str) -> None:
    code = CODES.get(name, CODES["computing"])
    handle = getattr(_local, "handle", None)
    if handle is not None:  # inline: this thread runs a task for that handle
        handle._stage_code = code
    elif _process_stage is not None:
        _process_stage.value = code


def _get() -> str:
    handle = getattr(_local, "handle", None)
    if handle is not None:
        return STAGES[handle._stage_code]
    if _process_stage is not None:
        return STAGES[_process_stage.value]
    return "idle"


@contextmanager
def stage(name: str):
    """Report ``name`` (one of :data:`STAGES`) as the current task's stage while the block
    runs; the previous stage is back after it."""
    previous = _get()
    _set(name)
    try:
        yield
    finally:
        _set(previous)


def worker_state() -> dict[str, Any]:
    """A dict that lives as long as the worker process (inline: as long as the web process),
    for what a worker keeps warm between tasks: engines, compiled functions."""
    return _state
