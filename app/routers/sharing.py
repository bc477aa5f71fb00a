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

import re
from pathlib import Path as FilePath
from typing import Annotated, Any

import jax
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from app.errors import PlaygroundError, wants_html
from app.links import absolute_url
from app.routers.health import device_label
from app.routers.modules import ModuleOut, model_roles, module_out
from app.services import Services, get_module_record, get_services, get_workspace
from app.store import ModuleRecord, ShareRecord
from app.trees import array_payload, describe_tree, path_of

router = APIRouter(tags=["sharing"])
templates = Jinja2Templates(directory=FilePath(__file__).resolve().parents[2] / "templates")


SHARE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
_SHARE_ID = re.compile(SHARE_ID_PATTERN)
LEAF_VALUES_BUDGET_FACTOR = 64
"""A shared module's answer carries at most this many times ``leaf_values_limit`` values."""
PAGE_TREE_NODES = 400
"""Nodes of the tree the read-only page renders (the rest is said, not drawn)."""
PAGE_LEAF_VALUES = 48
"""Values the read-only page shows for one leaf."""

ServicesDep = Annotated[Services, Depends(get_services)]
WorkspaceDep = Annotated[str, Depends(get_workspace)]
RecordDep = Annotated[ModuleRecord, Depends(get_module_record)]
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


def share_url(share_id: str) -> str:
    return f"/s/{share_id}"


def module_page_url(request: Request, module_id: str) -> str:
    """The page of a module of the workspace (the modules pages' own route when there is one)."""
    for name in ("module_page", "module"):
        try:
            return str(request.app.url_path_for(name, module_id=module_id))
        except Exception:  # noqa: BLE001 - that route is not there
            continue
    return f"/modules/{module_id}"


def leaves_payload(model: Any, limit: int) -> tuple[dict[str, Any], list[str]]:
    """Each array leaf's values (nested lists) by its keystr path, and the paths cut short.

    Every leaf is cut to ``limit`` values as ``GET /api/modules/{id}/leaf`` cuts it, and the
    whole answer to ``LEAF_VALUES_BUDGET_FACTOR * limit`` values (a leaf past that budget keeps
    its first value); the fork holds every value.
    """
    budget = LEAF_VALUES_BUDGET_FACTOR * limit
    leaves: dict[str, Any] = {}
    truncated: list[str] = []
    for keys, leaf in jax.tree_util.tree_flatten_with_path(model)[0]:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            continue
        path = path_of(keys)
        payload = array_payload(leaf, max(1, min(limit, budget)))
        budget -= min(int(leaf.size), limit)
        leaves[path] = payload["values"]
        if payload["truncated"]:
            truncated.append(path)
    return leaves, truncated


def get_share_or_404(services: Services, share_id: str) -> ShareRecord:
    record = services.store.get_share(share_id) if _SHARE_ID.match(share_id) else None
    if record is None:
        raise PlaygroundError(
            404, f"No shared module {share_id[:40]!r}: the link may be mistyped or incomplete."
        )
    return record


def shared_payload(services: Services, share: ShareRecord, model: Any) -> dict:
    spec = share.spec()
    leaves, truncated = leaves_payload(model, services.settings.leaf_values_limit)
    return {
        "id": share.id,
        "share_id": share.id,
        "url": share_url(share.id),
        "kind": share.kind,
        "params": share.params,
        "title": type(spec).title,
        "created_at": share.created_at,
        "trained": share.trained,
        "tree": describe_tree(model, roles=model_roles(model)),
        "code": spec.code(),
        "notices": [],
        "leaves": leaves,
        "truncated": truncated,
    }


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
    share = get_share_or_404(services, share_id)
    with services.compute.slot():
        model = services.store.load(share)
    return shared_payload(services, share, model)


def fork(services: Services, workspace: str, share_id: str) -> tuple[ModuleRecord, Any]:
    share = get_share_or_404(services, share_id)
    with services.compute.slot():
        record = services.store.fork(workspace, share)
        model = services.store.load(record)
    return record, model


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


def _page_tree(model: Any) -> dict:
    return describe_tree(model, roles=model_roles(model), max_nodes=PAGE_TREE_NODES)


def _small_leaves(model: Any) -> dict[str, dict]:
    """The first values and statistics of each array leaf, for the page (bounded)."""
    out: dict[str, dict] = {}
    for keys, leaf in jax.tree_util.tree_flatten_with_path(model)[0]:
        if len(out) >= PAGE_TREE_NODES:
            break
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            payload = array_payload(leaf, PAGE_LEAF_VALUES)
            flat = payload["values"]
            while flat and isinstance(flat, list) and isinstance(flat[0], list):
                flat = [v for row in flat for v in row]
            if not isinstance(flat, list):
                flat = [flat]
            out[path_of(keys)] = {
                "values": flat,
                "truncated": payload["truncated"] or len(flat) < int(leaf.size),
                "stats": payload["stats"],
            }
    return out


@router.get("/s/{share_id}", response_class=HTMLResponse, include_in_schema=False)
def shared_page(request: Request, share_id: str, services: ServicesDep):
    """The read-only view of a snapshot, with its "Fork into my workspace" form."""
    share = get_share_or_404(services, share_id)
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
            "tree": _page_tree(model),
            "leaves": _small_leaves(model),
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
