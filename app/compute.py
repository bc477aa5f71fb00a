"""A server-wide bound on computations running at once.

A run takes a slot for as long as it traces, compiles and computes. When all slots are taken a
request waits at most ``compute_wait_seconds`` for one, then gets a 503 with ``Retry-After``,
so a crowd of users gets prompt answers instead of a queue that grows without end.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager, contextmanager

import anyio.to_thread

from app.errors import PlaygroundError

RETRY_AFTER_SECONDS = 2


class ComputeBusy(PlaygroundError):
    """503: every compute slot stayed taken for the whole wait."""

    def __init__(self, limit: int, wait_seconds: float):
        super().__init__(
            503,
            f"The server is busy: {limit} computations are already running "
            f"(limit max_concurrent_computations={limit}, "
            f"PLAYGROUND_MAX_CONCURRENT_COMPUTATIONS) and none ended within "
            f"{wait_seconds:g} s. Try again in a moment.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


class ComputeSlots:
    """At most ``limit`` computations at once; others wait ``wait_seconds``, then get a 503.

    ``with slots.slot():`` in synchronous code (FastAPI runs ``def`` endpoints in a thread pool),
    ``async with slots.async_slot():`` in ``async def`` code (the wait happens off the event
    loop).
    """

    def __init__(self, limit: int, wait_seconds: float):
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._semaphore = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.running = 0
        self.refused = 0

    def _acquire(self) -> bool:
        acquired = self._semaphore.acquire(timeout=self.wait_seconds)
        with self._lock:
            if acquired:
                self.running += 1
            else:
                self.refused += 1
        return acquired

    def _release(self) -> None:
        with self._lock:
            self.running -= 1
        self._semaphore.release()

    @contextmanager
    def slot(self):
        if not self._acquire():
            raise ComputeBusy(self.limit, self.wait_seconds)
        try:
            yield
        finally:
            self._release()

    @asynccontextmanager
    async def async_slot(self):
        if not await anyio.to_thread.run_sync(self._acquire):
            raise ComputeBusy(self.limit, self.wait_seconds)
        try:
            yield
        finally:
            self._release()
