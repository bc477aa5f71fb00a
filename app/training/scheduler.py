"""The order in which running jobs get their chunks: round robin, paced jobs when they are due.

A :class:`ChunkScheduler` has one thread. A job with a chunk to run is *ready* (a FIFO: after
its chunk a job goes to the back, so every running job advances in turn) or *sleeping* until a
given time (a watched job whose next steps are not due yet: the pacing delays when its chunk is
scheduled, it never holds a worker). At most ``slots`` chunks are in flight at once; the
scheduler asks ``dispatch(job)`` for a job's chunk (a ``Future``, or None when the job has
nothing to run now) and hands each finished chunk to ``complete(job, future)``, which says
where the job goes next by calling :meth:`add` (or nothing, when it ended or parked).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger("playground.training")


class ChunkScheduler:
    """Ready jobs in turn, sleeping jobs when due, at most ``slots`` chunks in flight."""

    def __init__(
        self,
        dispatch: Callable[[Any], Future | None],
        complete: Callable[[Any, Future], None],
        slots: int,
    ):
        self._dispatch = dispatch
        self._complete = complete
        self.slots = max(1, slots)
        self._ready: deque = deque()
        self._sleeping: list[tuple[float, int, Any]] = []
        self._done: deque[tuple[Any, Future]] = deque()
        self._in_flight = 0
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, job: Any, at: float | None = None) -> None:
        """``job`` has a chunk to run: now (at the back of the turn), or from time ``at``
        (``time.monotonic()``)."""
        with self._cond:
            job._wake_at = at
            if at is None or at <= time.monotonic():
                job._wake_at = None
                self._ready.append(job)
            else:
                heapq.heappush(self._sleeping, (at, next(self._order), job))
            self._start()
            self._cond.notify_all()

    def wake(self, job: Any) -> None:
        """A sleeping ``job`` runs now (it was stopped or paused: that should not wait for
        its pace)."""
        with self._cond:
            if getattr(job, "_wake_at", None) is not None:
                job._wake_at = None
                self._ready.append(job)  # its entry in the heap is skipped when it comes up
                self._cond.notify_all()

    def close(self, timeout: float) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(
                target=self._loop, name="training-scheduler", daemon=True
            )
            self._thread.start()

    def _finished(self, job: Any, future: Future) -> None:
        with self._cond:
            self._done.append((job, future))
            self._cond.notify_all()

    def _next(self) -> tuple[str, Any] | None:
        """What to do next (the caller holds the lock): a finished chunk, a ready job, or
        None (wait)."""
        if self._done:
            return "done", self._done.popleft()
        now = time.monotonic()
        while self._sleeping and self._sleeping[0][0] <= now:
            at, _, job = heapq.heappop(self._sleeping)
            if job._wake_at == at:  # else woken early, or added again since
                job._wake_at = None
                self._ready.append(job)
        if self._ready and self._in_flight < self.slots:
            return "run", self._ready.popleft()
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    item = self._next()
                    if item is not None or self._closed:
                        break
                    wait = self._sleeping[0][0] - time.monotonic() if self._sleeping else None
                    self._cond.wait(wait)
                if item is None:
                    return
                what, value = item
                if what == "run":
                    self._in_flight += 1
            try:
                if what == "done":
                    with self._cond:
                        self._in_flight -= 1
                    self._complete(*value)
                    continue
                future = self._dispatch(value)
            except Exception:  # noqa: BLE001 - the scheduler must survive anything
                logger.exception("training scheduler: a job's chunk could not be handled")
                future = None
                if what == "done":
                    continue
            if future is None:
                with self._cond:
                    self._in_flight -= 1
                continue
            future.add_done_callback(lambda f, job=value: self._finished(job, f))
