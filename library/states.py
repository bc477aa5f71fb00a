"""States: the condition of the whole network, one buffer per slot.

Slot `0` is the input, slot `-1` the output; the slots in between are hidden.
"""

import abc
import operator
from collections.abc import Sequence
from typing import Self

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike, DTypeLike


class State(eqx.Module):
    """Interface of a network state: an indexable collection of buffers."""

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Array:
        """Return the buffer of slot `index` (negative indices count from the end)."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Return the number of slots."""

    @property
    def readout(self) -> Array:
        """The output buffer, `self[-1]`."""
        return self[-1]

    @abc.abstractmethod
    def init(self, x: ArrayLike, y: ArrayLike | None = None) -> Self:
        """Return a new state for the batch `x` (and target `y`), other slots zero."""

    @abc.abstractmethod
    def replace(self, values: Sequence[Array]) -> Self:
        """Return a new state holding `values`, one per slot."""

    @abc.abstractmethod
    def replace_val(self, index: int, value: Array) -> Self:
        """Return a new state whose slot `index` holds `value`."""


def _as_size(item: object, position: int) -> tuple[int, ...]:
    """Normalise one item of `sizes` to a tuple of positive ints."""
    dims = item if isinstance(item, tuple | list) else (item,)
    out = []
    for dim in dims:
        try:
            if isinstance(dim, bool):
                raise TypeError
            value = operator.index(dim)
        except TypeError:
            value = 0
        if value <= 0:
            raise ValueError(
                f"sizes[{position}] must be a positive int or a tuple of positive ints; "
                f"got {item!r}"
            )
        out.append(value)
    if not out:
        raise ValueError(f"sizes[{position}] must not be an empty tuple")
    return tuple(out)


class SequentialState(State):
    """A list of buffers, one per slot, each shaped `(batch, *size)`.

    **Arguments:**

    - `sizes`: one item per slot, a positive int or a tuple of positive ints
      (the per-example shape). Slot `0` is the input, slot `-1` the output.
    - `dtype`: dtype of every buffer.

    After construction every buffer is zeros of shape `(1, *size)`.

    **Raises:**

    `ValueError` if `sizes` is empty or holds anything but positive ints.
    """

    states: list[Array]
    sizes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    dtype: np.dtype = eqx.field(static=True)

    def __init__(self, sizes: Sequence[int | tuple[int, ...]], dtype: DTypeLike = jnp.float32):
        if isinstance(sizes, str | bytes) or not isinstance(sizes, Sequence):
            raise ValueError(f"sizes must be a list of sizes; got {sizes!r}")
        if len(sizes) == 0:
            raise ValueError("sizes must name at least one slot; got an empty list")
        self.sizes = tuple(_as_size(item, i) for i, item in enumerate(sizes))
        self.dtype = jnp.dtype(dtype)
        self.states = [jnp.zeros((1, *size), self.dtype) for size in self.sizes]

    def __getitem__(self, index: int) -> Array:
        return self.states[index]

    def __len__(self) -> int:
        return len(self.states)

    def init(self, x: ArrayLike, y: ArrayLike | None = None) -> Self:
        """Return a new state for the batch `x`.

        **Arguments:**

        - `x`: input batch, `(batch, *sizes[0])`; written to slot `0`.
        - `y`: optional target batch, `(batch, *sizes[-1])`; written to slot `-1`.

        **Returns:**

        A new state whose buffers have `x`'s batch size; every other slot is zeros.

        **Raises:**

        `ValueError` naming both shapes if `x` or `y` does not fit its slot.
        """
        x = jnp.asarray(x, self.dtype)
        if x.ndim == 0 or x.shape[1:] != self.sizes[0]:
            raise ValueError(
                f"x has shape {x.shape}; slot 0 expects (batch, {_fmt(self.sizes[0])})"
            )
        batch = x.shape[0]
        states = [jnp.zeros((batch, *size), self.dtype) for size in self.sizes]
        states[0] = x
        if y is not None:
            y = jnp.asarray(y, self.dtype)
            expected = (batch, *self.sizes[-1])
            if y.shape != expected:
                raise ValueError(
                    f"y has shape {y.shape}; slot -1 expects {expected} for x of shape {x.shape}"
                )
            states[-1] = y
        return self.replace(states)

    def replace(self, values: Sequence[Array]) -> Self:
        """Return a new state holding `values`, one array per slot.

        **Raises:**

        `ValueError` if the number of arrays differs from the number of slots.
        """
        values = list(values)
        if len(values) != len(self.states):
            raise ValueError(
                f"replace expects {len(self.states)} arrays, one per slot; got {len(values)}"
            )
        return eqx.tree_at(lambda s: s.states, self, values)

    def replace_val(self, index: int, value: Array) -> Self:
        """Return a new state whose slot `index` holds `value`; the old one is untouched."""
        values = list(self.states)
        values[index] = value
        return eqx.tree_at(lambda s: s.states, self, values)


def _fmt(size: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in size)
