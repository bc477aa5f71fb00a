"""Response headers, trusted hosts, cross-site request protection and the request-size limit.

This middleware is the app's outermost layer (see ``app.main.PlaygroundApp``), outside even
Starlette's handler of unexpected errors, so what it adds is on every answer the app sends.

* Every response carries a Content-Security-Policy that allows no remote source (everything is
  served by this server: scripts, styles, fonts, plotly, htmx), ``X-Content-Type-Options:
  nosniff``, ``frame-ancestors 'none'`` (and ``X-Frame-Options: DENY`` for old browsers) and
  ``Referrer-Policy: same-origin``: pages, fragments, JSON, 4xx and 500 alike.
* A request whose ``Host`` is not one of ``allowed_hosts`` (``PLAYGROUND_ALLOWED_HOSTS``; the
  host of ``public_url`` is added) is refused with 400: a page of another name that resolves to
  this server (DNS rebinding) cannot talk to it.
* A state-changing request (POST, PUT, PATCH, DELETE) that a browser marks as coming from another
  site (``Sec-Fetch-Site`` other than same-origin/none, or an ``Origin`` whose host is not one of
  the allowed hosts; never compared with the request's own ``Host``) is refused with 403 before
  it reaches the app. Together with the SameSite=Lax workspace cookie this protects the forms
  (the fork button of a shared link) and the JSON API against cross-site request forgery.
  Clients that are not browsers (curl, scripts) send neither header and are let through: they
  hold no victim's cookie.
* A body larger than ``max_body_bytes`` is refused with 413: at once when ``Content-Length``
  says so, or as soon as a streamed (chunked) body passes the limit, so nothing large is kept.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PlaygroundError, raw_error_body
from app.settings import Settings

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


class BodyTooLarge(PlaygroundError):
    """Raised while reading a streamed body once it passes the limit; answered as 413."""

    def __init__(self, limit: int):
        super().__init__(413, body_too_large_message(limit))


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


async def _send_error(scope: Scope, send: Send, status: int, detail: str, headers=()) -> None:
    body, content_type = raw_error_body(scope.get("headers", []), status, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def split_host(text: str) -> tuple[str, str | None]:
    """``"Example.org:8000"`` -> ``("example.org", "8000")``; ``"[::1]:80"`` -> ``("::1", "80")``;
    no port: ``None``."""
    text = text.strip().lower().rstrip(".")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, None


class HostPolicy:
    """Which ``Host`` names (and ``Origin`` hosts) this server answers: entries of
    ``allowed_hosts`` are names (any port) or ``name:port``; ``*`` allows every name."""

    def __init__(self, settings: Settings):
        self.entries = {split_host(entry) for entry in settings.trusted_hosts()}
        self.any = ("*", None) in self.entries

    def allows(self, authority: str) -> bool:
        if self.any:
            return True
        host, port = split_host(authority)
        return bool(host) and ((host, None) in self.entries or (host, port) in self.entries)


def is_cross_site(scope: Scope, hosts: HostPolicy) -> bool:
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
    scheme, _, authority = origin.partition("://")
    if scheme not in ("http", "https") or "/" in authority.rstrip("/"):
        return True
    return not hosts.allows(authority.rstrip("/"))


def host_refused_message(host: str | None) -> str:
    shown = repr(host[:80]) if host else "missing"
    return (
        f"The Host header is {shown}, which is not a name this server answers to; the allowed "
        "names are set by allowed_hosts (PLAYGROUND_ALLOWED_HOSTS)."
    )


class SecurityMiddleware:
    """Security headers on every response, trusted hosts only, a size limit on bodies, no
    cross-site writes."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.max_body_bytes = settings.max_body_bytes
        self.hosts = HostPolicy(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        host = _header(scope, b"host")
        if host is None or not self.hosts.allows(host):
            await _send_error(scope, send, 400, host_refused_message(host))
            return
        if scope["method"] in UNSAFE_METHODS:
            if is_cross_site(scope, self.hosts):
                await _send_error(scope, send, 403, CROSS_SITE_MESSAGE)
                return
        declared = _header(scope, b"content-length")
        if declared is not None:
            declared = declared.strip()
            if not (declared.isascii() and declared.isdigit()) or len(declared) > 18:
                await _send_error(scope, send, 400, "The Content-Length header is not a number.")
                return
            if int(declared) > limit:
                await _send_error(scope, send, 413, body_too_large_message(limit, int(declared)))
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
            await _send_error(scope, send, 413, error.message)
