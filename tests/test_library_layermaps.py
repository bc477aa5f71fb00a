"""LayerMaps: static keys, modules as children, read-only access, transformations."""

from types import MappingProxyType

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from library import (
    Ferromagnetic,
    FrozenFullyConnected,
    FullyConnected,
    LayerMap,
    OutputLayer,
    RecurrentDiscrete,
)


def make_dict(seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    # Deliberately unsorted rows and columns.
    return {
        2: {2: OutputLayer(), 1: FullyConnected(5, 3, 1.0, 0.5, k[3])},
        1: {
            2: FrozenFullyConnected(3, 5, 0.3, 0.0, k[2]),
            1: RecurrentDiscrete(5, 0.5, 0.5, k[1]),
            0: FullyConnected(4, 5, 1.0, 1.0, k[0]),
        },
    }


def test_from_dict_sorts_and_exposes_rows_and_columns():
    d = make_dict()
    lm = LayerMap.from_dict(d)
    assert lm.rows() == (1, 2)
    assert lm.cols_of(1) == (0, 1, 2)
    assert lm.cols_of(2) == (1, 2)
    assert [key for key, _ in lm.edge_items()] == [(1, 0), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert lm[1, 0] is d[1][0]
    assert lm[2, 2] is d[2][2]
    row = lm[1]
    assert isinstance(row, MappingProxyType)
    assert list(row) == [0, 1, 2] and row[1] is d[1][1]
    assert dict(lm.neighbors(2)) == {1: d[2][1], 2: d[2][2]}
    assert (1, 2) in lm and (2, 0) not in lm and (3, 3) not in lm
    assert 1 in lm and 0 not in lm


def test_row_items_subsets():
    lm = LayerMap.from_dict(make_dict())
    as_lists = lambda items: [(i, list(row)) for i, row in items]  # noqa: E731
    assert as_lists(lm.row_items()) == [(1, [0, 1, 2]), (2, [1, 2])]
    assert as_lists(lm.row_items(skip_last=True)) == [(1, [0, 1, 2])]
    assert as_lists(lm.row_items(subset="forward")) == [(1, [0, 1]), (2, [1, 2])]
    assert as_lists(lm.row_items(subset="backward")) == [(1, [1, 2]), (2, [2])]
    assert as_lists(lm.row_items(skip_last=True, subset="forward")) == [(1, [0, 1])]
    for _, row in lm.row_items(subset="forward"):
        assert isinstance(row, MappingProxyType)
    with pytest.raises(ValueError, match="sideways"):
        list(lm.row_items(subset="sideways"))


def test_to_dict_is_a_mutable_copy():
    lm = LayerMap.from_dict(make_dict())
    copy = lm.to_dict()
    assert list(copy) == [1, 2] and list(copy[1]) == [0, 1, 2]
    copy[1][0] = Ferromagnetic(5, 1.0)
    del copy[2]
    assert isinstance(lm[1, 0], FullyConnected) and lm.rows() == (1, 2)


def test_read_only():
    lm = LayerMap.from_dict(make_dict())
    module = Ferromagnetic(5, 1.0)
    with pytest.raises(TypeError):
        lm[1, 0] = module
    with pytest.raises(TypeError):
        lm[3] = {3: OutputLayer()}
    with pytest.raises(TypeError):
        del lm[1]
    with pytest.raises(TypeError):
        del lm[1, 0]
    with pytest.raises(TypeError):
        lm[1][0] = module
    with pytest.raises(TypeError):
        del lm[1][0]
    with pytest.raises(TypeError):
        lm.neighbors(1)[0] = module
    with pytest.raises(TypeError):
        lm._layers = {}
    with pytest.raises(AttributeError):  # as for any frozen Equinox module
        lm.anything = 1
    with pytest.raises(TypeError):
        del lm._layers
    assert isinstance(lm[1, 0], FullyConnected)


def test_missing_diagonal():
    d = make_dict()
    del d[1][1]
    with pytest.raises(ValueError, match=r"\[1\]"):
        LayerMap.from_dict(d)
    lm = LayerMap.from_dict(d, require_diagonal=False)
    assert lm.cols_of(1) == (0, 2)


def test_construction_errors():
    with pytest.raises(ValueError):
        LayerMap.from_dict({})
    with pytest.raises(ValueError, match="row 1"):
        LayerMap.from_dict({1: {}})
    with pytest.raises(TypeError, match="'a'"):
        LayerMap.from_dict({"a": {0: OutputLayer()}})
    with pytest.raises(TypeError, match="-1"):
        LayerMap.from_dict({1: {-1: OutputLayer(), 1: OutputLayer()}})
    with pytest.raises(TypeError, match=r"\(1, 1\).*Linear"):
        LayerMap.from_dict({1: {1: eqx.nn.Linear(2, 2, key=jax.random.key(0))}})
    with pytest.raises(TypeError, match="row 1"):
        LayerMap.from_dict({1: [OutputLayer()]})
    with pytest.raises(TypeError):
        LayerMap.from_dict([1, 2])


def test_lookup_errors():
    lm = LayerMap.from_dict(make_dict())
    with pytest.raises(KeyError, match=r"\(2, 0\)"):
        lm[2, 0]
    with pytest.raises(KeyError, match="5"):
        lm[5]
    with pytest.raises(KeyError, match="7"):
        lm.cols_of(7)
    with pytest.raises(TypeError):
        lm[1, 2, 3]
    with pytest.raises(TypeError):
        lm["1"]


def test_keys_are_static_and_modules_are_children():
    a = LayerMap.from_dict(make_dict(0))
    b = LayerMap.from_dict(make_dict(1))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    leaves = jax.tree.leaves(a)
    # FC(W, strength, threshold) + Recurrent(J, J_D, threshold, strength) + Frozen(3) + FC(3)
    assert len(leaves) == 13
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    d = make_dict()
    d[1][3] = Ferromagnetic(5, 1.0)
    assert jax.tree.structure(LayerMap.from_dict(d, require_diagonal=True)) != jax.tree.structure(a)
    d = make_dict()
    d[1][2] = FullyConnected(3, 5, 0.3, 0.0, jax.random.key(0))  # same keys, another type
    assert jax.tree.structure(LayerMap.from_dict(d)) != jax.tree.structure(a)
    # Round trip through flatten/unflatten keeps the keys and the read-only API.
    rebuilt = jax.tree.unflatten(jax.tree.structure(a), jax.tree.leaves(b))
    assert rebuilt.rows() == (1, 2) and rebuilt[2, 1].W is b[2, 1].W


def test_one_compiled_function_serves_equal_structures():
    traces = []

    @eqx.filter_jit
    def messages(lm, x):
        traces.append(1)
        return lm[1, 0](x) + lm[1, 1](jnp.ones((x.shape[0], 5)))

    x = jnp.ones((2, 4))
    a, b = LayerMap.from_dict(make_dict(0)), LayerMap.from_dict(make_dict(1))
    out_a, out_b = messages(a, x), messages(b, x)
    assert len(traces) == 1
    expected_a = np.ones((2, 4)) @ np.asarray(a[1, 0].W) + np.asarray(a[1, 1].J).sum(0)
    np.testing.assert_allclose(out_a, expected_a, rtol=1e-5, atol=1e-6)
    expected_b = np.ones((2, 4)) @ np.asarray(b[1, 0].W) + np.asarray(b[1, 1].J).sum(0)
    np.testing.assert_allclose(out_b, expected_b, rtol=1e-5, atol=1e-6)


def test_grad_and_tree_map_return_layermaps():
    lm = LayerMap.from_dict(make_dict())
    x = np.ones((3, 4), np.float32)
    grads = eqx.filter_grad(lambda m: jnp.sum(m[1, 0](x)))(lm)
    assert isinstance(grads, LayerMap)
    assert jax.tree.structure(grads) == jax.tree.structure(lm)
    np.testing.assert_allclose(grads[1, 0].W, np.full((4, 5), 3.0))
    np.testing.assert_array_equal(grads[2, 1].W, 0)
    doubled = jax.tree.map(lambda a: a * 2, lm)
    np.testing.assert_allclose(doubled[1, 1].J, np.asarray(lm[1, 1].J) * 2)
    # Functional: the original is unchanged.
    np.testing.assert_allclose(lm[1, 1].J, make_dict()[1][1].J)


def test_tree_at_edits_one_entry():
    lm = LayerMap.from_dict(make_dict())
    new = eqx.tree_at(lambda m: m[2, 1].W, lm, jnp.zeros((5, 3)))
    np.testing.assert_array_equal(new[2, 1].W, 0)
    assert not np.all(np.asarray(lm[2, 1].W) == 0)


def test_vmap_over_a_stack_of_layermaps():
    keys = jax.random.split(jax.random.key(0), 3)
    stack = eqx.filter_vmap(lambda k: LayerMap.from_dict(make_dict_from_key(k)))(keys)
    assert stack[1, 0].W.shape == (3, 4, 5)
    x = np.ones((2, 4), np.float32)
    out = eqx.filter_vmap(lambda m: m[1, 0](x))(stack)
    for i in range(3):
        single = LayerMap.from_dict(make_dict_from_key(keys[i]))
        np.testing.assert_allclose(out[i], single[1, 0](x), rtol=1e-5, atol=1e-6)


def make_dict_from_key(key):
    k = jax.random.split(key, 2)
    return {1: {0: FullyConnected(4, 5, 1.0, 1.0, k[0]), 1: RecurrentDiscrete(5, 0.5, 0.5, k[1])}}
