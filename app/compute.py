"""Bounds on computations running at once: per client address, then server-wide.

A run takes a slot for as long as it traces, compiles and computes. First its client address's
(``max_computations_per_client``, counted by :class:`app.serving.KeyedSlots` on the address
:func:`app.serving.current_client` names): one more from that address gets a 429 at once,
without waiting, so a client with many cookies (a new workspace on every request) cannot hold
the server's slots or fill its thread pool with waiting requests. Then one of the server's
``max_concurrent_computations``: when all are taken a request waits at most
``compute_wait_seconds`` for one, then gets a 503 with ``Retry-After``, so a crowd of users gets
prompt answers instead of a queue that grows without end.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager, contextmanager

import anyio.to_thread

from app.errors import PlaygroundError
from app.serving import YOUR_ADDRESS, KeyedSlots, current_client

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
    """At most ``per_client`` computations at once per client address (429 beyond, at once)
    and ``limit`` in all (others wait ``wait_seconds``, then get a 503).

    ``with slots.slot():`` in synchronous code (FastAPI runs ``def`` endpoints in a thread pool),
    ``async with slots.async_slot():`` in ``async def`` code (the wait happens off the event
    loop). ``with slots.client_slot():`` takes the client's slot alone, for a computation that
    waits for its server-wide resource elsewhere (a worker of the pool).
    """

    def __init__(self, limit: int, wait_seconds: float, per_client: int = 0):
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._semaphore = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.running = 0
        self.refused = 0
        self.clients = KeyedSlots(
            per_client,
            "computation(s) running",
            "max_computations_per_client",
            holder=YOUR_ADDRESS,
            advice="wait for it to finish and try again.",
        )

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
    def client_slot(self):
        """The current request's client address's slot (nothing outside a request)."""
        client = current_client()
        release = self.clients.acquire(client) if client is not None else None
        try:
            yield
        finally:
            if release is not None:
                release()

    @contextmanager
    def slot(self):
        """A server-wide slot (and the client's)."""
        with self.client_slot():
            if not self._acquire():
                raise ComputeBusy(self.limit, self.wait_seconds)
            try:
                yield
            finally:
                self._release()

    @asynccontextmanager
    async def async_slot(self):
        with self.client_slot():
            if not await anyio.to_thread.run_sync(self._acquire):
                raise ComputeBusy(self.limit, self.wait_seconds)
            try:
                yield
            finally:
                self._release()
