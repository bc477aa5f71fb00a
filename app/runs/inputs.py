"""The input ``x`` of a run: checked against the limits, then made (and kept for reuse).

:func:`prepare_input` is the public way to make an input from an :class:`InputSpec`; the run
engine and training's dataset of typed values both use it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from app.cache import BoundedCache
from app.runs.errors import RunError
from app.runs.spec import InputSpec, ValuesError, parse_values, shape_text


@dataclass(frozen=True)
class PreparedInput:
    """An input array and what it was made from (for the answer and the exported code)."""

    array: jax.Array
    shape: tuple[int, ...]
    dtype: str
    init: str
    seed: int
    start: float | None
    stop: float | None
    values: tuple[float, ...] | None  # flat, for init=values
    values_shape: tuple[int, ...] | None


def prepare_input(
    spec: InputSpec, default_shape: Sequence[int], default_dtype: str, max_elements: int
) -> PreparedInput:
    """The input array, its size checked against ``max_input_elements`` before allocating."""
    dtype = spec.dtype or default_dtype
    values = values_shape = None
    if spec.init == "values":
        if spec.values is None:
            raise RunError(
                "init is 'values' but no values were given: type numbers such as 1 2; 3 4",
                field="input.values",
            )
        try:
            flat, values_shape = parse_values(spec.values, max_elements)
        except ValuesError as error:
            raise RunError(f"The input values: {error}", field="input.values") from None
        values = tuple(flat)
        shape = tuple(spec.shape) if spec.shape is not None else values_shape
        if math.prod(shape) != len(flat) or (
            len(values_shape) > 1 and tuple(values_shape) != tuple(shape)
        ):
            raise RunError(
                f"The input values have shape {shape_text(values_shape)} ({len(flat)} numbers) "
                f"but the input shape is {shape_text(shape)}: give values of that shape, or a "
                "flat list of as many numbers",
                field="input.values",
            )
        if dtype == "int32" and any(v != int(v) for v in flat if math.isfinite(v)):
            raise RunError(
                "The input is int32 (indices) but the values are not whole numbers",
                field="input.values",
            )
        if dtype == "int32" and not all(math.isfinite(v) for v in flat):
            raise RunError(
                "The input is int32 (indices): NaN and infinity are not allowed",
                field="input.values",
            )
    else:
        shape = tuple(spec.shape) if spec.shape is not None else tuple(default_shape)
    elements = math.prod(shape)
    if elements > max_elements:
        raise RunError(
            f"The input {shape_text(shape)} has {elements} elements; the limit is "
            f"{max_elements} (max_input_elements, PLAYGROUND_MAX_INPUT_ELEMENTS).",
            field="input.shape",
        )
    if dtype == "int32" and spec.init == "normal":
        raise RunError(
            "A normal input is made of floats, but this input is int32 (indices): "
            "use uniform (random whole numbers from start to stop), linspace, ones, "
            "zeros or values",
            field="input.init",
        )
    start, stop = spec.bounds(dtype)
    if spec.init in ("uniform",) and not start < stop:
        raise RunError(
            f"uniform needs start < stop; got start={start:g}, stop={stop:g}", field="input.start"
        )
    prepared = PreparedInput(
        array=None,
        shape=shape,
        dtype=dtype,
        init=spec.init,
        seed=spec.seed,  # type: ignore[arg-type]
        start=start if spec.init in ("uniform", "linspace") else None,
        stop=stop if spec.init in ("uniform", "linspace") else None,
        values=values,
        values_shape=values_shape,
    )
    return dataclasses.replace(prepared, array=_make_array(prepared))


def _make_array(p: PreparedInput) -> jax.Array:
    dtype = jnp.dtype(p.dtype)
    if p.init == "ones":
        return jnp.ones(p.shape, dtype=dtype)
    if p.init == "zeros":
        return jnp.zeros(p.shape, dtype=dtype)
    if p.init == "normal":
        return jax.random.normal(jax.random.PRNGKey(p.seed), p.shape, dtype=dtype)
    if p.init == "uniform":
        key = jax.random.PRNGKey(p.seed)
        if p.dtype == "int32":
            return jax.random.randint(key, p.shape, int(p.start), int(p.stop), dtype=dtype)
        return jax.random.uniform(key, p.shape, dtype=dtype, minval=p.start, maxval=p.stop)
    if p.init == "linspace":
        return jnp.linspace(p.start, p.stop, math.prod(p.shape), dtype=dtype).reshape(p.shape)
    return jnp.array(np.asarray(p.values, dtype=np.float64), dtype=dtype).reshape(p.shape)


class InputCache:
    """Inputs made from the same spec are the same array: keep the recent ones."""

    def __init__(self, size: int = 64):
        self._items: BoundedCache[tuple, PreparedInput] = BoundedCache(size)

    def get(self, spec: InputSpec, default_shape, default_dtype, max_elements) -> PreparedInput:
        if spec.init == "values":
            return prepare_input(spec, default_shape, default_dtype, max_elements)
        key = (
            None if spec.shape is None else tuple(spec.shape),  # [] (a scalar) is a shape too
            spec.init,
            spec.seed,
            spec.start,
            spec.stop,
            spec.dtype,
            tuple(default_shape),
            default_dtype,
        )
        return self._items.get_or_make(
            key, lambda: prepare_input(spec, default_shape, default_dtype, max_elements)
        )
