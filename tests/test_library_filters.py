"""trainable_filter and buffer_fields."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import library
from library import (
    AbstractModule,
    Ferromagnetic,
    FrozenFullyConnected,
    FullyConnected,
    LayerMap,
    Linear,
    OutputLayer,
    RecurrentDiscrete,
    RecurrentTanh,
    SequentialOrchestrator,
    trainable_filter,
)
from library.filters import trainable_filter as direct

KEY = jax.random.key(0)


def reference_orchestrator():
    k = jax.random.split(KEY, 4)
    return SequentialOrchestrator(
        LayerMap.from_dict(
            {
                1: {
                    0: FullyConnected(4, 6, 1.0, 3.5, k[0]),
                    1: RecurrentDiscrete(6, 0.5, 0.5, k[1]),
                    2: FrozenFullyConnected(2, 6, 0.3, 0.0, k[2]),
                },
                2: {1: FullyConnected(6, 2, 1.0, 3.5, k[3]), 2: OutputLayer()},
            }
        )
    )


def test_exported():
    assert library.trainable_filter is direct


@pytest.mark.parametrize(
    "cls, fields",
    [
        (AbstractModule, ()),
        (RecurrentDiscrete, ("J_D", "threshold", "strength")),
        (RecurrentTanh, ("J_D", "threshold", "strength")),
        (Ferromagnetic, ("strength",)),
        (FullyConnected, ("strength", "threshold")),
        (FrozenFullyConnected, ("W", "strength", "threshold")),
        (OutputLayer, ()),
    ],
)
def test_buffer_fields(cls, fields):
    assert cls.buffer_fields == fields


def test_orchestrator_filter():
    orch = reference_orchestrator()
    spec = trainable_filter(orch)
    assert jax.tree.structure(spec) == jax.tree.structure(orch)
    lm = spec.lmap
    assert lm[1, 0].W is True and lm[1, 0].strength is False and lm[1, 0].threshold is False
    assert lm[1, 1].J is True
    assert (lm[1, 1].J_D, lm[1, 1].threshold, lm[1, 1].strength) == (False, False, False)
    assert (lm[1, 2].W, lm[1, 2].strength, lm[1, 2].threshold) == (False, False, False)
    assert lm[2, 1].W is True
    trained = jax.tree.leaves(eqx.filter(orch, spec))
    assert [a.shape for a in trained] == [(4, 6), (6, 6), (6, 2)]


def test_plain_pytrees_and_eqx_layers():
    mlp = eqx.nn.MLP(2, 1, 4, 1, key=KEY)
    spec = trainable_filter(mlp)
    assert jax.tree.structure(spec) == jax.tree.structure(mlp)
    # Four arrays are trained; the two activation functions are non-array leaves.
    assert jax.tree.leaves(spec) == [True, True, True, True, False, False]
    mixed = {
        "floats": jnp.ones(3),
        "ints": jnp.arange(3),
        "python": 1.5,
        "modules": [Ferromagnetic(3, 1.0), Linear(2, 2, KEY)],
        "none": None,
    }
    spec = trainable_filter(mixed)
    assert jax.tree.structure(spec) == jax.tree.structure(mixed)
    assert spec["floats"] is True and spec["ints"] is False and spec["python"] is False
    assert spec["modules"][0].strength is False
    assert spec["modules"][1].weight is True and spec["modules"][1].bias is True


class Scaled(eqx.Module):
    """A module outside the library declaring a buffer, holding a library module."""

    inner: FullyConnected
    scale: jax.Array
    weight: jax.Array
    buffer_fields: ClassVar[tuple[str, ...]] = ("scale",)


def test_nested_modules_and_jit():
    model = Scaled(FullyConnected(3, 2, 1.0, 0.0, KEY), jnp.ones(2), jnp.ones(2))
    spec = trainable_filter(model)
    assert spec.scale is False and spec.weight is True
    assert spec.inner.W is True and spec.inner.threshold is False
    nested = [model, (jnp.zeros(1), {"a": model})]
    spec = trainable_filter(nested)
    assert spec[1][1]["a"].scale is False and spec[1][1]["a"].inner.W is True

    @eqx.filter_jit
    def count(m):
        return sum(x.size for x in jax.tree.leaves(eqx.filter(m, trainable_filter(m))))

    assert int(count(model)) == 3 * 2 + 2
