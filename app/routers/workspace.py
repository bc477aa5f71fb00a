"""The caller's workspace as a whole: what it holds against its quotas, and deleting it.

- ``GET /api/workspace``: counts and stored bytes, with the quotas.
- ``DELETE /api/workspace``: delete the workspace and everything it owns (modules, history,
  notices, shares, uploads, job records); the cookie is cleared, so the next request starts a
  new, empty workspace.
- ``GET /workspace``: the page with the same figures and a delete form that asks for a
  confirmation (a required checkbox); ``POST /workspace/delete`` deletes and goes home.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from app.devices import device_label
from app.errors import PlaygroundError
from app.retention import delete_workspace
from app.services import Services, ServicesDep, WorkspaceDep
from app.templating import templates
from app.workspaces import COOKIE_NAME

router = APIRouter(tags=["workspace"])


def usage(services: Services, workspace: str) -> dict:
    settings = services.settings
    store = services.store
    return {
        "modules": store.count(workspace),
        "max_modules": settings.max_modules_per_workspace,
        "shares": store.share_count(workspace),
        "max_shares": settings.max_shares_per_workspace,
        "stored_bytes": store.stored_bytes(workspace),
        "max_stored_bytes": settings.max_stored_bytes_per_workspace,
        "idle_days": settings.workspace_idle_days,
    }


def _forget_cookie(response: Response) -> Response:
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax")
    return response


@router.get("/api/workspace", summary="What your workspace holds, and its quotas")
def workspace_usage(services: ServicesDep, workspace: WorkspaceDep) -> dict:
    return usage(services, workspace)


@router.delete("/api/workspace", summary="Delete your workspace and everything it owns")
def delete_my_workspace(services: ServicesDep, workspace: WorkspaceDep) -> Response:
    """Deletes the modules, their history, notices, shares (their links stop working), uploads
    and job records; running jobs are stopped. Answers what went."""
    deleted = delete_workspace(services, workspace)
    return _forget_cookie(JSONResponse({"deleted": deleted}))


@router.get("/workspace", response_class=HTMLResponse, include_in_schema=False)
def workspace_page(request: Request, services: ServicesDep, workspace: WorkspaceDep):
    return templates.TemplateResponse(
        request,
        "workspace.html",
        {"usage": usage(services, workspace), "device": device_label(), "notices": []},
    )


@router.post("/workspace/delete", include_in_schema=False)
def delete_from_page(
    services: ServicesDep,
    workspace: WorkspaceDep,
    confirm: Annotated[str, Form(max_length=10)] = "",
):
    if confirm != "yes":
        raise PlaygroundError(
            422, "Tick the box to confirm that everything should be deleted.", field="confirm"
        )
    delete_workspace(services, workspace)
    return _forget_cookie(RedirectResponse("/", status_code=303))
