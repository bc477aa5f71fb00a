"""Modules and the local rule: numbers against NumPy, pytree structure, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SeedLinear

import library
from library.modules import (
    AbstractModule,
    Adapter,
    Ferromagnetic,
    FrozenFullyConnected,
    FullyConnected,
    Layer,
    Linear,
    OutputLayer,
    RecurrentDiscrete,
    RecurrentTanh,
)
from library.rules import perceptron_rule

KEY = jax.random.key(3)


def np_perceptron(x, y, y_hat, margin, gate=1.0):
    """The rule of docs/library.md, written with NumPy in float64."""
    x, y, y_hat = (np.atleast_2d(np.asarray(a, np.float64)) for a in (x, y, y_hat))
    n, d = x.shape
    mistake = (y * y_hat <= np.asarray(margin, np.float64)).astype(np.float64)
    return -(x.T @ (np.asarray(gate) * mistake * y)) / (np.sqrt(n) * np.sqrt(d))


def pm1(key, shape):
    return np.asarray(jax.random.rademacher(key, shape, dtype=jnp.float32))


# The seed's example --------------------------------------------------------------


SEED_SNIPPET = """
import jax
import jax.numpy as jnp
import equinox as eqx

from library.modules import Linear

# Instantiate a model
model = Linear(2, 3, jax.random.PRNGKey(0))

# Forward evaluation
x = jnp.ones((5, 2))
y = model(x)

