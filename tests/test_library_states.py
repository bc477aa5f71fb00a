"""States: pytrees of buffers, functional updates, shape errors, transformations."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from library import SequentialState, State
from library.states import SequentialState as SequentialStateDirect


def test_public_names():
    assert SequentialState is SequentialStateDirect
    assert issubclass(SequentialState, State)
    assert issubclass(SequentialState, eqx.Module)


def test_state_is_abstract():
    with pytest.raises(TypeError):
        State()


def test_construction_shapes_and_zeros():
    s = SequentialState([3, (2, 4), 5])
    assert len(s) == 3
    assert [b.shape for b in s.states] == [(1, 3), (1, 2, 4), (1, 5)]
    assert all(b.dtype == jnp.float32 for b in s.states)
    assert all(np.all(np.asarray(b) == 0) for b in s.states)
    assert s[0].shape == (1, 3)
    assert s[-1] is s.states[2]
    assert s[-2] is s.states[1]
    assert s.readout is s[-1]


def test_tuple_of_sizes_and_dtype():
    s = SequentialState((4, 2), dtype=jnp.float16)
    assert s.dtype == jnp.float16
    assert s[1].dtype == jnp.float16


@pytest.mark.parametrize(
    "sizes",
    [[], [0], [3, -1], [2.5], ["a"], [(3, 0)], [()], [True], 5, "abc", None, [(2, 1.5)]],
)
def test_bad_sizes_raise_value_error(sizes):
    with pytest.raises(ValueError):
        SequentialState(sizes)


def test_pytree_leaves_and_static_treedef():
    s = SequentialState([3, 4, 2])
    leaves, treedef = jax.tree.flatten(s)
    assert len(leaves) == 3
    assert all(a is b for a, b in zip(leaves, s.states, strict=True))
    # The dtype (static) is part of the treedef; the batch size is not.
    assert jax.tree.structure(SequentialState([3, 4, 2], dtype=jnp.float16)) != treedef
    assert jax.tree.structure(s.init(jnp.ones((7, 3)))) == treedef
    assert "float32" in str(treedef)


def test_init_fills_input_and_target():
    s = SequentialState([3, 4, 2])
    x = jnp.arange(15.0).reshape(5, 3)
    y = -jnp.ones((5, 2))
    t = s.init(x, y)
    assert [b.shape for b in t.states] == [(5, 3), (5, 4), (5, 2)]
    np.testing.assert_array_equal(t[0], np.arange(15.0).reshape(5, 3))
    np.testing.assert_array_equal(t[1], np.zeros((5, 4)))
    np.testing.assert_array_equal(t[-1], -np.ones((5, 2)))
    u = s.init(x)
    np.testing.assert_array_equal(u[-1], np.zeros((5, 2)))
    # The original is untouched.
    assert s[0].shape == (1, 3)


def test_init_casts_to_state_dtype():
    s = SequentialState([2, 2])
    t = s.init(np.ones((4, 2), dtype=np.int32))
    assert t[0].dtype == jnp.float32


def test_init_tuple_sizes():
    s = SequentialState([(2, 3), 4])
    t = s.init(jnp.ones((6, 2, 3)))
    assert t[1].shape == (6, 4)


@pytest.mark.parametrize("x_shape", [(5, 4), (5,), (5, 3, 1), ()])
def test_init_wrong_input_shape(x_shape):
    s = SequentialState([3, 4, 2])
    with pytest.raises(ValueError) as info:
        s.init(jnp.ones(x_shape))
    assert str(x_shape).replace(",)", ")") in str(info.value).replace(",)", ")")
    assert "3" in str(info.value)


@pytest.mark.parametrize("y_shape", [(5, 3), (4, 2), (5,)])
def test_init_wrong_target_shape(y_shape):
    s = SequentialState([3, 4, 2])
    with pytest.raises(ValueError) as info:
        s.init(jnp.ones((5, 3)), jnp.ones(y_shape))
    message = str(info.value)
    assert str(y_shape).replace(",)", ")") in message.replace(",)", ")")
    assert "(5, 2)" in message


def test_replace_and_replace_val_are_functional():
    s = SequentialState([2, 3]).init(jnp.ones((4, 2)))
    new = s.replace_val(1, jnp.full((4, 3), 7.0))
    np.testing.assert_array_equal(new[1], np.full((4, 3), 7.0))
    np.testing.assert_array_equal(s[1], np.zeros((4, 3)))
    neg = s.replace_val(-1, jnp.full((4, 3), 2.0))
    np.testing.assert_array_equal(neg[1], np.full((4, 3), 2.0))
    both = s.replace([jnp.zeros((4, 2)), jnp.ones((4, 3))])
    np.testing.assert_array_equal(both[0], np.zeros((4, 2)))
    np.testing.assert_array_equal(s[0], np.ones((4, 2)))
    assert jax.tree.structure(both) == jax.tree.structure(s)
    assert isinstance(both, SequentialState)


def test_replace_wrong_count():
    s = SequentialState([2, 3])
    with pytest.raises(ValueError, match="2"):
        s.replace([jnp.zeros((1, 2))])


def test_replace_val_out_of_range():
    s = SequentialState([2, 3])
    with pytest.raises(IndexError):
        s.replace_val(2, jnp.zeros((1, 3)))


def test_setattr_is_refused():
    s = SequentialState([2, 3])
    with pytest.raises(AttributeError):
        s.states = []


def test_jit_init_and_update():
    s = SequentialState([3, 4, 2])

    @jax.jit
    def f(state, x, y):
        t = state.init(x, y)
        return t.replace_val(1, jnp.tanh(t[0] @ jnp.ones((3, 4))))

    x = jnp.arange(6.0).reshape(2, 3) / 10
    out = f(s, x, jnp.ones((2, 2)))
    expected = np.tanh(np.asarray(x) @ np.ones((3, 4)))
    np.testing.assert_allclose(out[1], expected, rtol=1e-6)
    assert isinstance(out, SequentialState)
    with pytest.raises(ValueError):
        f(s, jnp.ones((2, 5)), jnp.ones((2, 2)))


def test_grad_through_state():
    s = SequentialState([3, 2]).init(jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[0.5, -1.0]]))
    grads = jax.grad(lambda st: jnp.sum(st[0] ** 2) + jnp.sum(st.readout * 3.0))(s)
    assert isinstance(grads, SequentialState)
    np.testing.assert_allclose(grads[0], [[2.0, 4.0, 6.0]])
    np.testing.assert_allclose(grads[1], [[3.0, 3.0]])


def test_vmap_over_batches_of_inputs():
    s = SequentialState([3, 2])
    xs = jnp.arange(24.0).reshape(4, 2, 3)
    out = jax.vmap(lambda x: s.init(x).replace_val(1, x[:, :2] * 2).readout)(xs)
    np.testing.assert_allclose(out, np.asarray(xs)[:, :, :2] * 2)


def test_vmap_over_stacked_states():
    s = SequentialState([3, 2])
    stacked = jax.vmap(lambda x: s.init(x))(jnp.ones((5, 4, 3)))
    assert stacked[0].shape == (5, 4, 3)
    sums = jax.vmap(lambda st: jnp.sum(st[0]))(stacked)
    np.testing.assert_allclose(sums, np.full(5, 12.0))
