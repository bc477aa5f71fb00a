"""Save and share: read-only snapshots of a module that anyone with the link can fork.

- ``POST /api/modules/{id}/share`` stores a snapshot (the spec and the parameters, serialised
  with ``eqx.tree_serialise_leaves``) and answers 201 ``{"share_id", "url"}``; the module itself
  is marked saved, so it is never evicted from its workspace. With ``HX-Request`` (the share
  panel's button) it answers the link as HTML.
- ``GET /api/shared/{share_id}`` answers the snapshot as a module (the fields of
  ``GET /api/modules/{id}``) with its leaves' values per path.
- ``POST /api/shared/{share_id}/fork`` answers 201 with a new module in the caller's workspace
  holding exactly the snapshot's values (the same serialised bytes).
- ``GET /s/{share_id}`` is the read-only page: the tree (folding with ``<details>``, no script
  needed), the values of small leaves, the code, and a "Fork into my workspace" form that posts
  to ``/s/{share_id}/fork`` and lands on the new module's page. The form is a same-origin POST:
  the security middleware refuses it from any other site (Origin / Sec-Fetch-Site), and the
  workspace cookie is SameSite=Lax.

Snapshots are rows of the database (SQLite under ``PLAYGROUND_DATA_DIR``, or PostgreSQL), so
they survive restarts and every replica behind a load balancer serves the same links.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from app.devices import device_label
from app.errors import wants_html
from app.links import absolute_url
from app.modules import module_out
from app.routers.modules import ModuleOut
from app.services import RecordDep, ServicesDep, WorkspaceDep
from app.sharing import find_share, fork, page_tree, share_url, shared_payload, small_leaves
from app.templating import templates

router = APIRouter(tags=["sharing"])


ShareIdPath = Annotated[
    str,
    Path(description="The id of a shared snapshot (the end of its /s/ link).", max_length=32),
]


class ShareOut(BaseModel):
    """A stored snapshot's id and the page that shows it."""

    share_id: str = Field(description="The snapshot's id.")
    url: str = Field(description="The read-only page of the snapshot: /s/{share_id}.")
    link: str = Field(
        description="The page's absolute address, from PLAYGROUND_PUBLIC_URL when it is set."
    )


class SharedOut(ModuleOut):
    """A shared snapshot as a module, with its leaves' values."""

    share_id: str = Field(description="The snapshot's id (also its id).")
    url: str = Field(description="The read-only page of the snapshot: /s/{share_id}.")
    leaves: dict[str, Any] = Field(
        description="Each array leaf's values (nested lists) by its keystr path, cut to "
        "leaf_values_limit values (PLAYGROUND_LEAF_VALUES_LIMIT); NaN and infinities are the "
        "strings 'NaN', 'Infinity', '-Infinity'."
    )
    truncated: list[str] = Field(description="The paths whose values were cut short.")


def module_page_url(request: Request, module_id: str) -> str:
    """The page of a module of the workspace (the modules pages' own route when there is one)."""
    for name in ("module_page", "module"):
        try:
            return str(request.app.url_path_for(name, module_id=module_id))
        except Exception:  # noqa: BLE001 - that route is not there
            continue
    return f"/modules/{module_id}"


# API ---------------------------------------------------------------------------------------


@router.post(
    "/api/modules/{module_id}/share",
    status_code=201,
    response_model=ShareOut,
    summary="Share a module: store a snapshot and answer its link",
    responses={404: {"description": "No such module in your workspace."}},
)
def share_module(request: Request, record: RecordDep, services: ServicesDep):
    """Store a read-only snapshot of the module (spec and current parameters) and answer
    ``{"share_id", "url"}``; ``url`` is the ``/s/{share_id}`` page that anyone can open and
    fork. The module is kept (never evicted from the workspace)."""
    with services.compute.slot():
        share = services.store.share(record, title=type(record.spec()).title)
    url = share_url(share.id)
    body = {"share_id": share.id, "url": url, "link": absolute_url(request, services.settings, url)}
    if wants_html(request):
        return templates.TemplateResponse(
            request,
            "partials/share_link.html",
            {**body, "absolute_url": body["link"]},
            status_code=201,
        )
    return JSONResponse(body, status_code=201)


@router.get(
    "/api/shared/{share_id}",
    response_model=SharedOut,
    summary="A shared module with its leaves",
    responses={404: {"description": "No such shared module."}},
)
def get_shared(share_id: ShareIdPath, services: ServicesDep) -> dict:
    """The snapshot as a module (``kind``, ``params``, ``tree``, ``code``) and ``leaves``: each
    array's values by keystr path (cut to ``leaf_values_limit`` values; those paths are listed
    in ``truncated``)."""
    share = find_share(services, share_id)
    with services.compute.slot():
        model = services.store.load(share)
    return shared_payload(services, share, model)


@router.post(
    "/api/shared/{share_id}/fork",
    status_code=201,
    response_model=ModuleOut,
    summary="Fork a shared module into your workspace",
    responses={
        404: {"description": "No such shared module."},
        429: {"description": "Your workspace is full of saved modules."},
    },
)
def fork_shared(share_id: ShareIdPath, workspace: WorkspaceDep, services: ServicesDep) -> dict:
    """A new module in your workspace holding exactly the shared values (bit for bit);
    answers it as ``POST /api/modules`` does."""
    record, model = fork(services, workspace, share_id)
    return module_out(record, model, services.store.pop_notices(workspace))


# Pages -------------------------------------------------------------------------------------


@router.get("/s/{share_id}", response_class=HTMLResponse, include_in_schema=False)
def shared_page(request: Request, share_id: str, services: ServicesDep):
    """The read-only view of a snapshot, with its "Fork into my workspace" form."""
    share = find_share(services, share_id)
    with services.compute.slot():
        model = services.store.load(share)
    spec = share.spec()
    return templates.TemplateResponse(
        request,
        "shared.html",
        {
            "share": share,
            "spec": spec,
            "title": type(spec).title,
            "tree": page_tree(model),
            "leaves": small_leaves(model),
            "code": spec.code(),
            "fork_action": f"{share_url(share.id)}/fork",
            "api_url": f"/api/shared/{share.id}",
            "device": device_label(),
            "notices": [],
        },
    )


@router.post("/s/{share_id}/fork", include_in_schema=False)
def fork_from_page(request: Request, share_id: str, workspace: WorkspaceDep, services: ServicesDep):
    """The page's fork form: fork, then go to the new module's page (303 See Other)."""
    record, _ = fork(services, workspace, share_id)
    return RedirectResponse(module_page_url(request, record.id), status_code=303)
