"""Local learning rules.

A local rule maps what a module sees (its input, the target state of its receiver
and the receiver's field) to an update shaped like the module's weights. The update
is handed to Optax as if it were a gradient, so it points *against* the direction
the weights should move.
"""

import math

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike


def perceptron_rule(
    x: ArrayLike,
    y: ArrayLike,
    y_hat: ArrayLike,
    margin: ArrayLike,
    gate: ArrayLike | None = None,
) -> Array:
    """One-vs-all perceptron update with a margin.

    A unit makes a mistake where `y * y_hat <= margin`. The update is
    `-(x.T @ (gate * mistake * y)) / (sqrt(n) * sqrt(d))`; negative because Optax
    steps against gradients.

    **Arguments:**

    - `x`: inputs, shape `(n, d)` or `(d,)` (then `n = 1`).
    - `y`: targets in `{-1, +1}`, shape `(n, K)` (or `(K,)` when `n = 1`).
    - `y_hat`: fields (pre-activations), same shape as `y`.
    - `margin`: broadcastable to `(n, K)`: a scalar, a per-unit `(K,)` vector, ...
    - `gate`: optional multiplier broadcastable to `(n, K)`; `None` means 1.

    **Returns:**

    The update, shape `(d, K)`.

    **Raises:**

    `ValueError` if `y` and `y_hat` differ in shape or their rows differ from `x`'s.
    """
    with jax.named_scope("perceptron_rule"):
        x = jnp.atleast_2d(jnp.asarray(x))
        y = jnp.atleast_2d(jnp.asarray(y))
        y_hat = jnp.atleast_2d(jnp.asarray(y_hat))
        if x.ndim != 2 or y.ndim != 2:
            raise ValueError(
                f"perceptron_rule expects x of shape (n, d) and y of shape (n, K); "
                f"got x {x.shape} and y {y.shape}"
            )
        if y.shape != y_hat.shape:
            raise ValueError(
                f"y and y_hat must have the same shape; got y {y.shape} and y_hat {y_hat.shape}"
            )
        n, d = x.shape
        if y.shape[0] != n:
            raise ValueError(
                f"x and y must have the same number of rows; got x {x.shape} and y {y.shape}"
            )
        mistake = (y * y_hat <= margin).astype(x.dtype)
        signal = mistake * y
        if gate is not None:
            signal = gate * signal
        return -(x.T @ signal) / (math.sqrt(n) * math.sqrt(d))
