"""Every error answer is a clear 4xx in plain words; HTML for htmx requests, JSON otherwise."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from markupsafe import escape
from pydantic import ValidationError

logger = logging.getLogger("playground")


class PlaygroundError(Exception):
    """A refusal with a status code and a message for the user (``field`` names the input)."""

    def __init__(self, status_code: int, message: str, field: str | None = None, headers=None):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.field = field
        self.headers = headers

    def __reduce__(self):
        # Rebuilt from its attributes, not its constructor's arguments (subclasses take other
        # ones), so a refusal raised in a worker process is the same refusal in the web process.
        return _rebuild_error, (type(self), self.args, self.__dict__)


def _rebuild_error(cls: type, args: tuple, state: dict) -> PlaygroundError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


def _location(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) if parts else "request"


def describe_validation_errors(errors) -> str:
    """One line per problem: ``params.in_dim: Input should be less than or equal to 4096``."""
    return "; ".join(f"{_location(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors)


def _jsonable_errors(errors) -> list[dict]:
    out = []
    for error in errors:
        out.append(
            {
                "loc": [p if isinstance(p, int | str) else str(p) for p in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return out


def wants_html(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


HEADLINES = {
    404: "Not found.",
    409: "It changed meanwhile.",
    413: "That is too large.",
    429: "Too many at once.",
    503: "The server is busy.",
}
"""What a page shows before an error's message: plain words, never a status code."""


def headline(status: int) -> str:
    if status >= 500 and status != 503:
        return "The server failed."
    return HEADLINES.get(status, "This cannot be done.")


def error_fragment(status: int, message: str) -> str:
    """The HTML an htmx request gets for an error: a headline in plain words and the message,
    fit for the place its answer goes (a panel's result area shows it as it is)."""
    return (
        f'<div class="error" role="alert"><strong>{headline(status)}</strong> '
        f"{escape(message)}</div>"
    )


def raw_error_body(headers: list[tuple[bytes, bytes]], status: int, message: str):
    """``(body, content type)`` of an error answered by middleware, before any router: the
    fragment for htmx (``HX-Request: true``), the API's JSON otherwise."""
    if (b"hx-request", b"true") in headers:
        return error_fragment(status, message).encode(), b"text/html; charset=utf-8"
    return json.dumps({"detail": message, "message": message}).encode(), b"application/json"


def error_response(request: Request, status: int, message: str, detail=None, headers=None):
    if wants_html(request):
        return HTMLResponse(error_fragment(status, message), status_code=status, headers=headers)
    return JSONResponse(
        {"detail": detail if detail is not None else message, "message": message},
        status_code=status,
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def request_validation(request: Request, exc: RequestValidationError):
        errors = _jsonable_errors(exc.errors())
        return error_response(request, 422, describe_validation_errors(errors), errors)

    @app.exception_handler(ValidationError)
    async def model_validation(request: Request, exc: ValidationError):
        errors = _jsonable_errors(exc.errors())
        return error_response(request, 422, describe_validation_errors(errors), errors)

    @app.exception_handler(PlaygroundError)
    async def playground_error(request: Request, exc: PlaygroundError):
        detail = [{"loc": exc.field.split("."), "msg": exc.message}] if exc.field else None
        return error_response(request, exc.status_code, exc.message, detail, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error_response(
            request, exc.status_code, str(exc.detail), None, getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(
            request,
            500,
            f"The server failed on this request ({type(exc).__name__}). "
            "This is a bug in the playground; please report it with what you did.",
        )
