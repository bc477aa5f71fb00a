"""Pytrees as JSON-able trees of nodes, for the page and the API.

A node is a dict::

    {"path", "name", "type", "role", "summary", "shape", "dtype", "size", "nbytes", "params",
     "children", "child_count", "leaf", ...}

- ``path``: the node's JAX key path as ``jax.tree_util.keystr`` writes it: ``""`` for the root,
  ``.weight``, ``.layers[0].bias``, ``[0]``, ``['a']``. The keys are JAX's own, taken from
  ``jax.tree_util.tree_flatten_with_path`` one level at a time.
- ``name``: the last key (``weight``, ``[0]``, ``['a']``); ``""`` for the root.
- ``type``: the Python type's name (``Linear``, ``tuple``); ``Array`` for a JAX array,
  ``function`` for any function (``jax.nn.relu`` included).
- ``role``: for a leaf, ``"param"`` (an array trained by gradient: kept by
  ``library.trainable_filter``), ``"buffer"`` (an array it leaves out), ``"static"`` (a static
  dataclass field, ``eqx.field(static=True)``, or a non-array leaf such as an activation
  function: what ``eqx.partition(model, eqx.is_array)`` puts in the static part) or ``None``
  (a ``None`` leaf, and every inner node).
- ``summary``: Equinox's short form for arrays (``f32[2,3]``), the value for static fields and
  numbers (``2``, ``True``), ``<function relu>`` for functions, and ``3 fields`` or
  ``5001 items`` for inner nodes.
- ``shape``/``dtype``: for arrays (``[2, 3]``, ``"float32"``), else ``None``.
- ``size``/``nbytes``: elements and bytes of the arrays in the subtree.
- ``params``: elements of the subtree's ``param`` arrays.
- ``children``: the child nodes, or ``None`` when they were not loaded for lack of node budget
  (then ``"lazy": true``). A node with many children lists at most ``CHILDREN_PAGE`` of them
  from ``children_offset``; ``child_count`` says how many there are in all.
- ``leaf``: whether the node is a leaf (an array, a static value, ``None``).
- ``static_field``: ``True`` for static dataclass fields, which ``eqx.tree_at`` cannot reach.

Static dataclass fields are not part of the flattened pytree (they live in its tree
definition), so they are read with ``dataclasses.fields`` and shown as leaves with role
``static``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import deque
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.tree_util import (
    DictKey,
    GetAttrKey,
    SequenceKey,
    keystr,
    tree_flatten_with_path,
)

from app.text import array_summary

DEFAULT_MAX_NODES = 1500
"""Nodes described in one answer; deeper levels come lazily."""
CHILDREN_PAGE = 100
"""Children listed per node in one answer; the rest come a page at a time."""
MAX_PATH_LENGTH = 1000
"""The longest path accepted from a user."""
SUMMARY_LENGTH = 60
"""The longest ``summary`` of a static value before it is cut with an ellipsis."""

_PATH_CHARACTERS = re.compile(r"^[^\x00-\x1f\x7f]*$")


class TreePathError(KeyError):
    """A path that names no node of the tree, or that is not a path at all."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# Basic facts about one object -------------------------------------------------------------


def is_array(value: Any) -> bool:
    """A JAX or NumPy array (what ``eqx.is_array`` calls an array)."""
    return eqx.is_array(value)


def _function_name(value: Any) -> str | None:
    for candidate in (value, getattr(value, "__wrapped__", None), getattr(value, "fun", None)):
        name = getattr(candidate, "__name__", None)
        if isinstance(name, str):
            return name
    return None


def _is_function(value: Any) -> bool:
    return callable(value) and not isinstance(value, type | eqx.Module)


def type_name(value: Any) -> str:
    """``Array`` for JAX arrays, ``function`` for functions, else the type's own name."""
    if isinstance(value, jax.Array):
        return "Array"
    if _is_function(value) and _function_name(value) is not None:
        return "function"
    return type(value).__name__


