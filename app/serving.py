"""How the server holds up under idle, slow and greedy clients.

uvicorn's ``limit_concurrency`` counts every open connection, idle ones included, and answers
503 from inside the server (without the app's security headers) once they pass the limit, so a
few hundred sockets that send nothing shut everyone out; and uvicorn has a keep-alive timeout
but none for a request head that never completes (a slowloris client keeps its connection by
sending one header line every few seconds). This module replaces that policy:

* :class:`GuardedHttpToolsProtocol`, a small subclass of uvicorn's httptools protocol (the
  fastest one it has, and the one the playground already used), closes a connection whose
  request head is not complete ``header_timeout_seconds`` after it opened or after the first
  byte of a later request on it (answering 408), answers a request it cannot parse with a 400
  that carries the security headers, refuses a connection beyond
  ``max_connections_per_client`` from one address or ``max_connections`` in all (a 503 that
  carries the security headers, then closed), and keeps uvicorn's own keep-alive timeout
  (``keep_alive_seconds``) for idle connections between requests.
* :class:`RequestLimit` answers 503 (through the security layer, so with its headers) when
  ``max_concurrent_requests`` requests are already being handled: requests, not connections.
* :class:`KeyedSlots` caps what one key holds at once: a workspace its event streams, a client
  address its computations.
* :class:`ClientAddress` notes each request's client address (:func:`current_client`), which
  the per-client limits count by: a client that drops its cookie gets a new workspace on every
  request, so limits per workspace alone would bound nothing.

``server_options`` is the one place a uvicorn server of the playground is configured: ``python
-m app``, the tests' live server and the benchmarks use it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.errors import PlaygroundError, raw_error_body
from app.security import SECURITY_HEADERS
from app.settings import Settings, get_settings


def raw_response(status: int, reason: str, message: str, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, with the security headers."""
    body = json.dumps({"detail": message, "message": message}).encode()
    head = [f"HTTP/1.1 {status} {reason}".encode()]
    head += [name + b": " + value for name, value in SECURITY_HEADERS]
    head += [
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
    ]
    if extra:
        head.append(extra)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a time limit on request heads and connection caps.

    The limits are read from the process's settings (``app.settings.get_settings``), so every
    worker process of ``python -m app --workers N`` applies them."""

    def __init__(self, *args, settings: Settings | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        settings = settings or get_settings()
        self.header_timeout = settings.header_timeout_seconds
        self.max_connections = settings.max_connections
        self.max_per_client = settings.max_connections_per_client
        self.head_timer: asyncio.TimerHandle | None = None
        self.counted: str | None = None

    def _per_client(self) -> Counter:
        counts = getattr(self.server_state, "connections_per_client", None)
        if counts is None:
            counts = self.server_state.connections_per_client = Counter()
        return counts

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else "?"
        counts = self._per_client()
        counts[address] += 1
        self.counted = address
        if len(self.connections) > self.max_connections:
            self._refuse(
                f"The server has {self.max_connections} connections open, its limit "
                "(max_connections); try again in a moment."
            )
        elif self.max_per_client and counts[address] > self.max_per_client:
            self._refuse(
                f"Your address has {self.max_per_client} connections open, the limit per "
                "client (max_connections_per_client); close some and try again."
            )
        else:
            self._arm_head_timer()

    def _refuse(self, message: str) -> None:
        self.transport.write(raw_response(503, "Service Unavailable", message, b"retry-after: 2"))
        self.transport.close()

    def _arm_head_timer(self) -> None:
        if self.head_timer is None and self.header_timeout > 0:
            self.head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered; its head was complete
        message = (
            f"The request head was not complete within {self.header_timeout:g} s "
            "(header_timeout_seconds)."
        )
        self.transport.write(raw_response(408, "Request Timeout", message))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse, with the security headers."""
        self.transport.write(raw_response(400, "Bad Request", msg))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()  # a later request on a kept-alive connection: its own time

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        if self.counted is not None:
            counts = self._per_client()
            counts[self.counted] -= 1
            if counts[self.counted] <= 0:
                del counts[self.counted]
            self.counted = None
        super().connection_lost(exc)


def server_options(settings: Settings) -> dict:
    """The uvicorn options of every playground server (``uvicorn.run`` or ``uvicorn.Config``
    keywords): ``python -m app``, the tests' live server and the benchmarks use them."""
    return {
        "http": GuardedHttpToolsProtocol,
        "timeout_keep_alive": max(1, round(settings.keep_alive_seconds)),
        "timeout_graceful_shutdown": 5,
    }


class RequestLimit:
    """503 (with ``Retry-After``) once ``limit`` requests are being handled at once."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            message = (
                f"The server is handling {self.limit} requests, its limit "
                "(max_concurrent_requests); try again in a moment."
            )
            body, content_type = raw_error_body(scope.get("headers", []), 503, message)
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", content_type),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", b"2"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class KeyedSlots:
    """At most ``limit`` holders per key at once (0: no limit); ``acquire`` answers 429 beyond,
    naming ``setting`` and its value. A key is a workspace (its event streams) or a client
    address (its computations, :class:`app.compute.ComputeSlots`)."""

    def __init__(
        self,
        limit: int,
        what: str,
        setting: str,
        holder: str = "Your workspace",
        advice: str = "close one (another tab) and try again.",
    ):
        self.limit = limit
        self.what = what
        self.setting = setting
        self.holder = holder
        self.advice = advice
        self._held: Counter = Counter()
        self._lock = threading.Lock()

    def held(self, key: str) -> int:
        with self._lock:
            return self._held[key]

    def acquire(self, key: str):
        """Take one of ``key``'s slots (429 when none is free); call the answer to give it back
        (calling it again does nothing)."""
        with self._lock:
            if self.limit and self._held[key] >= self.limit:
                raise PlaygroundError(
                    429,
                    f"{self.holder} already has {self.limit} {self.what}, the limit "
                    f"({self.setting}={self.limit}, PLAYGROUND_{self.setting.upper()}); "
                    f"{self.advice}",
                    headers={"Retry-After": "5"},
                )
            self._held[key] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._held[key] -= 1
                if self._held[key] <= 0:
                    del self._held[key]

        return release


_CLIENT: ContextVar[str | None] = ContextVar("playground_client", default=None)
YOUR_ADDRESS = "Your address (this computer, or the network it shares with others)"
"""How a refusal per client address names who is refused."""


def current_client() -> str | None:
    """The address of the client whose request is being handled (None outside a request: a
    training job's thread, the warm-up). The thread pool's calls see their request's."""
    return _CLIENT.get()


class ClientAddress:
    """Notes each request's client address for the per-client limits (:func:`current_client`).

    The address is the ASGI scope's ``client``: the connection's peer, or, when uvicorn trusts
    the connecting proxy (its own setting ``FORWARDED_ALLOW_IPS``, default ``127.0.0.1``), the
    client the proxy names in ``X-Forwarded-For``. Nothing else is trusted."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        token = _CLIENT.set(client[0] if client else "unknown")
        try:
            await self.app(scope, receive, send)
        finally:
            _CLIENT.reset(token)
