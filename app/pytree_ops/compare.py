"""Compare two trees: numbers per leaf when the structures match, the structural diff when
they do not, and whether ``jit`` would reuse a function compiled for one on the other."""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.tree_util import keystr

from app.runs.structure import module_structure
from app.trees import array_summary, value_summary

MAX_STRUCTURAL = 500
"""Structural changes listed at most (the count says how many there are)."""


def _describe(value: Any) -> str:
    if eqx.is_array(value):
        return array_summary(value)
    return value_summary(value)


def statics_of(tree: Any) -> dict[str, Any]:
    """``path -> value`` of the static fields (``eqx.field(static=True)``) in ``tree``."""
    found: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, eqx.Module) and dataclasses.is_dataclass(node):
            for item in dataclasses.fields(node):
                if not hasattr(node, item.name):
                    continue
                value = getattr(node, item.name)
                if item.metadata.get("static", False):
                    found[f"{path}.{item.name}"] = value
                else:
                    stack.append((f"{path}.{item.name}", value))
        elif isinstance(node, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(node))
        elif isinstance(node, dict):
            stack.extend((f"{path}[{k!r}]", v) for k, v in node.items())
    return found


def leaf_numbers(a: Any, b: Any) -> dict:
    """Max absolute difference, norm of the difference and relative difference
    (``norm(a - b) / norm(a)``, ``None`` when ``a`` is all zeros), in float64."""
    x = np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind != "c" else np.asarray(a)
    y = np.asarray(b, dtype=np.float64) if np.asarray(b).dtype.kind != "c" else np.asarray(b)
    diff = x - y
    norm = float(np.linalg.norm(diff.ravel()))
    base = float(np.linalg.norm(x.ravel()))
    return {
        "max_abs": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "norm": norm,
        "relative": norm / base if base > 0 else (0.0 if norm == 0 else None),
    }


def structural_diff(a: Any, b: Any) -> list[dict]:
    """Paths added (in ``b`` only), removed (in ``a`` only), or changed in shape, dtype or
    static value (a static field or a leaf that is not an array)."""
    before = dict((keystr(k), v) for k, v in jax.tree_util.tree_flatten_with_path(a)[0])
    after = dict((keystr(k), v) for k, v in jax.tree_util.tree_flatten_with_path(b)[0])
    changes: list[dict] = []
    for path, old in before.items():
        if path not in after:
            changes.append(
                {"path": path, "change": "removed", "before": _describe(old), "after": None}
            )
            continue
        new = after[path]
        old_array, new_array = eqx.is_array(old), eqx.is_array(new)
        if old_array and new_array:
            if tuple(old.shape) != tuple(new.shape):
                changes.append(
                    {
                        "path": path,
                        "change": "shape",
                        "before": _describe(old),
                        "after": _describe(new),
                    }
                )
            elif np.dtype(old.dtype) != np.dtype(new.dtype):
                changes.append(
                    {
                        "path": path,
                        "change": "dtype",
                        "before": _describe(old),
                        "after": _describe(new),
                    }
                )
        elif old_array != new_array or not _same_static(old, new):
            changes.append(
                {
                    "path": path,
                    "change": "static",
                    "before": _describe(old),
                    "after": _describe(new),
                }
            )
    for path, new in after.items():
        if path not in before:
            changes.append(
                {"path": path, "change": "added", "before": None, "after": _describe(new)}
            )
    old_statics, new_statics = statics_of(a), statics_of(b)
    for path, old in old_statics.items():
        if path in new_statics and not _same_static(old, new_statics[path]):
            changes.append(
                {
                    "path": path,
                    "change": "static",
                    "before": value_summary(old),
                    "after": value_summary(new_statics[path]),
                }
            )
    if not changes and jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
        changes.append(
            {
                "path": "",
                "change": "static",
                "before": _cut_treedef(a),
                "after": _cut_treedef(b),
            }
        )
    return changes


def _cut_treedef(tree: Any, length: int = 160) -> str:
    text = str(jax.tree_util.tree_structure(tree))
    return text if len(text) <= length else text[: length - 1] + "…"


def _same_static(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # noqa: BLE001 - values that cannot be compared differ
        return a is b


def jit_reuses(a: Any, b: Any) -> bool:
    """Whether a function ``jit`` compiled for ``a`` serves ``b`` without a new trace: the run
    engine's structure key (tree definition with static fields, non-array leaves, and each
    array's shape, dtype and weak type) is the same."""
    return module_structure(a)[0].key == module_structure(b)[0].key


def compare(a: Any, b: Any) -> dict:
    """``{"same_structure", "jit_reuses", "leaves", "structural"}`` for trees ``a`` and ``b``."""
    structural = structural_diff(a, b)
    same = jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and not structural
    leaves = []
    if same:
        flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
        flat_b = jax.tree_util.tree_leaves(b)
        for (keys, x), y in zip(flat_a, flat_b, strict=True):
            if eqx.is_array(x):
                leaves.append({"path": keystr(keys), **leaf_numbers(x, y)})
    return {
        "same_structure": same,
        "jit_reuses": jit_reuses(a, b),
        "leaves": leaves,
        "structural": structural[:MAX_STRUCTURAL],
    }
