"""``GET /library``: the library's reference (``docs/library.md``) as a page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from app.reference import library_reference
from app.templating import templates

router = APIRouter(include_in_schema=False)


@router.get("/library", response_class=HTMLResponse)
async def library_page(request: Request) -> HTMLResponse:
    """The library's public API and its reference training protocol."""
    reference = await run_in_threadpool(library_reference)
    return templates.TemplateResponse(request, "library.html", {"reference": reference})
