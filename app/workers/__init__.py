"""Worker processes: every trace, compile, run and training step happens in one of them.

- ``pool``: :class:`WorkerPool` (pebble process pools, a dispatcher with lanes, priorities and
  affinity, a supervisor for time and memory), :class:`TaskHandle`, :class:`RunTracker`;
- ``process``: what runs in each worker around its tasks (initializer, task wrapper);
- ``stage``: :func:`stage` and :func:`worker_state`, used by the code that runs in a worker;
- ``errors``: :class:`RunLimitExceeded`, :class:`RunCancelled`, :class:`WorkerLost`,
  :class:`WorkersBusy`.

Why pebble: its ``ProcessPool`` already does what a supervised worker needs (start a process,
run tasks in it, report its death, start a replacement, stop it on a time-out or a
cancellation), is small, pure Python and maintained; the standard library's
``ProcessPoolExecutor`` cannot stop one task or replace one worker (a dead worker breaks the
whole pool).
"""

from app.workers.errors import RunCancelled, RunLimitExceeded, WorkerLost, WorkersBusy
from app.workers.pool import (
    ClientUsage,
    Lane,
    RunTracker,
    TaskHandle,
    WorkerPool,
    resident_bytes,
)
from app.workers.stage import STAGES, stage, worker_state

__all__ = [
    "STAGES",
    "ClientUsage",
    "Lane",
    "RunCancelled",
    "RunLimitExceeded",
    "RunTracker",
    "TaskHandle",
    "WorkerLost",
    "WorkerPool",
    "WorkersBusy",
    "resident_bytes",
    "stage",
    "worker_state",
]
