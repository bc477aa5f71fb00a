"""Workspaces: each browser gets its own, named by an unguessable id in an HttpOnly cookie."""

from __future__ import annotations

import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE_NAME = "playground_workspace"
_VALID_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")
_COOKIE_MAX_AGE = 60 * 60 * 24 * 180


def new_workspace_id() -> str:
    return secrets.token_urlsafe(24)


def _cookie_value(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, _, val = part.strip().partition("=")
            if key == COOKIE_NAME and _VALID_ID.match(val):
                return val
    return None


class WorkspaceMiddleware:
    """Puts the workspace id in ``scope["state"]["workspace"]``, issuing a cookie if needed."""

    def __init__(self, app: ASGIApp, secure: bool = False):
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        workspace = _cookie_value(scope)
        issue = workspace is None
        if issue:
            workspace = new_workspace_id()
        scope.setdefault("state", {})["workspace"] = workspace

        async def send_with_cookie(message: Message) -> None:
            if issue and message["type"] == "http.response.start":
                cookie = (
                    f"{COOKIE_NAME}={workspace}; Path=/; Max-Age={_COOKIE_MAX_AGE}; "
                    "HttpOnly; SameSite=Lax" + ("; Secure" if self.secure else "")
                )
                message.setdefault("headers", []).append((b"set-cookie", cookie.encode()))
            await send(message)

        await self.app(scope, receive, send_with_cookie)
