"""The output layer: a sink that sums the messages sent to the last slot."""

from typing import Self

import jax
import jax.numpy as jnp
from jax import Array

from .base import Layer


class OutputLayer(Layer):
    """Output slot: no parameters, identity activation, silent towards itself.

    Its own message is zeros, so the output is the sum of what the other slots send.
    """

    def __call__(self, x: Array, rng: Array | None = None) -> Array:
        """Return zeros like `x`."""
        with jax.named_scope("OutputLayer"):
            return jnp.zeros_like(x)

    def activation(self, h: Array) -> Array:
        """Identity: the output is the field itself."""
        return h

    def backward(self, x: Array, y: Array, y_hat: Array, gate: Array | None = None) -> Self:
        """Nothing learns; returns `self` (it holds no arrays)."""
        return self
