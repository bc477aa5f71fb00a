"""Recurrent layers: a slot coupled to itself through a dense matrix `J`."""

from typing import ClassVar, Self

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from ..rules import perceptron_rule
from .base import Layer, as_scalar, as_vector, check_features


class AbstractRecurrent(Layer):
    """Dense self-coupling `J` with a fixed diagonal, learnt by the perceptron rule.

    Subclasses only choose the activation.

    **Arguments:**

    - `features`: number of units `F`.
    - `j_d`: self-coupling, the diagonal of `J`; scalar or `(F,)`.
    - `threshold`: per-unit margin of the perceptron rule; scalar or `(F,)`.
    - `key`: PRNG key for `J`.
    - `strength`: scalar multiplying the random part of `J`.

    `J = normal(key, (F, F)) / sqrt(F) * strength`, then its diagonal is set to `j_d`.
    """

    J: Array
    J_D: Array
    threshold: Array
    strength: Array

    buffer_fields: ClassVar[tuple[str, ...]] = ("J_D", "threshold", "strength")

    def __init__(
        self,
        features: int,
        j_d: ArrayLike,
        threshold: ArrayLike,
        key: Array,
        strength: ArrayLike = 1.0,
    ):
        features = check_features(features, "features")
        dtype = jnp.float32
        self.J_D = as_vector(j_d, features, "j_d", dtype)
        self.threshold = as_vector(threshold, features, "threshold", dtype)
        self.strength = as_scalar(strength, "strength", dtype)
        J = jax.random.normal(key, (features, features), dtype) / jnp.sqrt(features)
        J = J * self.strength
        self.J = J.at[jnp.diag_indices(features)].set(self.J_D)

    def __call__(self, x: Array, rng: Array | None = None) -> Array:
        """Return the message `x @ J`; `rng` is ignored."""
        with jax.named_scope(type(self).__name__):
            return x @ self.J

    def backward(self, x: Array, y: Array, y_hat: Array, gate: Array | None = None) -> Self:
        """Perceptron update of `J` with `threshold` as margin; diagonal update 0.

        **Returns:**

        A module shaped like `self`: `J` holds the update, every other field zeros.
        """
        with jax.named_scope(f"{type(self).__name__}.backward"):
            dJ = perceptron_rule(x, y, y_hat, self.threshold, gate)
            dJ = dJ * (1 - jnp.eye(dJ.shape[0], dtype=dJ.dtype))
            return eqx.tree_at(lambda m: m.J, self._zero_update(), dJ)


class RecurrentDiscrete(AbstractRecurrent):
    """Binary recurrent layer: units in `{-1, +1}`.

    `activation(h)` is `+1` where `h >= 0`, else `-1`. See
    [`AbstractRecurrent`][] for the arguments.
    """

    def activation(self, h: Array) -> Array:
        """Return `+1` where `h >= 0`, `-1` elsewhere, in `h`'s dtype."""
        with jax.named_scope("RecurrentDiscrete.activation"):
            return jnp.where(h >= 0, 1, -1).astype(h.dtype)


class RecurrentTanh(AbstractRecurrent):
    """Continuous recurrent layer: units in `(-1, 1)`, `activation(h) = tanh(h)`.

    Same coupling matrix, initialisation and perceptron rule as
    [`RecurrentDiscrete`][]. See [`AbstractRecurrent`][] for the arguments.
    """

    def activation(self, h: Array) -> Array:
        """Return `tanh(h)`."""
        with jax.named_scope("RecurrentTanh.activation"):
            return jnp.tanh(h)
