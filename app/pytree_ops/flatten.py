"""Flatten: a module's leaves in ``jax.tree_util.tree_leaves`` order, which filters keep each,
its tree definition (folded when long), and the unflatten round trip."""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.tree_util import keystr

from app.pytree_ops.filters import kept_flags
from app.trees import array_summary, json_number, value_summary

FOLD_RUN = 3
"""Identical neighbours in a tree definition written once with ``× n`` from this many on."""
TREEDEF_SHOWN = 4000
"""Characters of the tree definition as JAX prints it shown on the page (the API sends all)."""


def python_value(leaf: Any) -> Any:
    """A non-array leaf as JSON: numbers, text and booleans as they are, others as text."""
    if leaf is None or isinstance(leaf, bool | int | str):
        return leaf
    if isinstance(leaf, float):
        return json_number(leaf)
    if isinstance(leaf, np.generic):
        return python_value(leaf.item())
    return value_summary(leaf)


def leaf_entry(index: int, keys: tuple, leaf: Any, flags: dict[str, bool]) -> dict:
    array = eqx.is_array(leaf)
    return {
        "index": index,
        "path": keystr(keys),
        "shape": list(leaf.shape) if array else None,
        "dtype": str(leaf.dtype) if array else None,
        "value": None if array else python_value(leaf),
        "summary": array_summary(leaf) if array else value_summary(leaf),
        "kept": flags,
    }


def flatten(model: Any, offset: int = 0, limit: int | None = None) -> dict:
    """``{"treedef", "num_leaves", "leaves"}``: the leaves from ``offset`` (``limit`` of them).

    Each leaf has its ``index`` in ``tree_leaves`` order, its keystr ``path``, ``shape`` and
    ``dtype`` (or ``value``, for a leaf that is not an array) and ``kept``: whether
    ``eqx.is_array``, ``eqx.is_inexact_array`` and ``library.trainable_filter`` keep it.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(model)
    stop = len(flat) if limit is None else min(len(flat), offset + limit)
    trainable = kept_flags(model, "trainable")
    leaves = []
    for index in range(offset, stop):
        keys, leaf = flat[index]
        flags = {
            "is_array": bool(eqx.is_array(leaf)),
            "is_inexact_array": bool(eqx.is_inexact_array(leaf)),
            "trainable": trainable[index],
        }
        leaves.append(leaf_entry(index, keys, leaf, flags))
    return {"treedef": str(treedef), "num_leaves": len(flat), "leaves": leaves}


def array_paths(model: Any, limit: int = 200) -> list[str]:
    """The keystr paths of the first ``limit`` array leaves, trained ones first (the edit
    form's choices)."""
    flat = jax.tree_util.tree_flatten_with_path(model)[0]
    trained = kept_flags(model, "trainable")
    arrays = [
        (not t, i, keystr(k))
        for i, ((k, leaf), t) in enumerate(zip(flat, trained, strict=True))
        if eqx.is_array(leaf)
    ]
    return [path for _, _, path in sorted(arrays)[:limit]]


def counts(model: Any) -> dict[str, int]:
    """How many leaves each filter keeps (and how many leaves there are)."""
    leaves = jax.tree_util.tree_leaves(model)
    return {
        "leaves": len(leaves),
        "is_array": sum(1 for leaf in leaves if eqx.is_array(leaf)),
        "is_inexact_array": sum(1 for leaf in leaves if eqx.is_inexact_array(leaf)),
        "trainable": sum(kept_flags(model, "trainable")),
    }


def round_trip(model: Any) -> bool:
    """Whether ``tree_unflatten(treedef, leaves)`` gives ``model`` back (same structure, the
    very same leaves)."""
    leaves, treedef = jax.tree_util.tree_flatten(model)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    same_leaves = all(
        a is b for a, b in zip(leaves, jax.tree_util.tree_leaves(rebuilt), strict=True)
    )
    return same_leaves and jax.tree_util.tree_structure(rebuilt) == treedef


# The tree definition, folded ---------------------------------------------------------------


def folded_treedef(treedef: Any) -> str:
    """The tree definition as JAX prints it, with runs of identical neighbours written once
    (``CustomNode(Linear[(Missing, 8, 8, True)], [*, *]) × 5001``)."""
    return f"PyTreeDef({_fold(treedef)})"


def _inner(treedef: Any) -> str:
    text = str(treedef)
    return text[len("PyTreeDef(") : -1] if text.startswith("PyTreeDef(") else text


def _fold(treedef: Any) -> str:
    if treedef.num_nodes <= 64:
        return _inner(treedef)
    data = treedef.node_data()
    if data is None:
        return _inner(treedef)
    kind, aux = data
    children = _folded_children(treedef.children())
    items = _runs(children)
    if kind is tuple:
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if kind is list:
        return "[" + ", ".join(items) + "]"
    if kind is dict and aux is not None and len(aux) == len(children):
        return "{" + ", ".join(f"{k!r}: {c}" for k, c in zip(aux, children, strict=True)) + "}"
    if isinstance(kind, type) and issubclass(kind, eqx.Module):
        return f"CustomNode({kind.__name__}[{aux!r}], [" + ", ".join(items) + "])"
    return _inner(treedef)


def _folded_children(children: list) -> list[str]:
    """Each child's folded text; equal neighbours (most of a long list) are written once."""
    texts: list[str] = []
    previous, text = None, ""
    for child in children:
        if previous is None or child != previous:
            text = _fold(child)
            previous = child
        texts.append(text)
    return texts


def _runs(texts: list[str]) -> list[str]:
    out: list[str] = []
    index = 0
    while index < len(texts):
        end = index + 1
        while end < len(texts) and texts[end] == texts[index]:
            end += 1
        count = end - index
        if count >= FOLD_RUN:
            out.append(f"{texts[index]} × {count:,}")
        else:
            out.extend(texts[index:end])
        index = end
    return out


def short_treedef(model: Any) -> dict:
    """What the page shows of the tree definition: folded, and the start of JAX's own text."""
    treedef = jax.tree_util.tree_structure(model)
    text = str(treedef)
    return {
        "folded": folded_treedef(treedef),
        "text": text[:TREEDEF_SHOWN],
        "length": len(text),
        "cut": len(text) > TREEDEF_SHOWN,
        "num_leaves": treedef.num_leaves,
        "num_nodes": treedef.num_nodes,
    }


def pages(total: int, size: int) -> int:
    return max(1, math.ceil(total / size))
