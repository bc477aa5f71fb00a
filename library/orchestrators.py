"""Orchestrators: how a network evolves in time over a layermap and a state."""

from collections.abc import Mapping
from typing import Literal, Self

import equinox as eqx
import jax
from jax import Array

from .layermaps import LayerMap
from .modules.base import AbstractModule, Layer
from .states import State

Filter = Literal["all", "forward", "backward"]


def _split(rng: Array | None, num: int) -> tuple[Array | None, list[Array | None]]:
    """Split `rng` into a new key and `num` subkeys; `None` stays `None`."""
    if rng is None:
        return None, [None] * num
    keys = jax.random.split(rng, num + 1)
    return keys[0], list(keys[1:])


class SequentialOrchestrator(eqx.Module):
    """Updates the slots of a state row by row, in the order of the layermap's rows.

    **Arguments:**

    - `layers`: the [`LayerMap`][] (a plain dict of dicts is converted with
      [`LayerMap.from_dict`][]). Every row needs its diagonal layer.

    All methods are pure: they return new objects and a new PRNG key.
    """

    lmap: LayerMap

    def __init__(self, layers: LayerMap | Mapping[int, Mapping[int, AbstractModule]]):
        if isinstance(layers, Mapping):
            layers = LayerMap.from_dict(layers)
        if not isinstance(layers, LayerMap):
            raise TypeError(f"layers must be a LayerMap; got {type(layers).__name__}")
        for i in layers.rows():
            if (i, i) not in layers:
                raise ValueError(f"row {i} has no diagonal layer ({i}, {i})")
            if not isinstance(layers[i, i], Layer):
                raise TypeError(
                    f"the diagonal entry ({i}, {i}) must be a Layer; "
                    f"got {type(layers[i, i]).__name__}"
                )
        self.lmap = layers

    def _check(self, state: State) -> None:
        size = len(state)
        largest = max(max(i, j) for (i, j), _ in self.lmap.edge_items())
        if largest >= size:
            raise ValueError(
                f"the layermap uses slot {largest} but the state has {size} slots (0..{size - 1})"
            )

    def _field(
        self, i: int, row: Mapping[int, AbstractModule], state: State, rng: Array | None
    ) -> tuple[Array, Array | None]:
        """Reduced messages of row `i` from the entries in `row`."""
        rng, keys = _split(rng, len(row))
        pairs = zip(row.items(), keys, strict=True)
        messages = {j: module(state[j], k) for (j, module), k in pairs}
        return self.lmap[i, i].reduce(messages), rng

    def step(
        self,
        state: State,
        rng: Array | None,
        *,
        filter_messages: Filter = "all",
        skip_output_state: bool = True,
    ) -> tuple[State, Array | None]:
        """One sweep over the rows, in order.

        For each row `i`, the messages `lmap[i, j](state[j])` (filtered by
        `filter_messages`) are reduced by `lmap[i, i]`, and `lmap[i, i].activation`
        of the result is written into slot `i` at once, so later rows of the same
        sweep already see it.

        **Arguments:**

        - `state`: the current state.
        - `rng`: PRNG key (or `None`).
        - `filter_messages`: `"all"`, `"forward"` (`j <= i`) or `"backward"` (`j >= i`).
        - `skip_output_state`: leave the last row (the output) untouched.

        **Returns:**

        `(new_state, new_rng)`.
        """
        self._check(state)
        with jax.named_scope("SequentialOrchestrator.step"):
            for i, row in self.lmap.row_items(skip_last=skip_output_state, subset=filter_messages):
                h, rng = self._field(i, row, state, rng)
                state = state.replace_val(i, self.lmap[i, i].activation(h))
        return state, rng

    def step_inference(self, state: State, rng: Array | None) -> tuple[State, Array | None]:
        """[`step`][] with forward messages only (`j <= i`), output untouched."""
        return self.step(state, rng, filter_messages="forward")

    def predict(self, state: State, rng: Array | None) -> tuple[State, Array | None]:
        """Update the last row (the output slot) only, from all its messages.

        **Returns:**

        `(new_state, new_rng)`.
        """
        self._check(state)
        with jax.named_scope("SequentialOrchestrator.predict"):
            i = self.lmap.rows()[-1]
            h, rng = self._field(i, self.lmap[i], state, rng)
            state = state.replace_val(i, self.lmap[i, i].activation(h))
        return state, rng

    def backward(
        self, state: State, rng: Array | None, *, filter_messages: Filter = "forward"
    ) -> Self:
        """Local updates of every module.

        First the field `h_i` of every row, last row included, is computed on the
        unchanged state (messages filtered by `filter_messages`, forward only by
        default). Then every entry `(i, j)` gives
        `lmap[i, j].backward(x=state[j], y=state[i], y_hat=h_i)`.

        **Returns:**

        An orchestrator with the same tree structure whose arrays are the updates,
        ready for Optax after `eqx.filter(..., eqx.is_inexact_array)`.
        """
        self._check(state)
        with jax.named_scope("SequentialOrchestrator.backward"):
            fields = {}
            for i, row in self.lmap.row_items(subset=filter_messages):
                fields[i], rng = self._field(i, row, state, rng)
            updates = {i: {} for i in self.lmap.rows()}
            for (i, j), module in self.lmap.edge_items():
                updates[i][j] = module.backward(x=state[j], y=state[i], y_hat=fields[i])
            lmap = LayerMap.from_dict(updates, require_diagonal=False)
        return eqx.tree_at(lambda o: o.lmap, self, lmap)
