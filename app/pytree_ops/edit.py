"""Edit a leaf: the module becomes ``eqx.tree_at(lambda m: m<path>, model, new)`` of itself.

The new value is a number, pasted values of the target's shape, or an expression over the old
value ``leaf``; the target is the whole array or one element. Shapes and dtypes never change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from app.errors import PlaygroundError
from app.pytree_ops.tree_map import evaluate_on, parse_leaf_expression
from app.runs.spec import ValuesError, parse_values
from app.settings import Settings
from app.trees import TreePathError, find_child, find_node, is_array, type_name

MAX_INDEX_RANK = 8


@dataclass
class Edited:
    """An edit's result: the new module, the words and the code for it."""

    model: Any
    path: str
    index: tuple[int, ...] | None
    note: str
    code: str


def array_leaf(model: Any, path: Any, field: str = "body.path") -> Any:
    """The array leaf at ``path``; 422 naming the problem for any other path."""
    try:
        node, static_field = find_child(model, path)
    except TreePathError as error:
        raise PlaygroundError(422, str(error), field=field) from None
    if static_field:
        raise PlaygroundError(
            422,
            f"{path} is a static field (eqx.field(static=True)): part of the structure, not a "
            "leaf eqx.tree_at can reach. Change it in the build form, which builds a new module.",
            field=field,
        )
    if not is_array(node):
        where = f"The node at {path!r}" if path else "The root"
        raise PlaygroundError(
            422,
            f"{where} is a {type_name(node)}, not an array leaf; edit an array, such as .weight.",
            field=field,
        )
    return node


def check_index(index: Any, shape: tuple[int, ...], path: str) -> tuple[int, ...] | None:
    """``index`` as a tuple of non-negative whole numbers inside ``shape``; 422 otherwise."""
    if index is None:
        return None
    if not isinstance(index, list | tuple) or len(index) > MAX_INDEX_RANK:
        raise PlaygroundError(
            422, "The index is a list of whole numbers, one per axis, like [0, 1].", "body.index"
        )
    if len(index) != len(shape):
        raise PlaygroundError(
            422,
            f"The index {list(index)} has {len(index)} numbers but {path} has {len(shape)} axes "
            f"(shape {list(shape)}): give one number per axis.",
            field="body.index",
        )
    out = []
    for axis, (i, n) in enumerate(zip(index, shape, strict=True)):
        if isinstance(i, bool) or not isinstance(i, int):
            raise PlaygroundError(
                422, f"index[{axis}] is {i!r:.20}; an index is a whole number.", "body.index"
            )
        if not -n <= i < n:
            raise PlaygroundError(
                422,
                f"index[{axis}] = {i} is out of range for axis {axis} of {path}, which has "
                f"{n} elements (0 to {n - 1}).",
                field="body.index",
            )
        out.append(i % n)
    return tuple(out)


def _values_array(value: Any, target_shape: tuple[int, ...], dtype: Any, path: str) -> Any:
    size = int(np.prod(target_shape)) if target_shape else 1
    try:
        flat, shape = parse_values(value, max(1, size))
    except ValuesError as error:
        raise PlaygroundError(422, f"The value for {path}: {error}", field="body.value") from None
    if tuple(shape) == (1,) and tuple(target_shape) != (1,):
        shape = ()  # one number, typed as text: for every element
    if shape != () and tuple(shape) != tuple(target_shape):
        raise PlaygroundError(
            422,
            f"The values have shape {list(shape)} but {path} needs {list(target_shape)}: paste "
            "values of that shape, or one number for all of them.",
            field="body.value",
        )
    numbers = np.asarray(flat, dtype=np.float64).reshape(shape)
    kind = np.dtype(dtype).kind
    if kind in "iub":
        if not np.all(np.isfinite(numbers)) or np.any(numbers != np.round(numbers)):
            raise PlaygroundError(
                422,
                f"{path} holds {np.dtype(dtype).name} values (whole numbers); "
                "the value must be whole numbers too.",
                field="body.value",
            )
        info = np.iinfo(dtype) if kind in "iu" else None
        low, high = (info.min, info.max) if info is not None else (0, 1)
        if numbers.size and (numbers.min() < low or numbers.max() > high):
            raise PlaygroundError(
                422,
                f"{path} holds {np.dtype(dtype).name}: values must be from {low} to {high}.",
                field="body.value",
            )
    return jnp.broadcast_to(jnp.asarray(numbers, dtype=dtype), target_shape)


def accessor(path: str) -> str:
    return f"lambda m: m{path}"


def edit_leaf(
    model: Any,
    path: Any,
    index: Any,
    value: Any,
    expression: Any,
    settings: Settings,
) -> Edited:
    """The module with the leaf at ``path`` (or its element ``index``) set to ``value`` or to
    ``expression`` over its old value ``leaf``."""
    leaf = array_leaf(model, path)
    if (value is None) == (expression is None):
        raise PlaygroundError(
            422,
            "Give either a value (a number, or values of the leaf's shape) or an expression over "
            "leaf, not both and not neither.",
            field="body.value",
        )
    where = check_index(index, tuple(leaf.shape), path)
    target = leaf if where is None else leaf[where]
    shown = path + ("" if where is None else "[" + ", ".join(map(str, where)) + "]")
    if expression is not None:
        parsed = parse_leaf_expression(expression, settings)
        new = evaluate_on(lambda x: parsed.evaluate({"leaf": x}), parsed, target, shown)
        what = f"set {shown} to {parsed.text}"
        new_code = _code_for_expression(parsed.to_python(), path, where)
    else:
        new = _values_array(value, tuple(target.shape), leaf.dtype, shown)
        what = f"set {shown} to {_value_words(value)}"
        new_code = _code_for_value(new, path, where)
    new_leaf = new if where is None else leaf.at[where].set(new)
    edited = eqx.tree_at(lambda m: find_node(m, path), model, new_leaf)
    code = f"model = eqx.tree_at({accessor(path)}, model, {new_code})"
    return Edited(edited, path, where, what, code)


def _value_words(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return "the pasted values"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}"
    return "the pasted values"


def _code_for_value(new: Any, path: str, where: tuple[int, ...] | None) -> str:
    host = np.asarray(new)
    literal = repr(host.item()) if host.ndim == 0 else "jnp.array(" + repr(host.tolist()) + ")"
    if len(literal) > 300:
        literal = literal[:280] + " …)"
    if where is None:
        return literal
    return f"model{path}.at[{', '.join(map(str, where))}].set({literal})"


def _code_for_expression(python: str, path: str, where: tuple[int, ...] | None) -> str:
    if where is None:
        return f"(lambda leaf: {python})(model{path})"
    index = ", ".join(map(str, where))
    return f"model{path}.at[{index}].set((lambda leaf: {python})(model{path}[{index}]))"
