"""Save and share: read-only snapshots of a module that anyone with the link can fork.

- ``POST /api/modules/{id}/share`` stores a snapshot (the spec and the parameters, serialised
  with ``eqx.tree_serialise_leaves``) and answers 201 ``{"share_id", "url"}``; the module itself
  is marked saved, so it is never evicted from its workspace.
- ``GET /api/shared/{share_id}`` answers the snapshot as a module (the same fields as
  ``GET /api/modules/{id}``) with its leaves' values per path.
- ``POST /api/shared/{share_id}/fork`` answers 201 with a new module in the caller's workspace
  holding exactly the snapshot's values.
- ``GET /s/{share_id}`` is the read-only page (the tree, and a "Fork into my workspace" form
  that posts to ``/s/{share_id}/fork`` and lands on the new module's page).

Snapshots are rows of the database (SQLite under ``PLAYGROUND_DATA_DIR``, or PostgreSQL), so
they survive restarts and every replica behind a load balancer serves the same links.
"""

from __future__ import annotations

import re
from typing import Any

import jax
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from app.errors import PlaygroundError, wants_html
from app.services import Services, get_module_record, get_services, get_workspace
from app.store import ModuleRecord, ShareRecord
from app.trees import array_payload, describe_tree, path_of

router = APIRouter(tags=["sharing"])

SHARE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
_SHARE_ID = re.compile(SHARE_ID_PATTERN)
LEAF_VALUES_BUDGET_FACTOR = 64
"""A shared module's answer carries at most this many times ``leaf_values_limit`` values."""

ShareId = Path(
    ...,
    description="The id of a shared snapshot (the end of its /s/ link).",
    max_length=32,
)


def share_url(share_id: str) -> str:
    return f"/s/{share_id}"


def _module_payload(services: Services, record: ModuleRecord, model: Any) -> dict:
    """The module as ``GET /api/modules/{id}`` answers it."""
    try:  # the modules API's own answer, when it offers one
        from app.routers.modules import module_payload  # type: ignore[attr-defined]
    except ImportError:
        module_payload = None
    if module_payload is not None:
        return module_payload(record, model, services=services)
    spec = record.spec()
    return {
        "id": record.id,
        "kind": record.kind,
        "params": record.params,
        "tree": describe_tree(model),
        "code": spec.code(),
        "trained": record.trained,
    }


def leaves_payload(model: Any, limit: int) -> tuple[dict[str, Any], list[str]]:
    """Each array leaf's values (nested lists) by its keystr path, and the paths cut short.

    Every leaf is cut to ``limit`` values as ``GET /api/modules/{id}/leaf`` cuts it, and the
    whole answer to ``LEAF_VALUES_BUDGET_FACTOR * limit`` values; the full values are in the
    fork (and in each leaf of the forked module).
    """
    budget = LEAF_VALUES_BUDGET_FACTOR * limit
    leaves: dict[str, Any] = {}
    truncated: list[str] = []
    for keys, leaf in jax.tree_util.tree_flatten_with_path(model)[0]:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            continue
        path = path_of(keys)
        payload = array_payload(leaf, max(1, min(limit, budget)))
        budget -= int(leaf.size)
        leaves[path] = payload["values"]
        if payload["truncated"]:
            truncated.append(path)
    return leaves, truncated


def _get_share(services: Services, share_id: str) -> ShareRecord:
    record = services.store.get_share(share_id) if _SHARE_ID.match(share_id) else None
    if record is None:
        raise PlaygroundError(404, f"No shared module {share_id[:40]!r}: the link may be mistyped.")
    return record


def shared_payload(services: Services, share: ShareRecord) -> dict:
    model = services.store.load(share)
    spec = share.spec()
    leaves, truncated = leaves_payload(model, services.settings.leaf_values_limit)
    return {
        "share_id": share.id,
        "url": share_url(share.id),
        "id": share.id,
        "kind": share.kind,
        "title": share.title or spec.title,
        "params": share.params,
        "tree": describe_tree(model),
        "code": spec.code(),
        "leaves": leaves,
        "truncated": truncated,
        "created_at": share.created_at,
    }


@router.post(
    "/api/modules/{module_id}/share",
    status_code=201,
    summary="Share a module: store a snapshot and answer its link",
    responses={404: {"description": "No such module in your workspace"}},
)
def share_module(
    request: Request,
    record: ModuleRecord = Depends(get_module_record),
    services: Services = Depends(get_services),
):
    """Store a read-only snapshot of the module (spec and current parameters) and answer
    ``{"share_id", "url"}``; ``url`` is the ``/s/{share_id}`` page anyone can open and fork."""
    with services.compute.slot():
        share = services.store.share(record, title=record.spec().title)
    body = {"share_id": share.id, "url": share_url(share.id)}
    if wants_html(request):
        from app.routers.pages_share import render_share_link

        return render_share_link(request, body, status_code=201)
    return JSONResponse(body, status_code=201)


@router.get(
    "/api/shared/{share_id}",
    summary="A shared module with its leaves",
    responses={404: {"description": "No such shared module"}},
)
def get_shared(share_id: str = ShareId, services: Services = Depends(get_services)) -> dict:
    """The snapshot as a module (``kind``, ``params``, ``tree``, ``code``) and ``leaves``: each
    array's values by keystr path (cut to ``leaf_values_limit`` values, those paths listed in
    ``truncated``)."""
    share = _get_share(services, share_id)
    with services.compute.slot():
        return shared_payload(services, share)


def _fork(services: Services, workspace: str, share_id: str) -> tuple[ModuleRecord, Any]:
    share = _get_share(services, share_id)
    record = services.store.fork(workspace, share)
    return record, services.store.load(record)


@router.post(
    "/api/shared/{share_id}/fork",
    status_code=201,
    summary="Fork a shared module into your workspace",
    responses={404: {"description": "No such shared module"}},
)
def fork_shared(
    share_id: str = ShareId,
    workspace: str = Depends(get_workspace),
    services: Services = Depends(get_services),
):
    """A new module in your workspace holding exactly the shared values; answers it as
    ``POST /api/modules`` does."""
    with services.compute.slot():
        record, model = _fork(services, workspace, share_id)
        body = _module_payload(services, record, model)
    return JSONResponse(body, status_code=201)


# Pages -------------------------------------------------------------------------------------


@router.get("/s/{share_id}", response_class=HTMLResponse, include_in_schema=False)
def shared_page(request: Request, share_id: str, services: Services = Depends(get_services)):
    from app.routers.pages_share import render_shared_page

    share = _get_share(services, share_id)
    with services.compute.slot():
        model = services.store.load(share)
        return render_shared_page(request, share, model)


@router.post("/s/{share_id}/fork", include_in_schema=False)
def fork_from_page(
    share_id: str,
    workspace: str = Depends(get_workspace),
    services: Services = Depends(get_services),
):
    """The page's fork form: fork, then go to the new module's page (303)."""
    with services.compute.slot():
        record, _ = _fork(services, workspace, share_id)
    from app.routers.pages_share import module_page_url

    return RedirectResponse(module_page_url(record.id), status_code=303)
