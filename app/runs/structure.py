"""A module's structure: what a compiled run compiles in, and what it takes as an argument.

A compiled run takes a module's array leaves as an argument and rebuilds the module inside the
trace from its tree definition and its other leaves (static fields, activation functions), so
one executable serves every module of the same structure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np

import library
from app.cache import BoundedCache

MAX_STATIC_PARTS = 64
"""Static parts remembered per module for "what changed" (a 5000-layer MLP has 20,000)."""


class ArrayLeaf(NamedTuple):
    """An array leaf, by its shape and dtype: an argument of the compiled function."""

    shape: tuple[int, ...]
    dtype: str
    weak: bool


class StaticLeaf(NamedTuple):
    """Any other leaf (an activation function, a number): compiled in."""

    value: Any


Leaf = ArrayLeaf | StaticLeaf


class StructureKey(NamedTuple):
    """What a compiled run depends on of a module: its tree definition and its leaves.

    ``identity`` is the structure's ``id`` when a leaf cannot be hashed (the key then matches
    that structure only); ``None`` otherwise."""

    treedef: Any
    leaves: tuple[Leaf, ...]
    identity: int | None = None

    @property
    def statics(self) -> tuple[StaticLeaf, ...]:
        return tuple(leaf for leaf in self.leaves if isinstance(leaf, StaticLeaf))

    @property
    def arrays(self) -> tuple[ArrayLeaf, ...]:
        return tuple(leaf for leaf in self.leaves if isinstance(leaf, ArrayLeaf))


@dataclass(frozen=True)
class ModuleStructure:
    """How a module is built from its leaves: what is compiled in, and what is an argument."""

    treedef: Any
    leaves: tuple[Leaf, ...]
    template: tuple  # the leaves, arrays replaced by None
    array_index: tuple[int, ...]
    hashable: bool
    statics: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """(path, value) of the static fields and non-array leaves, for "what changed" only."""

    @property
    def key(self) -> StructureKey:
        return StructureKey(self.treedef, self.leaves, None if self.hashable else id(self))


class KnownModule(NamedTuple):
    """A module's structure, its array leaves, and whether every leaf is a trained array."""

    structure: ModuleStructure
    arrays: list
    simple: bool


def module_structure(model: Any) -> tuple[ModuleStructure, list]:
    """The structure of ``model`` and its array leaves (the compiled function's argument)."""
    leaves, treedef = jax.tree_util.tree_flatten(model)
    descriptions: list[Leaf] = []
    template = []
    index = []
    arrays = []
    hashable = True
    for position, leaf in enumerate(leaves):
        if eqx.is_array(leaf):
            descriptions.append(
                ArrayLeaf(
                    tuple(leaf.shape),
                    np.dtype(leaf.dtype).name,
                    bool(getattr(leaf, "weak_type", False)),
                )
            )
            template.append(None)
            index.append(position)
            arrays.append(leaf)
        else:
            try:
                hash(leaf)
            except TypeError:
                hashable = False
                descriptions.append(StaticLeaf(f"<unhashable {type(leaf).__name__}>"))
            else:
                descriptions.append(StaticLeaf(leaf))
            template.append(leaf)
    structure = ModuleStructure(
        treedef=treedef,
        leaves=tuple(descriptions),
        template=tuple(template),
        array_index=tuple(index),
        hashable=hashable,
        statics=static_parts(model),
    )
    return structure, arrays


def static_parts(model: Any) -> tuple[tuple[str, str], ...]:
    """``(path, value)`` of the first static dataclass fields and non-array leaves of
    ``model`` (``(".activation", "relu")``, ``(".k", "2.0")``), depth first."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [("", model)]
    while stack and len(found) < MAX_STATIC_PARTS:
        path, node = stack.pop()
        if isinstance(node, eqx.Module) and dataclasses.is_dataclass(node):
            children = []
            for item in dataclasses.fields(node):
                if not hasattr(node, item.name):
                    continue
                value = getattr(node, item.name)
                if item.metadata.get("static", False):
                    found.append((f"{path}.{item.name}", leaf_name(value)))
                else:
                    children.append((f"{path}.{item.name}", value))
            stack.extend(reversed(children))
        elif isinstance(node, list | tuple):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(node)]))
        elif isinstance(node, dict):
            stack.extend(reversed([(f"{path}[{k!r}]", v) for k, v in node.items()]))
        elif node is not None and not eqx.is_array(node) and not isinstance(node, jax.Array):
            found.append((path, leaf_name(node)))
    return tuple(found[:MAX_STATIC_PARTS])


def leaf_name(value: Any) -> str:
    """A function's name (``relu``), or the start of the value's ``repr``."""
    name = getattr(value, "__name__", None) or getattr(
        getattr(value, "fun", None), "__name__", None
    )
    if isinstance(name, str):
        return name
    return repr(value)[:40]


def all_trained(model: Any) -> bool:
    """Whether every array of ``model`` is trained (none is a buffer)."""
    spec = library.trainable_filter(model)
    return all(flag is True for flag in jax.tree_util.tree_leaves(spec))


def know_module(model: Any) -> KnownModule:
    """``model``'s structure, its array leaves and whether they are all trained."""
    structure, arrays = module_structure(model)
    simple = all(isinstance(leaf, ArrayLeaf) for leaf in structure.leaves) and all_trained(model)
    return KnownModule(structure, arrays, simple)


class StructureMemo:
    """:func:`know_module` of recently seen module objects (the store keeps built modules).

    An entry holds the module's arrays, so its key is weak (``app.cache``): it goes as soon as
    the module itself is collected, and the memo never keeps a module's memory alive.
    """

    def __init__(self, size: int = 256):
        self._known: BoundedCache[Any, KnownModule] = BoundedCache(size, weak_keys=True)

    def __len__(self) -> int:
        return len(self._known)

    def get(self, model: Any) -> KnownModule:
        """The structure, the array leaves, and whether every leaf is a trained array."""
        return self._known.get_or_make(model, lambda: know_module(model))
