"""``GET /docs``: the JSON API in Swagger UI, served from this server.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN and starts it with an inline script,
which the Content-Security-Policy forbids; this one takes Swagger UI from
``static/vendor/swagger-ui-5.35.0`` and starts it from ``static/api-docs.js``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.templating import templates

router = APIRouter(include_in_schema=False)

SWAGGER_UI = "/static/vendor/swagger-ui-5.35.0"


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> HTMLResponse:
    """Swagger UI over ``/openapi.json``."""
    return templates.TemplateResponse(
        request,
        "api_docs.html",
        {"swagger_ui": SWAGGER_UI, "openapi_url": request.app.openapi_url},
    )
