"""Adapters: the off-diagonal edges of a layermap, carrying messages between slots."""

from typing import ClassVar, Self

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from ..rules import perceptron_rule
from .base import Adapter, as_vector, check_features


class Ferromagnetic(Adapter):
    """Elementwise coupling `x * strength` between two slots of the same size.

    **Arguments:**

    - `features`: size `F` of both slots.
    - `strength`: coupling, scalar or `(F,)`.

    Nothing learns: `backward` returns zeros.
    """

    strength: Array

    buffer_fields: ClassVar[tuple[str, ...]] = ("strength",)

    def __init__(self, features: int, strength: ArrayLike):
        features = check_features(features, "features")
        self.strength = as_vector(strength, features, "strength", jnp.float32)

    def __call__(self, x: Array, rng: Array | None = None) -> Array:
        """Return the message `x * strength`; `rng` is ignored."""
        with jax.named_scope("Ferromagnetic"):
            return x * self.strength

    def backward(self, x: Array, y: Array, y_hat: Array, gate: Array | None = None) -> Self:
        """Return zeros shaped like `self`: nothing learns."""
        return self._zero_update()


class AbstractFullyConnected(Adapter):
    """Dense map `x @ W` between two slots; subclasses choose whether `W` learns.

    **Arguments:**

    - `in_features`: size of the sending slot.
    - `out_features`: size of the receiving slot.
    - `strength`: scale of the initial weights, scalar or `(out_features,)`.
    - `threshold`: margin of the perceptron rule, scalar or `(out_features,)`.
    - `key`: PRNG key for `W`.

    `W = normal(key, (in_features, out_features)) * strength / sqrt(in_features)`.
    """

    W: Array
    strength: Array
    threshold: Array

    def __init__(
        self,
        in_features: int,
        out_features: int,
        strength: ArrayLike,
        threshold: ArrayLike,
        key: Array,
    ):
        in_features = check_features(in_features, "in_features")
        out_features = check_features(out_features, "out_features")
        dtype = jnp.float32
        self.strength = as_vector(strength, out_features, "strength", dtype)
        self.threshold = as_vector(threshold, out_features, "threshold", dtype)
        W = jax.random.normal(key, (in_features, out_features), dtype) * self.strength
        self.W = W / jnp.sqrt(in_features)

    def __call__(self, x: Array, rng: Array | None = None) -> Array:
        """Return the message `x @ W`; `rng` is ignored."""
        with jax.named_scope(type(self).__name__):
            return x @ self.W


class FullyConnected(AbstractFullyConnected):
    """Trainable dense adapter: `W` learns by the perceptron rule.

    See [`AbstractFullyConnected`][] for the arguments.
    """

    buffer_fields: ClassVar[tuple[str, ...]] = ("strength", "threshold")

    def backward(self, x: Array, y: Array, y_hat: Array, gate: Array | None = None) -> Self:
        """Perceptron update of `W` with `threshold` as margin.

        **Returns:**

        A module shaped like `self`: `W` holds the update, the other fields zeros.
        """
        with jax.named_scope("FullyConnected.backward"):
            dW = perceptron_rule(x, y, y_hat, self.threshold, gate)
            return eqx.tree_at(lambda m: m.W, self._zero_update(), dW)


class FrozenFullyConnected(AbstractFullyConnected):
    """Dense adapter whose weights never learn: `backward` returns zeros.

    See [`AbstractFullyConnected`][] for the arguments.
    """

    buffer_fields: ClassVar[tuple[str, ...]] = ("W", "strength", "threshold")

    def backward(self, x: Array, y: Array, y_hat: Array, gate: Array | None = None) -> Self:
        """Return zeros shaped like `self`: nothing learns."""
        return self._zero_update()