def _cut(text: str, length: int = SUMMARY_LENGTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"


def value_summary(value: Any) -> str:
    """A short text for a leaf that is not an array."""
    if value is None:
        return "None"
    if _is_function(value):
        name = _function_name(value)
        if name is not None:
            return f"<function {name}>"
    if isinstance(value, str):
        return _cut(repr(value))
    if isinstance(value, bool | int | float | complex | np.generic):
        return _cut(str(value))
    try:
        return _cut(repr(value))
    except Exception:  # noqa: BLE001 - a repr that fails still needs a label
        return f"<{type(value).__name__}>"


def key_segment(key: Any) -> str:
    """One key as ``keystr`` writes it: ``.weight``, ``[0]``, ``['a']``."""
    if isinstance(key, GetAttrKey):
        return f".{key.name}"
    if isinstance(key, SequenceKey):
        return f"[{key.idx}]"
    if isinstance(key, DictKey):
        return f"[{key.key!r}]"
    return keystr((key,))


def key_name(key: Any) -> str:
    """The last key as the tree shows it: ``weight``, ``[0]``, ``['a']``."""
    if isinstance(key, GetAttrKey):
        return key.name
    return key_segment(key)


# One level of a tree ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Child:
    """One child of a node: its JAX key, its value, and whether it is a static field."""

    key: Any
    value: Any
    static_field: bool = False


def children_of(node: Any) -> list[Child] | None:
    """The direct children of ``node`` with JAX's keys, static dataclass fields included, in
    field order; ``None`` when ``node`` is a leaf."""
    if node is None or is_array(node):
        return None
    flat, _ = tree_flatten_with_path(node, is_leaf=lambda n: n is not node)
    if len(flat) == 1 and flat[0][0] == () and flat[0][1] is node:
        return None  # not a pytree node: a leaf
    dynamic = [Child(path[0], value) for path, value in flat if len(path) == 1]
    if not (dataclasses.is_dataclass(node) and isinstance(node, eqx.Module)):
        return dynamic
    by_name = {child.key.name: child for child in dynamic if isinstance(child.key, GetAttrKey)}
    others = [child for child in dynamic if not isinstance(child.key, GetAttrKey)]
    ordered: list[Child] = []
    for field in dataclasses.fields(node):
        if field.name in by_name:
            ordered.append(by_name.pop(field.name))
        elif field.metadata.get("static", False) and hasattr(node, field.name):
            ordered.append(Child(GetAttrKey(field.name), getattr(node, field.name), True))
    return ordered + list(by_name.values()) + others


# Roles and totals -------------------------------------------------------------------------


def trainable_spec(tree: Any) -> Any:
    """The bool filter spec of the arrays trained by gradient (``library.trainable_filter``)."""
    from library import trainable_filter

    return trainable_filter(tree)


def trained_flags(tree: Any, flat: Sequence[tuple[tuple, Any]]) -> list[bool]:
    """For each ``(keys, leaf)`` of ``tree_flatten_with_path(tree)``: whether the leaf is trained.

    The rule of ``library.trainable_filter``, computed in one pass with the inner nodes cached
    (a 10,000-leaf model takes milliseconds): an inexact array is trained unless a module on its
    path names the field leading to it in its ``buffer_fields``.
    """
    nodes: dict[tuple, Any] = {(): tree}
    flags = []
    for keys, leaf in flat:
        trained = eqx.is_inexact_array(leaf)
        node = tree
        for depth, key in enumerate(keys):
            if not trained:
                break
            if isinstance(key, GetAttrKey):
                if key.name in getattr(type(node), "buffer_fields", ()):
                    trained = False
                    break
            elif not isinstance(key, SequenceKey | DictKey):
                break
            prefix = keys[: depth + 1]
            child = nodes.get(prefix)
            if child is None:
                if isinstance(key, GetAttrKey):
                    child = getattr(node, key.name)
                elif isinstance(key, SequenceKey):
                    child = node[key.idx]
                else:
                    child = node[key.key]
                nodes[prefix] = child
            node = child
        flags.append(trained)
    return flags


class _Totals:
    """Size, bytes and parameter count of every subtree, keyed by key-path tuple."""

    def __init__(self, tree: Any, roles: Any):
        flat, _ = tree_flatten_with_path(tree)
        spec = jax.tree_util.tree_leaves(roles) if roles is not None else None
        if spec is None or len(spec) != len(flat):
            spec = trained_flags(tree, flat)
        self.sums: dict[tuple, list[int]] = {}
        self.trained: dict[tuple, bool] = {}
        sums = self.sums
        for (keys, leaf), trained in zip(flat, spec, strict=True):
            if not is_array(leaf):
                continue
            size = math.prod(leaf.shape)
            nbytes = size * leaf.dtype.itemsize
            params = size if trained is True else 0
            self.trained[keys] = trained is True
            for depth in range(len(keys) + 1):
                prefix = keys[:depth]
                entry = sums.get(prefix)
                if entry is None:
                    sums[prefix] = [size, nbytes, params]
                else:
                    entry[0] += size
                    entry[1] += nbytes
                    entry[2] += params

    def of(self, keys: tuple) -> tuple[int, int, int]:
        entry = self.sums.get(keys)
        return (entry[0], entry[1], entry[2]) if entry else (0, 0, 0)

    def trained_at(self, keys: tuple) -> bool:
        return self.trained.get(keys, False)

    def add_children(self, keys: tuple, children: list[Child]) -> bool:
        return True

    def signatures(self, keys: tuple, value: Any, count: int) -> list | None:
        return _signatures(value, count)


class _RangeTotals:
    """The same totals without key paths: each described node knows the range of leaves it
    holds (``jax.tree_util.tree_flatten`` order, found from the tree definition's children),
    and sums over a range come from prefix sums. A first view of a 10,000-leaf model needs
    one plain flatten instead of a flatten with keys.

    :meth:`add_children` answers False when a node's children do not line up with its tree
    definition's (a custom pytree node); the caller then uses :class:`_Totals`.
    """

    def __init__(self, tree: Any, roles: Any):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        flags = None
        if roles is not None:
            spec = jax.tree_util.tree_leaves(roles)
            if len(spec) == len(leaves):
                flags = [flag is True for flag in spec]
        if flags is None:
            flags = trained_flags(tree, tree_flatten_with_path(tree)[0])
        size, nbytes, params = [0], [0], [0]
        for leaf, trained in zip(leaves, flags, strict=True):
            if isinstance(leaf, jax.Array | np.ndarray):
                count = leaf.size
                size.append(count)
                nbytes.append(count * leaf.dtype.itemsize)
                params.append(count if trained else 0)
            else:
                size.append(0)
                nbytes.append(0)
                params.append(0)
        self._sums = (np.cumsum(size), np.cumsum(nbytes), np.cumsum(params))
        self._flags = flags
        self._leaves = leaves
        self._ranges: dict[tuple, tuple[int, Any]] = {(): (0, treedef)}
        self._nodes: dict[tuple, list] = {}
        """keys -> [start, dynamic children, their treedefs, key -> index (made on first use)]"""

    def _range(self, keys: tuple) -> tuple[int, Any] | None:
        found = self._ranges.get(keys)
        if found is not None or not keys:
            return found
        entry = self._nodes.get(keys[:-1])
        if entry is None:
            return None
        start, dynamic, kids, index = entry[:4]
        if index is None:
            index = entry[3] = {child.key: i for i, child in enumerate(dynamic)}
            entry.append(np.cumsum([0] + [kid.num_leaves for kid in kids]))
        position = index.get(keys[-1])
        if position is None:
            return None
        found = (start + int(entry[4][position]), kids[position])
        self._ranges[keys] = found
        return found

    def of(self, keys: tuple) -> tuple[int, int, int]:
        found = self._range(keys)
        if found is None:
            return (0, 0, 0)
        start, treedef = found
        stop = start + treedef.num_leaves
        return tuple(int(total[stop] - total[start]) for total in self._sums)  # type: ignore[return-value]

    def trained_at(self, keys: tuple) -> bool:
        found = self._range(keys)
        return found is not None and found[1].num_leaves == 1 and self._flags[found[0]]

    def add_children(self, keys: tuple, children: list[Child]) -> bool:
        """Note the (non-static) children of the node at ``keys``; their leaf ranges are worked
        out when one of them is described (a folded run never is)."""
        found = self._range(keys)
        if found is None:
            return False
        start, treedef = found
        dynamic = [child for child in children if not child.static_field]
        kids = treedef.children()
        if len(kids) != len(dynamic):
            return False
        self._nodes[keys] = [start, dynamic, kids, None]
        return True

    def signatures(self, keys: tuple, value: Any, count: int) -> list | None:
        """:func:`_signatures` from the leaves already flattened (no second flatten)."""
        entry = self._nodes.get(keys)
        if not isinstance(value, list | tuple) or entry is None or len(entry[2]) != count:
            return None
        start, treedef = self._ranges[keys] if keys in self._ranges else self._range(keys)
        leaves = self._leaves[start : start + treedef.num_leaves]
        return _signatures_of(leaves, treedef, count, entry[2])


class _Mismatch(Exception):
    """A node whose children do not line up with its tree definition's."""


def params_count(tree: Any, roles: Any = None) -> int:
    """Elements of the arrays trained by gradient (``roles``: a trainable spec, or computed)."""
    return _Totals(tree, roles).of(())[2]


# Describing -------------------------------------------------------------------------------


def _node(
    value: Any,
    keys: tuple,
    path: str,
    name: str,
    totals: _Totals | _RangeTotals,
    static_field: bool,
    children: list[Child] | None,
    stats: bool = False,
) -> dict:
    if static_field:
        role, summary = "static", value_summary(value)
    elif value is None:
        role, summary = None, "None"
    elif is_array(value):
        role = "param" if totals.trained_at(keys) else "buffer"
        summary = array_summary(value)
    elif children is None:
        role, summary = "static", value_summary(value)
    else:
        role = None
        count = len(children)
        noun = "fields" if isinstance(value, eqx.Module) else "items"
        summary = f"{count} {noun[:-1] if count == 1 else noun}"
    array = is_array(value) and not static_field
    if array:
        size, nbytes = int(value.size), int(value.nbytes)
        params = size if role == "param" else 0
    elif static_field:
        size = nbytes = params = 0
    else:
        size, nbytes, params = totals.of(keys)
    described = {
        "path": path,
        "name": name,
        "type": type_name(value),
        "role": role,
        "summary": summary,
        "shape": list(value.shape) if array else None,
        "dtype": str(value.dtype) if array else None,
        "size": size,
        "nbytes": nbytes,
        "params": params,
        "leaf": children is None,
        "static_field": static_field,
        "child_count": 0 if children is None else len(children),
        "children": [] if children is None else None,
    }
    if stats and array:
        described["inline"] = _array_inline(value)
    return described


def describe_tree(
    tree: Any,
    *,
    path: str = "",
    max_nodes: int = DEFAULT_MAX_NODES,
    roles: Any = None,
    children_offset: int = 0,
    children_stop: int | None = None,
    fold: bool = False,
    stats: bool = False,
    focus: str | None = None,
) -> dict:
    """The node of ``tree`` with its descendants, breadth first, up to ``max_nodes`` nodes.

    - ``path``: the keystr of ``tree`` inside the model it comes from (the prefix of every path).
    - ``roles``: the trainable filter spec of ``tree`` (``library.trainable_filter`` of the
      whole model, taken at ``path`` with :func:`find_node`, since a module's ``buffer_fields``
      apply to its own fields); ``None`` applies the same rule to ``tree`` alone
      (:func:`trained_flags`).
    - ``children_offset``/``children_stop``: the children of the root to list (paging of big
      nodes, and opening a folded run).

    For the page (the API leaves these off):

    - ``fold``: a run of at least ``FOLD_RUN`` identical siblings in a list or tuple (the same
      tree definition, static fields included, and the same leaf shapes and dtypes) is one
      entry ``{"fold": true, "start", "stop", "count", "label", ...}`` instead of its members.
    - ``stats``: every array node gets ``"inline": {"mean", "std", "strip"}`` (``strip``: up to
      ``STRIP_CELLS`` colours sampled evenly from its values).
    - ``focus``: a keystr path to land on. Every node on the way is described and marked
      ``open`` (whatever the node budget), the target gets ``focus: true``, and a node's page of
      children starts where needed to hold the next node on the way (the children before it
      are one entry that opens on request).

    Levels are filled in order, so the first levels always show; a node whose children do not
    fit gets ``children: None`` and ``lazy: true``. Each node lists at most ``CHILDREN_PAGE``
    entries; ``more_from`` is the first child not listed (``child_count``, or the stop, when
    all are).
    """
    args = (path, max_nodes, children_offset, children_stop, fold, stats, focus)
    try:
        return _describe(tree, _RangeTotals(tree, roles), *args)
    except _Mismatch:
        return _describe(tree, _Totals(tree, roles), *args)


def _describe(tree, totals, path, max_nodes, children_offset, children_stop, fold, stats, focus):
    chain = _focus_chain(tree, focus) if focus else {}
    root_children = children_of(tree)
    root = _node(tree, (), path, _last_name(path), totals, False, root_children, stats)
    if () in chain:
        root["open"] = True
        if chain[()] is None:
            root["focus"] = True
    budget = max(0, max_nodes - 1)
    stop = children_stop
    queue: deque = deque([(root, tree, (), root_children, max(0, children_offset), stop)])
    while queue:
        node, value, keys, children, offset, stop = queue.popleft()
        if children is None:
            continue
        if offset:
            node["children_offset"] = offset
        if not children:
            node["children"] = []
            continue
        if not totals.add_children(keys, children):
            raise _Mismatch
        on_chain = keys in chain
        signatures = None
        if (
            fold
            and (len(children) if stop is None else min(stop, len(children))) - offset >= FOLD_RUN
        ):
            signatures = totals.signatures(keys, value, len(children))
        entries, more_from = _listing(children, offset, stop, signatures, chain.get(keys))
        if len(entries) > budget and not on_chain:
            node["children"] = None
            node["lazy"] = True
            continue
        budget -= len(entries)
        node["more_from"] = more_from
        if stop is not None:
            node["children_stop"] = stop
        listed = []
        for entry in entries:
            if isinstance(entry, dict):
                entry["path"] = node["path"]
                listed.append(entry)
                continue
            child = entry
            child_keys = (*keys, child.key)
            grandchildren = None if child.static_field else children_of(child.value)
            child_node = _node(
                child.value,
                child_keys,
                node["path"] + key_segment(child.key),
                key_name(child.key),
                totals,
                child.static_field,
                grandchildren,
                stats,
            )
            if child_keys in chain:
                child_node["open"] = True
                if chain[child_keys] is None:
                    child_node["focus"] = True
            listed.append(child_node)
            if grandchildren is not None:
                queue.append((child_node, child.value, child_keys, grandchildren, 0, None))
        node["children"] = listed
    return root


FOLD_RUN = 5
"""Identical siblings folded into one line from this many on (page view)."""
STRIP_CELLS = 16
"""Colours in an array's inline strip."""


def _focus_chain(tree: Any, path: str) -> dict[tuple, int | None]:
    """``{keys of each node on the way to path: index of the next child}``; the target maps to
    ``None``. A path that names no node raises ``TreePathError``."""
    chain: dict[tuple, int | None] = {}
    node, keys, rest = tree, (), check_path(path)
    while rest:
        children = children_of(node) or []
        for index, child in enumerate(children):
            segment = key_segment(child.key)
            if rest.startswith(segment) and (
                len(rest) == len(segment) or rest[len(segment)] in ".["
            ):
                chain[keys] = index
                node, keys, rest = child.value, (*keys, child.key), rest[len(segment) :]
                if child.static_field and rest:
                    raise TreePathError(f"No node at {_cut(path, 80)!r}: a static field is a leaf.")
                break
        else:
            find_node(tree, path)  # raises with the message naming the first key not found
            raise TreePathError(f"No node at {_cut(path, 80)!r}.")
    chain[keys] = None
    return chain


def _signatures(value: Any, count: int) -> list | None:
    """One hashable signature per child of a list or tuple: its tree definition and its leaves'
    shapes and dtypes (values of non-array leaves); ``None`` when the node is not a sequence."""
    if not isinstance(value, list | tuple):
        return None
    leaves, treedef = jax.tree_util.tree_flatten(value)
    return _signatures_of(leaves, treedef, count)


def _signatures_of(leaves: list, treedef: Any, count: int, kids: list | None = None) -> list | None:
    kids = treedef.children() if kids is None else kids
    if len(kids) != count:
        return None
    parts = []
    for leaf in leaves:
        if isinstance(leaf, jax.Array | np.ndarray):
            parts.append((leaf.shape, leaf.dtype))
        else:
            try:
                hash(leaf)
                parts.append(("value", type(leaf), leaf))
            except TypeError:
                parts.append(("object", id(leaf)))
    signatures, position = [], 0
    for kid in kids:
        size = kid.num_leaves
        signatures.append((kid, tuple(parts[position : position + size])))
        position += size
    return signatures


def fold_label(value: Any) -> str:
    """``Linear(8→8)``, ``f32[8]``, or the type with its arrays: how a folded run is named."""
    if is_array(value):
        return array_summary(value)
    name = type_name(value)
    for a, b in (("in_features", "out_features"), ("in_size", "out_size"), ("in_dim", "out_dim")):
        if hasattr(value, a) and hasattr(value, b):
            return f"{name}({getattr(value, a)}→{getattr(value, b)})"
    arrays = [array_summary(leaf) for leaf in jax.tree_util.tree_leaves(value) if is_array(leaf)]
    inside = ", ".join(arrays[:3]) + (", …" if len(arrays) > 3 else "")
    return f"{name}({inside})" if arrays else name


def _listing(
    children: list[Child],
    offset: int,
    stop: int | None,
    signatures: list | None,
    focus: int | None,
) -> tuple[list, int]:
    """The entries of one node's page: children, and folds of identical runs; and the first
    child not listed (the end of the range when all are)."""
    end = len(children) if stop is None else min(stop, len(children))
    groups = [(i, i + 1) for i in range(offset, end)]
    if signatures is not None:
        groups, start = [], offset
        while start < end:
            finish = start + 1
            while finish < end and signatures[finish] == signatures[start]:
                finish += 1
            if finish - start >= FOLD_RUN:
                groups.append((start, finish))
            else:
                groups.extend((i, i + 1) for i in range(start, finish))
            start = finish
    if focus is not None and offset <= focus < end:
        split = []
        for start, finish in groups:
            if start <= focus < finish and finish - start > 1:
                split += [
                    g
                    for g in ((start, focus), (focus, focus + 1), (focus + 1, finish))
                    if g[1] > g[0]
                ]
            else:
                split.append((start, finish))
        groups = split
        at = next(i for i, (start, _) in enumerate(groups) if start == focus)
        if at >= CHILDREN_PAGE:
            earlier = (groups[0][0], focus)
            groups = [earlier, *groups[at : at + CHILDREN_PAGE - 1]]
            entries = [_fold_entry(children, *earlier, same=False)]
            entries += [_entry(children, g) for g in groups[1:]]
            return entries, groups[-1][1]
    page = groups[:CHILDREN_PAGE]
    entries = [_entry(children, g) for g in page]
    return entries, (page[-1][1] if page else end)


def _entry(children: list[Child], group: tuple[int, int]) -> Any:
    start, finish = group
    if finish - start == 1:
        return children[start]
    return _fold_entry(children, start, finish, same=True)


def _fold_entry(children: list[Child], start: int, finish: int, same: bool) -> dict:
    return {
        "fold": True,
        "same": same,
        "start": start,
        "stop": finish,
        "count": finish - start,
        "label": fold_label(children[start].value) if same else "",
        "first": key_segment(children[start].key),
        "last": key_segment(children[finish - 1].key),
    }


def _array_inline(array: Any) -> dict:
    """Mean, std and a strip of colours for one array, shown on its line without a click."""
    values = np.asarray(array)
    if values.dtype.kind == "c":
        values = np.abs(values)
    flat = values.astype(np.float64, copy=False).reshape(-1)
    if flat.size == 0:
        return {"mean": None, "std": None, "strip": []}
    finite = flat[np.isfinite(flat)]
    mean = float(finite.mean()) if finite.size else None
    std = float(finite.std()) if finite.size else None
    picks = flat[np.linspace(0, flat.size - 1, min(STRIP_CELLS, flat.size)).astype(int)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    return {"mean": mean, "std": std, "strip": [_colour(v, scale) for v in picks]}


def _colour(value: float, scale: float) -> str:
    """A diverging colour: blue below zero, white at zero, red above (grey for NaN/inf)."""
    if not math.isfinite(value):
        return "#9aa0a6"
    t = 0.0 if scale == 0 else max(-1.0, min(1.0, value / scale))
    if t >= 0:
        r, g, b = 255, round(255 - 170 * t), round(255 - 190 * t)
    else:
        r, g, b = round(255 + 200 * t), round(255 + 120 * t), 255
    return f"#{r:02x}{g:02x}{b:02x}"


def _last_name(path: str) -> str:
    """The name of the last key of a keystr path: ``weight`` of ``.layers[0].weight``."""
    if path.endswith("]"):
        return path[path.rfind("[") :]
    return path[path.rfind(".") + 1 :]


# Finding ----------------------------------------------------------------------------------


def check_path(path: Any) -> str:
    """``path`` if it may be a keystr path; ``TreePathError`` for anything odd."""
    if not isinstance(path, str):
        raise TreePathError(f"A path is text like .layers[0].weight; got {type(path).__name__}.")
    if len(path) > MAX_PATH_LENGTH:
        raise TreePathError(
            f"The path is {len(path)} characters long; paths have at most {MAX_PATH_LENGTH}."
        )
    if not _PATH_CHARACTERS.match(path):
        raise TreePathError("The path holds control characters; no node has such a path.")
    if path and path[0] not in ".[":
        raise TreePathError(
            f"The path {_cut(path, 40)!r} should start with '.' or '[' "
            "(like .weight or [0]); the root is the empty path."
        )
    return path


def find_node(tree: Any, path: str) -> Any:
    """The subtree of ``tree`` at the keystr ``path`` (``""`` is ``tree`` itself).

    The path is matched against the keys that ``jax.tree_util`` gives each level (static
    dataclass fields included); it is never parsed or evaluated as code. Raises
    ``TreePathError`` (a ``KeyError``) with a message naming the first step that fails.
    """
    node, _ = _walk(tree, check_path(path))
    return node


def find_child(tree: Any, path: str) -> tuple[Any, bool]:
    """Like :func:`find_node`, and whether the node is a static dataclass field."""
    return _walk(tree, check_path(path))


def _walk(tree: Any, path: str) -> tuple[Any, bool]:
    node, static_field, walked, rest = tree, False, "", path
    while rest:
        children = None if static_field else children_of(node)
        if children is None:
            raise TreePathError(
                f"No node at {_cut(path, 80)!r}: {walked or 'the root'} is a leaf "
                f"({type_name(node)}), it has no {_cut(rest, 40)!r}."
            )
        for child in children:
            segment = key_segment(child.key)
            if rest.startswith(segment) and (
                len(rest) == len(segment) or rest[len(segment)] in ".["
            ):
                node, static_field = child.value, child.static_field
                walked += segment
                rest = rest[len(segment) :]
                break
        else:
            where = walked or "the root"
            examples = ", ".join(key_segment(c.key) for c in children[:5])
            more = ", …" if len(children) > 5 else ""
            raise TreePathError(
                f"No node at {_cut(path, 80)!r}: {where} ({type_name(node)}) has no child "
                f"{_cut(_first_segment(rest), 40)!r}; its children are {examples or 'none'}{more}."
            )
    return node, static_field


def _first_segment(rest: str) -> str:
    match = re.match(r"^(\.[^.\[]*|\[[^\]]*\])", rest)
    return match.group(1) if match else rest


# Code for a path --------------------------------------------------------------------------


def tree_at_accessor(path: str | Sequence[Any]) -> str:
    """``eqx.tree_at(lambda m: m.layers[0].weight, model, ...)`` for a keystr path (or a tuple
    of JAX keys: ``GetAttrKey`` gives ``.name``, ``SequenceKey`` ``[i]``, ``DictKey``
    ``['k']``)."""
    text = path if isinstance(path, str) else "".join(key_segment(key) for key in path)
    return f"eqx.tree_at(lambda m: m{text}, model, ...)"


def path_of(keys: Sequence[Any]) -> str:
    """The keystr of a tuple of JAX keys."""
    return "".join(key_segment(key) for key in keys)


# Array values -----------------------------------------------------------------------------


def kept_shape(shape: Sequence[int], limit: int) -> tuple[int, ...]:
    """How much of each axis ``array_payload`` keeps: the leading part of every axis, the
    smallest axes whole, the others cut evenly so that at most ``limit`` elements remain."""
    shape = tuple(int(n) for n in shape)
    if math.prod(shape) <= limit:
        return shape
    limit = max(1, int(limit))
    kept = list(shape)
    order = sorted(range(len(shape)), key=lambda axis: shape[axis])
    remaining = limit
    for position, axis in enumerate(order):
        axes_left = len(order) - position
        share = _integer_root(remaining, axes_left)
        kept[axis] = max(1, min(shape[axis], share))
        remaining = max(1, remaining // kept[axis])
    return tuple(kept)


def _integer_root(value: int, degree: int) -> int:
    root = max(1, int(round(value ** (1.0 / degree))))
    while root > 1 and root**degree > value:
        root -= 1
    while (root + 1) ** degree <= value:
        root += 1
    return root


def json_number(value: Any) -> Any:
    """A float for JSON: NaN and infinities become the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"`` (which both Python's ``float()`` and JavaScript's ``Number()`` read back)."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _json_values(values: Any) -> Any:
    if isinstance(values, list):
        return [_json_values(v) for v in values]
    return json_number(values)


def array_stats(array: Any) -> dict:
    """``{"min", "max", "mean", "std"}`` in float64 over the finite values of the whole array
    (``None`` when it has none), and the count of NaN and infinite values."""
    values = np.asarray(array)
    if values.dtype.kind == "c":
        values = np.abs(values)
    values = values.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    nan_count = int(np.isnan(values).sum())
    inf_count = int(values.size - finite.sum() - nan_count)
    if finite.all():
        kept = values
    else:
        kept = values[finite]
    if kept.size == 0:
        stats = {"min": None, "max": None, "mean": None, "std": None}
    else:
        stats = {
            "min": float(kept.min()),
            "max": float(kept.max()),
            "mean": float(kept.mean()),
            "std": float(kept.std()),
        }
    stats["nan_count"] = nan_count
    stats["inf_count"] = inf_count
    return stats


def array_payload(array: Any, limit: int) -> dict:
    """``{"shape", "dtype", "stats", "values", "truncated"}`` for one array.

    ``values`` are nested lists, at most ``limit`` elements: when the array is larger, the
    leading part of every axis is kept (``kept_shape``; ``array[:k0, :k1, ...]``),
    ``truncated`` is true and ``kept_shape`` says what was kept. ``stats`` are computed in
    float64 over the whole array, not just the values sent. NaN and infinities are sent as the
    strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has no such numbers); the stats
    ignore them and count them in ``nan_count`` and ``inf_count``.
    """
    host = np.asarray(array)
    kept = kept_shape(host.shape, limit)
    truncated = kept != tuple(host.shape)
    part = host[tuple(slice(0, n) for n in kept)] if truncated else host
    if part.dtype.kind == "c":
        values = [[float(z.real), float(z.imag)] for z in part.reshape(-1)]
    elif part.dtype.kind == "f" or part.dtype.name == "bfloat16":
        values = _json_values(part.astype(np.float64).tolist())
    else:
        values = part.tolist()
    return {
        "shape": list(host.shape),
        "dtype": str(host.dtype),
        "stats": array_stats(host),
        "values": values,
        "truncated": truncated,
        "kept_shape": list(kept),
    }


def built_tree(spec: Any) -> dict:
    """The tree (:func:`describe_tree`, trainable roles included) of the module that catalog
    ``spec`` builds: a worker's task, so that the web process never spends seconds building a
    large module only to describe it."""
    model = spec.build()
    return describe_tree(model, roles=trainable_spec(model))
