"""Response headers, cross-site request protection and the request-size limit.

* Every response carries a Content-Security-Policy that allows no remote source (everything is
  served by this server: scripts, styles, fonts, plotly, htmx), ``X-Content-Type-Options:
  nosniff``, ``frame-ancestors 'none'`` (and ``X-Frame-Options: DENY`` for old browsers).
* A state-changing request (POST, PUT, PATCH, DELETE) that a browser marks as coming from another
  site (``Sec-Fetch-Site`` other than same-origin/none, or an ``Origin`` whose host is not this
  server's) is refused with 403 before it reaches the app. Together with the SameSite=Lax
  workspace cookie this protects the forms (the fork button of a shared link) and the JSON API
  against cross-site request forgery. Clients that are not browsers (curl, scripts) send neither
  header and are let through: they hold no victim's cookie.
* A body larger than ``max_body_bytes`` is refused with 413: at once when ``Content-Length``
  says so, or as soon as a streamed (chunked) body passes the limit, so nothing large is kept.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_SECURITY_HEADER_NAMES = {name for name, _ in SECURITY_HEADERS}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_SITE_MESSAGE = (
    "Cross-site requests may not change anything here: this request came from another site "
    "(Origin or Sec-Fetch-Site). Open the playground itself and try again."
)


class BodyTooLarge(HTTPException):
    """Raised while reading a streamed body once it passes the limit; answered as 413."""

    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=body_too_large_message(limit))


def body_too_large_message(limit: int, size: int | str | None = None) -> str:
    size_text = f"is {size} bytes" if size is not None else "is larger than that"
    return (
        f"The request body {size_text}; the limit is {limit} bytes "
        f"(max_body_bytes={limit}, PLAYGROUND_MAX_BODY_BYTES)."
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_json(send: Send, status: int, detail: str, headers=()) -> None:
    body = json.dumps({"detail": detail, "message": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def is_cross_site(scope: Scope) -> bool:
    """Whether a request came from another site, as the browser tells (Sec-Fetch-Site, Origin)."""
    fetch_site = _header(scope, b"sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() not in {"same-origin", "none"}:
        return True
    origin = _header(scope, b"origin")
    if origin is None:
        return False
    origin = origin.strip().lower()
    if origin == "null" or "://" not in origin:
        return True
    host = (_header(scope, b"host") or "").strip().lower()
    origin_host = origin.split("://", 1)[1].rstrip("/")
    return origin_host != host


class SecurityMiddleware:
    """Security headers on every response, a size limit on bodies, no cross-site writes."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        if scope["method"] in UNSAFE_METHODS:
            if is_cross_site(scope):
                await _send_json(send, 403, CROSS_SITE_MESSAGE)
                return
        declared = _header(scope, b"content-length")
        if declared is not None:
            declared = declared.strip()
            if not declared.isdigit():
                await _send_json(send, 400, "The Content-Length header is not a number.")
                return
            if int(declared) > limit:
                await _send_json(send, 413, body_too_large_message(limit, int(declared)))
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = message.get("headers", [])
                kept = [h for h in headers if h[0] not in _SECURITY_HEADER_NAMES]
                message["headers"] = kept + SECURITY_HEADERS
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge as error:
            if response_started:
                raise
            await _send_json(send, 413, str(error.detail))
