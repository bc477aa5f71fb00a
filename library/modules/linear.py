"""The seed's own example: an affine map as an Equinox module."""

import equinox as eqx
import jax


class Linear(eqx.Module):
    """`x @ weight + bias`, exactly the class of the seed's first chapter.

    **Arguments:**

    - `in_dim`: input features.
    - `out_dim`: output features.
    - `key`: PRNG key; `wkey, bkey = jax.random.split(key)` draw `weight` and `bias`
      from a standard normal.
    """

    weight: jax.Array
    bias: jax.Array

    def __init__(self, in_dim, out_dim, key):
        wkey, bkey = jax.random.split(key)
        self.weight = jax.random.normal(wkey, (in_dim, out_dim))
        self.bias = jax.random.normal(bkey, (out_dim,))

    def __call__(self, x):
        """Return `x @ weight + bias`; `x` is `(..., in_dim)`."""
        with jax.named_scope("Linear"):
            return x @ self.weight + self.bias
