"""Worker processes: every trace, compile, run and training step happens in one of them.

- ``pool``: :class:`WorkerPool` (pebble process pools, a dispatcher with lanes, priorities and
  affinity, a supervisor for time and memory), :class:`TaskHandle`, :class:`RunTracker`;
- ``channel``: :class:`~app.workers.channel.Channel`, the socket pair a worker's tasks go over;
- ``process``: what runs in each worker around its tasks (initializer, task wrapper);
- ``stage``: :func:`stage` and :func:`worker_state`, used by the code that runs in a worker;
- ``errors``: :class:`RunLimitExceeded`, :class:`RunCancelled`, :class:`WorkerLost`,
  :class:`WorkersBusy`.

Why pebble: its ``ProcessPool`` already does what a supervised worker needs (start a process,
run tasks in it, report its death, start a replacement, stop it on a time-out or a
cancellation), is small, pure Python and maintained; the standard library's
``ProcessPoolExecutor`` cannot stop one task or replace one worker (a dead worker breaks the
whole pool). Its own way of sending tasks (through two threads of the web process, with an
acknowledgement) cost 0.3 ms a task here, more than a small run, so tasks go over a
:class:`~app.workers.channel.Channel` instead, one pebble task per worker that serves them.
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
