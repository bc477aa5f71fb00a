"""A server-wide bound on computations running at once."""

from __future__ import annotations

import threading
from contextlib import contextmanager

from fastapi import HTTPException


class ComputeSlots:
    """At most ``limit`` computations at once; others wait ``wait_seconds``, then get a 503."""

    def __init__(self, limit: int, wait_seconds: float):
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._semaphore = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self):
        if not self._semaphore.acquire(timeout=self.wait_seconds):
            raise HTTPException(
                status_code=503,
                detail=(
                    f"The server is busy: {self.limit} computations are already running "
                    f"(limit max_concurrent_computations={self.limit}). Try again in a moment."
                ),
                headers={"Retry-After": "2"},
            )
        try:
            yield
        finally:
            self._semaphore.release()
