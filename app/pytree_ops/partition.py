"""Partition and combine: ``eqx.partition(model, filter)`` as two trees with ``None`` holes,
``eqx.combine`` giving the module back, and the split a run's ``wrt`` makes."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax

from app.pytree_ops.filters import FILTERS, filter_spec, kept_flags
from app.pytree_ops.flatten import leaf_entry
from app.trees import describe_tree

PARTITION_MAX_NODES = 1500
"""Nodes described per side (deeper levels of a big tree are left out: ``lazy``)."""


def none_holes(node: dict) -> dict:
    """Name the type of ``None`` nodes ``None`` (``eqx.partition``'s holes), in place."""
    stack = [node]
    while stack:
        item = stack.pop()
        if item.get("type") == "NoneType":
            item["type"] = "None"
        stack.extend(item.get("children") or [])
    return node


def split(model: Any, name: str) -> tuple[Any, Any]:
    """``eqx.partition(model, <filter name>)``."""
    return eqx.partition(model, filter_spec(model, name))


def partition(model: Any, name: str, max_nodes: int = PARTITION_MAX_NODES) -> dict:
    """``{"kept": node, "rest": node}``: both sides of ``eqx.partition`` as tree nodes."""
    kept, rest = split(model, name)
    return {
        "kept": none_holes(describe_tree(kept, max_nodes=max_nodes)),
        "rest": none_holes(describe_tree(rest, max_nodes=max_nodes)),
    }


def combines_back(model: Any, name: str) -> bool:
    """Whether ``eqx.combine(kept, rest)`` is the module again: the same structure and the very
    same leaves."""
    kept, rest = split(model, name)
    combined = eqx.combine(kept, rest)
    same = jax.tree_util.tree_structure(combined) == jax.tree_util.tree_structure(model)
    pairs = zip(jax.tree_util.tree_leaves(combined), jax.tree_util.tree_leaves(model), strict=False)
    return same and all(a is b for a, b in pairs)


def partition_code(name: str) -> str:
    return (
        f"kept, rest = eqx.partition(model, {FILTERS[name]})\n"
        "model_again = eqx.combine(kept, rest)  # each None filled from the other side"
    )


def side_rows(model: Any, name: str) -> list[dict]:
    """One row per leaf (``tree_leaves`` order of the model): its path, what it is, and on
    which side of the partition it lands."""
    flat, _ = jax.tree_util.tree_flatten_with_path(model)
    flags = kept_flags(model, name)
    rows = []
    for (keys, leaf), kept in zip(flat, flags, strict=True):
        entry = leaf_entry(len(rows), keys, leaf, {})
        rows.append({"path": entry["path"], "summary": entry["summary"], "kept": kept})
    return rows


def wrt_split(model: Any, wrt: str, limit: int = 12) -> dict:
    """What ``grad`` differentiates and what it holds fixed for a run's ``wrt``.

    ``wrt="params"``: ``params, rest = eqx.partition(model, library.trainable_filter(model))``;
    grad differentiates ``params`` and holds ``rest`` (buffers and non-array leaves) fixed.
    ``wrt="input"``: grad differentiates ``x``; the whole module is held fixed.
    """
    rows = side_rows(model, "trainable")
    varied = [row for row in rows if row["kept"]]
    fixed = [row for row in rows if not row["kept"]]
    return {
        "wrt": wrt,
        "differentiated": varied[:limit],
        "differentiated_count": len(varied),
        "fixed": fixed[:limit],
        "fixed_count": len(fixed),
    }