# Differentiation
loss_fn = lambda m, x: jnp.mean(m(x))
grads = jax.grad(loss_fn)(model, x)
"""


def test_seed_snippet_runs_verbatim_and_matches_seed_class_bitwise():
    ns: dict = {}
    exec(SEED_SNIPPET, ns)
    seed = SeedLinear(2, 3, jax.random.PRNGKey(0))
    x = jnp.ones((5, 2))
    model = ns["model"]
    assert model.weight.shape == (2, 3) and model.bias.shape == (3,)
    assert model.weight.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(model.weight), np.asarray(seed.weight))
    np.testing.assert_array_equal(np.asarray(model.bias), np.asarray(seed.bias))
    np.testing.assert_array_equal(np.asarray(ns["y"]), np.asarray(seed(x)))
    seed_grads = jax.grad(lambda m, x: jnp.mean(m(x)))(seed, x)
    np.testing.assert_array_equal(np.asarray(ns["grads"].weight), np.asarray(seed_grads.weight))
    np.testing.assert_array_equal(np.asarray(ns["grads"].bias), np.asarray(seed_grads.bias))
    # d mean(x @ W + b) / dW = 5 / 15 for x of ones (5, 2) and 3 outputs.
    np.testing.assert_allclose(ns["grads"].weight, np.full((2, 3), 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(ns["grads"].bias, np.full(3, 1 / 3), rtol=1e-6)
    # The same as NumPy.
    np.testing.assert_allclose(
        ns["y"], np.ones((5, 2)) @ np.asarray(seed.weight) + np.asarray(seed.bias), rtol=1e-6
    )


def test_linear_is_a_pytree_of_two_arrays():
    model = Linear(2, 3, jax.random.PRNGKey(0))
    leaves = jax.tree.leaves(model)
    assert [leaf.shape for leaf in leaves] == [(2, 3), (3,)]
    assert library.Linear is Linear


# perceptron_rule -----------------------------------------------------------------


def test_perceptron_rule_against_numpy():
    k1, k2, k3 = jax.random.split(KEY, 3)
    x = pm1(k1, (8, 6))
    y = pm1(k2, (8, 4))
    y_hat = np.asarray(jax.random.normal(k3, (8, 4))) * 2
    for margin in (0.0, 0.5, np.array([0.0, 1.0, -1.0, 3.0], np.float32)):
        out = perceptron_rule(x, y, y_hat, margin)
        assert out.shape == (6, 4)
        np.testing.assert_allclose(out, np_perceptron(x, y, y_hat, margin), rtol=1e-5, atol=1e-6)
    gate = np.linspace(0, 1, 4).astype(np.float32)
    np.testing.assert_allclose(
        perceptron_rule(x, y, y_hat, 0.5, gate),
        np_perceptron(x, y, y_hat, 0.5, gate),
        rtol=1e-5,
        atol=1e-6,
    )


def test_perceptron_rule_sign_ties_and_single_example():
    # One example, two inputs, two units: unit 0 right by a large margin, unit 1 on the tie.
    x = np.array([1.0, -1.0], np.float32)
    y = np.array([[1.0, -1.0]], np.float32)
    y_hat = np.array([[5.0, 0.0]], np.float32)
    out = np.asarray(perceptron_rule(x, y, y_hat, 0.0))
    # Only unit 1 (y * y_hat = 0 <= 0) is a mistake: -(x * y_1) / sqrt(1 * 2).
    np.testing.assert_allclose(out, [[0.0, 1 / np.sqrt(2)], [0.0, -1 / np.sqrt(2)]], rtol=1e-6)


def test_perceptron_rule_errors():
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3, 4\)"):
        perceptron_rule(np.ones((3, 5)), np.ones((3, 2)), np.ones((3, 4)), 0.0)
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(4, 2\)"):
        perceptron_rule(np.ones((3, 5)), np.ones((4, 2)), np.ones((4, 2)), 0.0)


def test_perceptron_rule_composes_with_jit_vmap_grad():
    x = pm1(KEY, (4, 3))
    y = pm1(jax.random.key(1), (4, 2))
    y_hat = np.zeros((4, 2), np.float32)
    jitted = jax.jit(perceptron_rule)(x, y, y_hat, 0.0)
    np.testing.assert_allclose(jitted, np_perceptron(x, y, y_hat, 0.0), rtol=1e-6)
    batched = jax.vmap(perceptron_rule, in_axes=(0, 0, 0, None))(
        np.stack([x, -x]), np.stack([y, y]), np.stack([y_hat, y_hat]), 0.0
    )
    np.testing.assert_allclose(batched[1], -np.asarray(batched[0]), rtol=1e-6)
    # Linear in x: the gradient of sum(update) w.r.t. x is -mistake*y summed / sqrt(n d).
    g = jax.grad(lambda x: jnp.sum(perceptron_rule(x, y, y_hat, 0.0)))(x)
    expected = -np.repeat(np.sum(y, axis=1, keepdims=True), 3, axis=1) / np.sqrt(4 * 3)
    np.testing.assert_allclose(g, expected, rtol=1e-6)


# RecurrentDiscrete / RecurrentTanh -----------------------------------------------


@pytest.mark.parametrize("cls", [RecurrentDiscrete, RecurrentTanh])
def test_recurrent_init_against_numpy(cls):
    layer = cls(5, j_d=0.5, threshold=0.25, key=KEY, strength=2.0)
    raw = np.asarray(jax.random.normal(KEY, (5, 5), jnp.float32))
    expected = raw / np.sqrt(5) * 2.0
    np.fill_diagonal(expected, 0.5)
    np.testing.assert_allclose(layer.J, expected, rtol=1e-6)
    assert layer.J.dtype == jnp.float32
    np.testing.assert_array_equal(layer.J_D, np.full(5, 0.5))
    np.testing.assert_array_equal(layer.threshold, np.full(5, 0.25))
    assert layer.strength.shape == () and float(layer.strength) == 2.0
    assert layer.has_state is True
    assert isinstance(layer, Layer) and isinstance(layer, AbstractModule)
    assert cls.buffer_fields == ("J_D", "threshold", "strength")


def test_recurrent_default_strength_and_vectors():
    j_d = np.array([0.1, 0.2, 0.3], np.float32)
    layer = RecurrentDiscrete(3, j_d, np.array([1.0, 2.0, 3.0]), KEY)
    np.testing.assert_allclose(np.diag(np.asarray(layer.J)), j_d)
    raw = np.asarray(jax.random.normal(KEY, (3, 3), jnp.float32)) / np.sqrt(3)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(np.asarray(layer.J)[off], raw[off], rtol=1e-6)
    assert float(layer.strength) == 1.0


def test_recurrent_discrete_call_activation_backward():
    layer = RecurrentDiscrete(6, 0.5, 0.75, KEY)
    s = pm1(jax.random.key(9), (4, 6))
    h = np.asarray(layer(s))
    np.testing.assert_allclose(h, s @ np.asarray(layer.J), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        layer.activation(jnp.array([-2.0, -0.0, 0.0, 1e-9, -1e-9])), [-1, 1, 1, 1, -1]
    )
    assert layer.activation(jnp.zeros(2)).dtype == jnp.float32
    update = layer.backward(s, s, h)
    assert type(update) is RecurrentDiscrete
    assert jax.tree.structure(update) == jax.tree.structure(layer)
    expected = np_perceptron(s, s, h, 0.75)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(update.J, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.diag(np.asarray(update.J)) == 0)
    for name in ("J_D", "threshold", "strength"):
        np.testing.assert_array_equal(getattr(update, name), 0)
    # Functional: the layer is untouched.
    np.testing.assert_allclose(np.diag(np.asarray(layer.J)), 0.5)


def test_recurrent_tanh_activation_and_same_rule():
    tanh = RecurrentTanh(6, 0.5, 0.75, KEY)
    disc = RecurrentDiscrete(6, 0.5, 0.75, KEY)
    np.testing.assert_array_equal(tanh.J, disc.J)
    h = np.linspace(-3, 3, 7).astype(np.float32)
    np.testing.assert_allclose(tanh.activation(jnp.asarray(h)), np.tanh(h), rtol=1e-6)
    s = np.tanh(np.asarray(jax.random.normal(jax.random.key(2), (3, 6))))
    y_hat = s @ np.asarray(tanh.J)
    expected = np_perceptron(s, s, y_hat, 0.75)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(tanh.backward(s, s, y_hat).J, expected, rtol=1e-5, atol=1e-6)
    gate = np.float32(0.5)
    np.testing.assert_allclose(
        tanh.backward(s, s, y_hat, gate).J, expected * 0.5, rtol=1e-5, atol=1e-6
    )
    assert library.RecurrentTanh is RecurrentTanh


@pytest.mark.parametrize("cls", [RecurrentDiscrete, RecurrentTanh])
def test_recurrent_errors(cls):
    with pytest.raises(ValueError, match=r"j_d.*\(4,\).*\(3,\)"):
        cls(4, np.ones(3), 0.0, KEY)
    with pytest.raises(ValueError, match=r"threshold.*\(4,\).*\(5,\)"):
        cls(4, 0.0, np.ones(5), KEY)
    with pytest.raises(ValueError, match="threshold"):
        cls(4, 0.0, np.ones((4, 4)), KEY)
    with pytest.raises(ValueError, match="strength"):
        cls(4, 0.0, 0.0, KEY, strength=np.ones(4))
    for bad in (0, -2, 2.5, "4"):
        with pytest.raises(ValueError, match="features"):
            cls(bad, 0.0, 0.0, KEY)


# Adapters --------------------------------------------------------------------------


def test_ferromagnetic():
    adapter = Ferromagnetic(4, 0.5)
    np.testing.assert_array_equal(adapter.strength, np.full(4, 0.5))
    x = np.arange(8.0, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(adapter(x), x * 0.5)
    vec = Ferromagnetic(4, np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(vec(x), x * np.array([1.0, 2.0, 3.0, 4.0]))
    update = vec.backward(x, x, x)
    assert jax.tree.structure(update) == jax.tree.structure(vec)
    np.testing.assert_array_equal(update.strength, 0)
    assert adapter.has_state is False and isinstance(adapter, Adapter)
    assert Ferromagnetic.buffer_fields == ("strength",)
    with pytest.raises(ValueError, match=r"strength.*\(4,\).*\(2,\)"):
        Ferromagnetic(4, np.ones(2))


@pytest.mark.parametrize("cls", [FullyConnected, FrozenFullyConnected])
def test_fully_connected_init_and_call(cls):
    adapter = cls(6, 3, strength=np.array([1.0, 2.0, 0.5]), threshold=1.5, key=KEY)
    raw = np.asarray(jax.random.normal(KEY, (6, 3), jnp.float32))
    np.testing.assert_allclose(adapter.W, raw * np.array([1.0, 2.0, 0.5]) / np.sqrt(6), rtol=1e-6)
    np.testing.assert_array_equal(adapter.threshold, np.full(3, 1.5))
    x = pm1(jax.random.key(4), (5, 6))
    np.testing.assert_allclose(adapter(x), x @ np.asarray(adapter.W), rtol=1e-5, atol=1e-6)
    assert adapter.has_state is False and isinstance(adapter, Adapter)
    with pytest.raises(ValueError, match=r"threshold.*\(3,\).*\(6,\)"):
        cls(6, 3, 1.0, np.ones(6), KEY)
    with pytest.raises(ValueError, match=r"strength.*\(3,\).*\(2,\)"):
        cls(6, 3, np.ones(2), 0.0, KEY)
    with pytest.raises(ValueError, match="in_features"):
        cls(0, 3, 1.0, 0.0, KEY)
    with pytest.raises(ValueError, match="out_features"):
        cls(3, -1, 1.0, 0.0, KEY)


def test_fully_connected_backward_against_numpy():
    adapter = FullyConnected(6, 3, 1.0, np.array([0.0, 1.0, 2.0]), KEY)
    x = pm1(jax.random.key(5), (5, 6))
    y = pm1(jax.random.key(6), (5, 3))
    y_hat = np.asarray(adapter(x))
    update = adapter.backward(x, y, y_hat)
    assert type(update) is FullyConnected
    assert jax.tree.structure(update) == jax.tree.structure(adapter)
    np.testing.assert_allclose(
        update.W, np_perceptron(x, y, y_hat, [0.0, 1.0, 2.0]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(update.strength, 0)
    np.testing.assert_array_equal(update.threshold, 0)
    assert FullyConnected.buffer_fields == ("strength", "threshold")


def test_frozen_fully_connected_learns_nothing():
    adapter = FrozenFullyConnected(6, 3, 0.3, 0.0, KEY)
    x = pm1(jax.random.key(5), (5, 6))
    y = pm1(jax.random.key(6), (5, 3))
    update = adapter.backward(x, y, -y)
    assert jax.tree.structure(update) == jax.tree.structure(adapter)
    assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree.leaves(update))
    assert FrozenFullyConnected.buffer_fields == ("W", "strength", "threshold")


def test_output_layer():
    out = OutputLayer()
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(out(x), np.zeros((3, 4)))
    np.testing.assert_array_equal(out.activation(jnp.asarray(x) * 2), x * 2)
    assert jax.tree.leaves(out) == []
    assert jax.tree.structure(out.backward(x, x, x)) == jax.tree.structure(out)
    assert out.has_state is True and isinstance(out, Layer)
    assert OutputLayer.buffer_fields == ()


def test_reduce_sums_lists_tuples_dicts():
    layer = RecurrentDiscrete(3, 0.0, 0.0, KEY)
    a, b, c = (np.full((2, 3), v, np.float32) for v in (1.0, 2.0, 4.0))
    np.testing.assert_array_equal(layer.reduce([a, b, c]), np.full((2, 3), 7.0))
    np.testing.assert_array_equal(layer.reduce((a, b)), np.full((2, 3), 3.0))
    np.testing.assert_array_equal(OutputLayer().reduce({0: a, 5: c}), np.full((2, 3), 5.0))
    with pytest.raises(ValueError, match="no messages"):
        layer.reduce({})


def test_abstract_classes_cannot_be_instantiated():
    for cls in (AbstractModule, Layer, Adapter):
        with pytest.raises(TypeError):
            cls()
    assert AbstractModule.buffer_fields == ()


def test_modules_are_pytrees_with_equal_treedefs_across_keys():
    a = FullyConnected(4, 3, 1.0, 0.0, jax.random.key(0))
    b = FullyConnected(4, 3, 1.0, 0.0, jax.random.key(1))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert len(jax.tree.leaves(a)) == 3
    assert jax.tree.structure(a) != jax.tree.structure(FrozenFullyConnected(4, 3, 1.0, 0.0, KEY))
    with pytest.raises(AttributeError):
        a.W = b.W


def test_modules_compose_with_jit_grad_vmap():
    adapter = FullyConnected(4, 3, 1.0, 0.0, KEY)
    x = pm1(jax.random.key(7), (5, 4))
    np.testing.assert_allclose(eqx.filter_jit(adapter)(x), adapter(x), rtol=1e-6)
    grads = eqx.filter_grad(lambda m: jnp.sum(m(x)))(adapter)
    assert isinstance(grads, FullyConnected)
    np.testing.assert_allclose(grads.W, x.T @ np.ones((5, 3)), rtol=1e-6)
    # vmap over examples, and over a stack of modules built with different keys.
    np.testing.assert_allclose(jax.vmap(adapter)(x), adapter(x), rtol=1e-6)
    keys = jax.random.split(KEY, 3)
    stack = eqx.filter_vmap(lambda k: RecurrentDiscrete(4, 0.5, 0.0, k))(keys)
    assert stack.J.shape == (3, 4, 4)
    out = eqx.filter_vmap(lambda m: m.activation(m(x)))(stack)
    for i in range(3):
        single = RecurrentDiscrete(4, 0.5, 0.0, keys[i])
        np.testing.assert_array_equal(out[i], single.activation(single(x)))
    # backward under jit equals eager.
    y_hat = adapter(x)
    jitted = eqx.filter_jit(lambda m: m.backward(x, -x[:, :3], y_hat))(adapter)
    np.testing.assert_allclose(jitted.W, adapter.backward(x, -x[:, :3], y_hat).W, rtol=1e-6)


@pytest.mark.parametrize(
    "module, name",
    [
        (RecurrentDiscrete(4, 0.5, 0.0, KEY), "RecurrentDiscrete"),
        (RecurrentTanh(4, 0.5, 0.0, KEY), "RecurrentTanh"),
        (FullyConnected(4, 4, 1.0, 0.0, KEY), "FullyConnected"),
        (FrozenFullyConnected(4, 4, 1.0, 0.0, KEY), "FrozenFullyConnected"),
        (Ferromagnetic(4, 1.0), "Ferromagnetic"),
        (Linear(4, 4, KEY), "Linear"),
    ],
)
def test_named_scope_in_hlo(module, name):
    text = jax.jit(lambda x: module(x)).lower(jnp.ones((2, 4))).as_text(debug_info=True)
    assert f"/{name}/" in text
