"""Shared snapshots: finding them, forking them, and what their answer and page show.

The HTTP side (``POST /api/modules/{id}/share``, ``/api/shared/...``, the ``/s/{id}`` page) is
``app.routers.sharing``; the snapshots themselves are rows of the store (``ModuleStore.share``).
"""

from __future__ import annotations

import re
from typing import Any

import jax

from app.errors import PlaygroundError
from app.modules import model_roles, module_out
from app.services import Services
from app.store import ModuleRecord, ShareRecord
from app.trees import array_payload, describe_tree, path_of

SHARE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
_SHARE_ID = re.compile(SHARE_ID_PATTERN)
LEAF_VALUES_BUDGET_FACTOR = 64
"""A shared module's answer carries at most this many times ``leaf_values_limit`` values."""
PAGE_TREE_NODES = 400
"""Nodes of the tree the read-only page renders (the rest is said, not drawn)."""
PAGE_LEAF_VALUES = 48
"""Values the read-only page shows for one leaf."""


def share_url(share_id: str) -> str:
    """The read-only page of a snapshot."""
    return f"/s/{share_id}"


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


def find_share(services: Services, share_id: str) -> ShareRecord:
    """The snapshot ``share_id``; a 404 for any other."""
    record = services.store.get_share(share_id) if _SHARE_ID.match(share_id) else None
    if record is None:
        raise PlaygroundError(
            404, f"No shared module {share_id[:40]!r}: the link may be mistyped or incomplete."
        )
    return record


def shared_payload(services: Services, share: ShareRecord, model: Any) -> dict:
    """The snapshot as a module (the fields of ``module_out``) with its leaves' values."""
    leaves, truncated = leaves_payload(model, services.settings.leaf_values_limit)
    return {
        **module_out(share, model),
        "share_id": share.id,
        "url": share_url(share.id),
        "leaves": leaves,
        "truncated": truncated,
    }


def fork(services: Services, workspace: str, share_id: str) -> tuple[ModuleRecord, Any]:
    """A new module of ``workspace`` holding exactly the snapshot's values: record, model."""
    share = find_share(services, share_id)
    with services.compute.slot():
        record = services.store.fork(workspace, share)
        model = services.store.load(record)
    return record, model


def page_tree(model: Any) -> dict:
    """The tree the read-only page renders (bounded)."""
    return describe_tree(model, roles=model_roles(model), max_nodes=PAGE_TREE_NODES)


def small_leaves(model: Any) -> dict[str, dict]:
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
