"""Absolute links the playground hands out (a share's link, a room's join link).

They are built from ``public_url`` (``PLAYGROUND_PUBLIC_URL``) when it is set, so a server
behind a proxy or reached by several names gives one stable address; otherwise from the
request's own scheme and ``Host``, which the security middleware has already checked against
``allowed_hosts``, so a forged ``Host`` never ends up in a link.
"""

from __future__ import annotations

from starlette.requests import Request

from app.settings import Settings


def absolute_url(request: Request, settings: Settings, path: str) -> str:
    """``path`` (``/s/abc``) as an absolute link for people to open."""
    base = settings.public_url or str(request.base_url)
    return base.rstrip("/") + "/" + path.lstrip("/")


def join_url(request: Request, settings: Settings, code: str) -> str:
    """The absolute join link of the room with join code ``code``."""
    return absolute_url(request, settings, f"/rooms/{code}")
