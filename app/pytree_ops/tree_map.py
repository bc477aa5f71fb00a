"""tree_map: one expression over ``leaf`` applied to every leaf a filter keeps, giving a new
module (``eqx.combine(jax.tree.map(f, eqx.filter(model, filter)), model)``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr

from app.errors import PlaygroundError
from app.expressions import Expression, ExpressionError, parse_expression
from app.pytree_ops.filters import FILTERS, MAP_FILTERS, check_filter, kept_flags
from app.settings import Settings
from app.trees import array_summary

LEAF_VARIABLES = ("leaf",)
"""The variable of a leaf expression: the leaf's old value."""
EXAMPLES = ("leaf * 2", "zeros_like(leaf)", "leaf / sqrt(sum(leaf ** 2))", "sign(leaf)")


def parse_leaf_expression(text: Any, settings: Settings, field: str = "body.expression"):
    """``text`` as an expression over ``leaf`` (the safe language; never Python); 422 if not."""
    try:
        return parse_expression(
            text,
            LEAF_VARIABLES,
            max_length=settings.max_expression_length,
            max_nodes=settings.max_expression_nodes,
        )
    except ExpressionError as error:
        raise PlaygroundError(
            422, f"The expression {str(text)[:80]!r} cannot be used: {error.message}", field=field
        ) from None


def evaluate_on(function: Any, expression: Expression, leaf: Any, path: str) -> jax.Array:
    """``function(leaf)`` (the expression, jitted or not); any failure is a 422 naming the
    leaf; the result keeps the leaf's shape and dtype or is refused."""
    try:
        value = function(jnp.asarray(leaf))
    except Exception as error:  # noqa: BLE001 - any failure of user math is a 422
        message = str(error).split("\n")[0][:200]
        raise PlaygroundError(
            422,
            f"The expression {expression.text[:80]!r} fails on {path or 'the root'} "
            f"({array_summary(leaf)}): {message}",
            field="body.expression",
        ) from None
    check_same_kind(
        value, leaf, path, f"the expression {expression.text[:80]!r}", "body.expression"
    )
    return value


def check_same_kind(value: Any, leaf: Any, path: str, what: str, field: str) -> None:
    """Refuse a new value whose shape or dtype differs from the leaf it replaces."""
    if tuple(value.shape) != tuple(leaf.shape):
        raise PlaygroundError(
            422,
            f"{what[0].upper() + what[1:]} gives {array_summary(value)} for {path} "
            f"({array_summary(leaf)}): a leaf keeps its shape, or the module would no longer "
            "match its structure (and its compiled functions).",
            field=field,
        )
    if np.dtype(value.dtype) != np.dtype(leaf.dtype):
        raise PlaygroundError(
            422,
            f"{what[0].upper() + what[1:]} gives {np.dtype(value.dtype).name} values for {path} "
            f"({array_summary(leaf)}): a leaf keeps its dtype. Numbers in expressions are "
            "floats, so map integer arrays with a filter that leaves them out "
            "(is_inexact_array).",
            field=field,
        )


@dataclass
class Mapped:
    """A tree_map's result: the new module, what was mapped, and the code."""

    model: Any
    mapped: int
    untouched: list[str]
    code: str
    expression: Expression


def tree_map(model: Any, text: Any, name: Any, settings: Settings) -> Mapped:
    """Apply the expression ``text`` over ``leaf`` to every leaf the filter ``name`` keeps."""
    name = check_filter(name, MAP_FILTERS)
    expression = parse_leaf_expression(text, settings)
    function = jax.jit(lambda leaf: expression.evaluate({"leaf": leaf}))
    flat, treedef = jax.tree_util.tree_flatten_with_path(model)
    flags = kept_flags(model, name)
    shapes = {
        (tuple(leaf.shape), str(leaf.dtype))
        for (_, leaf), keep in zip(flat, flags, strict=True)
        if keep and eqx.is_array(leaf)
    }
    if len(shapes) > settings.max_tree_map_shapes:
        raise PlaygroundError(
            422,
            f"The filter {name} keeps arrays of {len(shapes)} different shapes; a tree_map "
            f"compiles its expression once per shape, for at most {settings.max_tree_map_shapes} "
            "(max_tree_map_shapes, PLAYGROUND_MAX_TREE_MAP_SHAPES).",
            field="body.filter",
        )
    new_leaves, mapped, untouched = [], 0, []
    for (keys, leaf), keep in zip(flat, flags, strict=True):
        if not keep or not eqx.is_array(leaf):
            if keep:
                untouched.append(keystr(keys))
            new_leaves.append(leaf)
            continue
        new_leaves.append(evaluate_on(function, expression, leaf, keystr(keys)))
        mapped += 1
    new_model = jax.tree_util.tree_unflatten(treedef, new_leaves)
    return Mapped(new_model, mapped, untouched, map_code(expression, name), expression)


def map_code(expression: Expression, name: str) -> str:
    """The tree_map as Python over ``model``."""
    lines = [f"f = lambda leaf: {expression.to_python()}"]
    if name == "all":
        lines.append(
            "new_model = jax.tree.map(lambda leaf: f(leaf) if eqx.is_array(leaf) else leaf, model)"
        )
    else:
        lines += [
            f"mapped = jax.tree.map(f, eqx.filter(model, {FILTERS[name]}))",
            "new_model = eqx.combine(mapped, model)  # the leaves the filter left out: model's own",
        ]
    return "\n".join(lines)
