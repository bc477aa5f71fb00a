"""The module interface: what the orchestrator may ask of a layer or an adapter.

Every module turns a state buffer into a *message* (`__call__`) and knows its own
local learning rule (`backward`). A [`Layer`][] additionally owns a slot of the
state: it sums the messages it receives (`reduce`) and maps the sum to the slot's
new value (`activation`). An [`Adapter`][] sits on an edge and holds no state.
"""

import abc
import functools
import operator
from typing import ClassVar, Self

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike, DTypeLike


class AbstractModule(eqx.Module):
    """Base class of every module of the library.

    Class attributes:

    - `has_state`: `True` for a [`Layer`][] (owns a state slot), `False` for an
      [`Adapter`][].
    - `buffer_fields`: names of the array fields that are *not* trained (fixed
      hyperparameters such as thresholds). [`library.trainable_filter`][] reads it.
    """

    has_state: ClassVar[bool] = False
    buffer_fields: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def __call__(self, x: Array, rng: Array | None = None) -> Array:
        """Turn the sender's state `x` into a message for the receiver.

        **Arguments:**

        - `x`: the sender's buffer, `(batch, *features)`.
        - `rng`: a PRNG key for stochastic modules; deterministic modules ignore it.

        **Returns:**

        The message, shaped like the receiver's buffer.
        """

    @abc.abstractmethod
    def backward(self, x: Array, y: Array, y_hat: Array, gate: Array | None = None) -> Self:
        """Local update of this module.

        **Arguments:**

        - `x`: the sender's state.
        - `y`: the receiver's state (the target).
        - `y_hat`: the receiver's field (the reduced messages).
        - `gate`: optional multiplier of the update.

        **Returns:**

        A pytree shaped like `self` holding the update (not a gradient; zeros where
        nothing learns), to be handed to an Optax optimiser.
        """

    def _zero_update(self) -> Self:
        """Return a copy of this module with every array replaced by zeros."""
        return jax.tree.map(lambda a: jnp.zeros_like(a) if eqx.is_array(a) else a, self)


class Layer(AbstractModule):
    """A module that owns a state slot: the diagonal entry `(i, i)` of a layermap."""

    has_state: ClassVar[bool] = True

    @abc.abstractmethod
    def activation(self, h: Array) -> Array:
        """Map the field `h` (the reduced messages) to the slot's new state."""

    def reduce(self, messages: list[Array] | tuple[Array, ...] | dict[int, Array]) -> Array:
        """Sum all incoming messages.

        **Arguments:**

        - `messages`: a list, tuple or dict of arrays of the same shape.

        **Returns:**

        Their elementwise sum.

        **Raises:**

        `ValueError` if there are no messages.
        """
        leaves = jax.tree.leaves(messages)
        if not leaves:
            raise ValueError(f"{type(self).__name__}.reduce received no messages")
        return functools.reduce(operator.add, leaves)


class Adapter(AbstractModule):
    """A module on an off-diagonal edge `(i, j)`: it carries messages, holds no state."""

    has_state: ClassVar[bool] = False


def as_vector(value: ArrayLike, size: int, name: str, dtype: DTypeLike) -> Array:
    """Broadcast a scalar to `(size,)`, or check that a vector has length `size`.

    **Raises:**

    `ValueError` naming `name` and the shapes if `value` is neither a scalar nor a
    vector of length `size`.
    """
    value = jnp.asarray(value, dtype=dtype)
    if value.ndim == 0:
        return jnp.broadcast_to(value, (size,))
    if value.shape != (size,):
        raise ValueError(
            f"{name} must be a scalar or a vector of shape ({size},); got shape {value.shape}"
        )
    return value


def as_scalar(value: ArrayLike, name: str, dtype: DTypeLike) -> Array:
    """Convert `value` to a scalar array; `ValueError` naming the shape otherwise."""
    value = jnp.asarray(value, dtype=dtype)
    if value.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {value.shape}")
    return value


def check_features(value: int, name: str) -> int:
    """Check that `value` is a positive int; `ValueError` naming it otherwise."""
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:
            pass
        else:
            if number > 0:
                return number
    raise ValueError(f"{name} must be a positive int; got {value!r}")
