"""The filters the pytree operations offer, by name, as Equinox filter specs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax

from app.errors import PlaygroundError
from app.trees import trained_flags

FilterName = Literal["is_array", "is_inexact_array", "trainable"]
MapFilterName = Literal["all", "is_array", "is_inexact_array", "trainable"]

FILTERS: dict[str, str] = {
    "is_array": "eqx.is_array",
    "is_inexact_array": "eqx.is_inexact_array",
    "trainable": "library.trainable_filter(model)",
}
"""Filter name -> the Python a user would write for it."""
MAP_FILTERS: dict[str, str] = {"all": "every leaf", **FILTERS}

FILTER_HELP: dict[str, str] = {
    "all": "every leaf (leaves that are not arrays, such as functions, stay as they are)",
    "is_array": "every array (JAX or NumPy), trained or not",
    "is_inexact_array": "every floating-point (or complex) array",
    "trainable": "the arrays that grad trains: library.trainable_filter leaves buffers out",
}


def check_filter(name: Any, allowed: dict[str, str] = FILTERS, field: str = "body.filter") -> str:
    """``name`` if it is one of ``allowed``; a 422 naming the choices otherwise."""
    if not isinstance(name, str) or name not in allowed:
        choices = ", ".join(allowed)
        raise PlaygroundError(
            422, f"Unknown filter {str(name)[:40]!r}; choose one of: {choices}.", field=field
        )
    return name


def filter_spec(model: Any, name: str) -> Any:
    """What ``eqx.partition(model, ...)`` takes for the filter ``name``: a callable or, for
    ``trainable``, ``library.trainable_filter(model)`` (a pytree of bools)."""
    check_filter(name, MAP_FILTERS)
    if name == "trainable":
        from library import trainable_filter

        return trainable_filter(model)
    functions: dict[str, Callable[[Any], bool]] = {
        "all": lambda _leaf: True,
        "is_array": eqx.is_array,
        "is_inexact_array": eqx.is_inexact_array,
    }
    return functions[name]


def kept_flags(model: Any, name: str) -> list[bool]:
    """For each leaf of ``jax.tree_util.tree_leaves(model)``: whether filter ``name`` keeps it
    (``trainable``: the rule of ``library.trainable_filter``, computed in one pass)."""
    check_filter(name, MAP_FILTERS)
    if name == "trainable":
        return trained_flags(model, jax.tree_util.tree_flatten_with_path(model)[0])
    spec = filter_spec(model, name)
    return [bool(spec(leaf)) for leaf in jax.tree_util.tree_leaves(model)]
