"""app.trees: nodes, roles, paths, lazy loading, find_node, accessors and array payloads."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import DictKey, GetAttrKey, SequenceKey, keystr, tree_flatten_with_path

import library
from app.trees import (
    CHILDREN_PAGE,
    TreePathError,
    array_payload,
    describe_tree,
    find_node,
    kept_shape,
    key_segment,
    params_count,
    trained_flags,
    tree_at_accessor,
)

NODE_KEYS = {
    "path",
    "name",
    "type",
    "role",
    "summary",
    "shape",
    "dtype",
    "size",
    "nbytes",
    "params",
    "children",
}


def by_path(node: dict) -> dict[str, dict]:
    found = {node["path"]: node}
    for child in node["children"] or []:
        found.update(by_path(child))
    return found


def seed_linear() -> library.Linear:
    return library.Linear(2, 3, jax.random.PRNGKey(0))


class Scaled(eqx.Module):
    """A custom module with a param, a buffer, a static field and a non-array leaf."""

    buffer_fields: ClassVar[tuple[str, ...]] = ("offset",)
    weight: jax.Array
    offset: jax.Array
    nothing: None
    activation: object
    factor: float = eqx.field(static=True)

    def __call__(self, x):
        return self.activation(x @ self.weight + self.offset) * self.factor


def scaled() -> Scaled:
    return Scaled(jnp.ones((2, 3)), jnp.zeros((3,)), None, jax.nn.relu, 2.5)


def test_seed_linear_nodes():
    tree = describe_tree(seed_linear())
    assert NODE_KEYS <= set(tree)
    assert tree["path"] == "" and tree["name"] == "" and tree["type"] == "Linear"
    assert tree["role"] is None
    assert (tree["size"], tree["nbytes"], tree["params"]) == (9, 36, 9)
    weight, bias = tree["children"]
    assert weight == {
        **weight,
        "path": ".weight",
        "name": "weight",
        "type": "Array",
        "role": "param",
        "summary": "f32[2,3]",
        "shape": [2, 3],
        "dtype": "float32",
        "size": 6,
        "nbytes": 24,
        "params": 6,
        "children": [],
    }
    assert (bias["path"], bias["summary"], bias["size"], bias["params"]) == (
        ".bias",
        "f32[3]",
        3,
        3,
    )


def test_mlp_paths_static_fields_and_functions():
    mlp = eqx.nn.MLP(2, 3, 4, depth=2, key=jax.random.PRNGKey(0))
    nodes = by_path(describe_tree(mlp))
    assert nodes[".layers"]["type"] == "tuple"
    assert nodes[".layers"]["summary"] == "3 items"
    assert nodes[".layers[0]"]["type"] == "Linear"
    assert nodes[".layers[0]"]["name"] == "[0]"
    assert nodes[".layers[1].weight"]["summary"] == "f32[4,4]"
    assert nodes[".layers[2].bias"]["role"] == "param"
    # static dataclass fields appear with their values
    assert nodes[".in_size"]["role"] == "static"
    assert nodes[".in_size"]["summary"] == "2"
    assert nodes[".in_size"]["static_field"] is True
    assert nodes[".layers[0].use_bias"]["summary"] == "True"
    # a function is a non-array leaf: static
    activation = nodes[".activation"]
    assert (activation["type"], activation["role"], activation["summary"]) == (
        "function",
        "static",
        "<function relu>",
    )
    total = sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(eqx.filter(mlp, eqx.is_array)))
    assert nodes[""]["params"] == nodes[""]["size"] == total
    assert nodes[".layers[1]"]["params"] == 4 * 4 + 4


def test_paths_are_jax_keystr():
    mlp = eqx.nn.MLP(2, 3, 4, depth=2, key=jax.random.PRNGKey(0))
    nodes = by_path(describe_tree(mlp))
    for keys, _ in tree_flatten_with_path(mlp)[0]:
        assert keystr(keys) in nodes
    plain = {"a": (jnp.zeros(2), None), "b": [jnp.ones(1)]}
    nodes = by_path(describe_tree(plain))
    assert {"['a']", "['a'][0]", "['a'][1]", "['b'][0]"} <= set(nodes)
    assert nodes["['a'][1]"]["role"] is None and nodes["['a'][1]"]["summary"] == "None"
    for key in (GetAttrKey("w"), SequenceKey(3), DictKey("k"), DictKey(7)):
        assert key_segment(key) == keystr((key,))


def test_custom_module_roles():
    nodes = by_path(describe_tree(scaled()))
    assert nodes[".weight"]["role"] == "param"
    assert nodes[".offset"]["role"] == "buffer"
    assert nodes[".offset"]["params"] == 0
    assert nodes[".nothing"]["role"] is None
    assert nodes[".activation"]["role"] == "static"
    assert nodes[".factor"]["role"] == "static"
    assert nodes[".factor"]["summary"] == "2.5"
    assert nodes[""]["params"] == 6 and nodes[""]["size"] == 9
    # static = what eqx.partition(model, eqx.is_array) puts in the static part, plus static fields
    _, static = eqx.partition(scaled(), eqx.is_array)
    assert static.activation is jax.nn.relu and static.factor == 2.5


def test_library_modules_and_layermap_roles_match_trainable_filter():
    key = jax.random.PRNGKey(1)
    network = library.SequentialOrchestrator(
        {
            1: {
                0: library.FullyConnected(4, 6, strength=1.0, threshold=3.5, key=key),
                1: library.RecurrentDiscrete(6, j_d=0.5, threshold=0.5, key=key),
                2: library.FrozenFullyConnected(3, 6, strength=0.3, threshold=0.0, key=key),
            },
            2: {
                1: library.FullyConnected(6, 3, strength=1.0, threshold=3.5, key=key),
                2: library.OutputLayer(),
            },
        }
    )
    nodes = by_path(describe_tree(network))
    assert nodes[".lmap"]["type"] == "LayerMap"
    assert nodes[".lmap._layers[1][0]"]["type"] == "FullyConnected"
    assert nodes[".lmap._layers[1][0].W"]["role"] == "param"
    assert nodes[".lmap._layers[1][0].threshold"]["role"] == "buffer"
    assert nodes[".lmap._layers[1][2].W"]["role"] == "buffer"  # frozen
    assert nodes[".lmap._layers[1][1].J"]["role"] == "param"
    assert nodes[".lmap._layers[1][1].J_D"]["role"] == "buffer"
    flat = tree_flatten_with_path(network)[0]
    spec = jax.tree_util.tree_leaves(library.trainable_filter(network))
    assert trained_flags(network, flat) == spec
    for (keys, _), trained in zip(flat, spec, strict=True):
        assert nodes[keystr(keys)]["role"] == ("param" if trained else "buffer")
    assert nodes[""]["params"] == params_count(network)
    assert find_node(network, ".lmap._layers[2][1].W").shape == (6, 3)


@pytest.mark.parametrize(
    "model",
    [
        lambda: eqx.nn.Conv2d(2, 3, 3, key=jax.random.PRNGKey(0)),
        lambda: eqx.nn.LayerNorm((4,)),
        lambda: eqx.nn.Embedding(5, 3, key=jax.random.PRNGKey(0)),
        lambda: eqx.nn.GRUCell(3, 4, key=jax.random.PRNGKey(0)),
        lambda: eqx.nn.MultiheadAttention(2, 8, key=jax.random.PRNGKey(0)),
        lambda: library.RecurrentTanh(5, j_d=0.5, threshold=0.5, key=jax.random.PRNGKey(0)),
        lambda: library.Ferromagnetic(4, strength=1.0),
    ],
)
def test_roles_match_trainable_filter(model):
    module = model()
    flat = tree_flatten_with_path(module)[0]
    spec = jax.tree_util.tree_leaves(library.trainable_filter(module))
    assert trained_flags(module, flat) == spec
    tree = describe_tree(module)
    assert tree["params"] == params_count(module, library.trainable_filter(module))
    arrays = jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_array))
    assert tree["size"] == sum(int(leaf.size) for leaf in arrays)


def test_budget_makes_big_trees_lazy_and_paged():
    mlp = eqx.nn.MLP(4, 4, 4, depth=300, key=jax.random.PRNGKey(0))
    tree = describe_tree(mlp, max_nodes=60)
    layers = by_path(tree)[".layers"]
    assert layers["child_count"] == 301
    assert layers["children"] is None and layers["lazy"] is True
    arrays = jax.tree_util.tree_leaves(eqx.filter(mlp, eqx.is_array))
    assert tree["params"] == sum(int(a.size) for a in arrays)

    tree = describe_tree(mlp)
    layers = by_path(tree)[".layers"]
    assert len(layers["children"]) == CHILDREN_PAGE
    assert layers["children"][0]["children"][0]["path"] == ".layers[0].weight"

    page = describe_tree(find_node(mlp, ".layers"), path=".layers", children_offset=200)
    assert page["children_offset"] == 200
    assert [c["path"] for c in page["children"][:2]] == [".layers[200]", ".layers[201]"]
    assert page["children"][-1]["path"] == ".layers[299]"
    assert page["children"][0]["children"][1]["path"] == ".layers[200].bias"


def test_lazy_subtree_uses_roles_of_the_whole_model():
    module = library.FrozenFullyConnected(
        3, 4, strength=1.0, threshold=0.0, key=jax.random.PRNGKey(0)
    )
    spec = library.trainable_filter(module)
    node = describe_tree(find_node(module, ".W"), path=".W", roles=find_node(spec, ".W"))
    assert node["role"] == "buffer"
    assert node["path"] == ".W" and node["name"] == "W"


def test_find_node():
    mlp = eqx.nn.MLP(2, 3, 4, depth=2, key=jax.random.PRNGKey(0))
    assert find_node(mlp, "") is mlp
    assert find_node(mlp, ".layers[1].weight") is mlp.layers[1].weight
    assert find_node(mlp, ".in_size") == 2  # a static field
    assert find_node({"a": [1, 2]}, "['a'][1]") == 2
    for bad in [".layers[3]", ".nope", ".layers[0].weight.T", "layers", "[0]", ".layers[0]x"]:
        with pytest.raises(KeyError) as error:
            find_node(mlp, bad)
        assert "No node" in str(error.value) or "should start" in str(error.value)
    with pytest.raises(TreePathError, match="at most"):
        find_node(mlp, "." + "a" * 2000)
    with pytest.raises(TreePathError, match="control"):
        find_node(mlp, ".layers\x00")
    # never evaluated: a path that looks like code is just an unknown key
    with pytest.raises(TreePathError):
        find_node(mlp, ".__class__.__init__.__globals__")


def test_tree_at_accessor():
    assert tree_at_accessor(".layers[0].weight") == (
        "eqx.tree_at(lambda m: m.layers[0].weight, model, ...)"
    )
    assert tree_at_accessor("") == "eqx.tree_at(lambda m: m, model, ...)"
    keys = (GetAttrKey("lmap"), GetAttrKey("_layers"), DictKey(1), DictKey(0))
    assert tree_at_accessor(keys) == "eqx.tree_at(lambda m: m.lmap._layers[1][0], model, ...)"
    # the accessor is real Python: eqx.tree_at replaces exactly that leaf
    mlp = eqx.nn.MLP(2, 3, 4, depth=2, key=jax.random.PRNGKey(0))
    text = tree_at_accessor(".layers[1].bias").replace("...", "jnp.zeros(4)")
    replaced = eval(text, {"eqx": eqx, "model": mlp, "jnp": jnp})  # noqa: S307 - our own text
    assert (replaced.layers[1].bias == 0).all() and (
        replaced.layers[0].bias == mlp.layers[0].bias
    ).all()


def test_array_payload_against_numpy():
    array = jax.random.normal(jax.random.PRNGKey(3), (7, 5))
    reference = np.asarray(array, dtype=np.float64)
    payload = array_payload(array, limit=1000)
    assert payload["shape"] == [7, 5] and payload["dtype"] == "float32"
    assert payload["truncated"] is False
    np.testing.assert_array_equal(np.asarray(payload["values"]), np.asarray(array))
    stats = payload["stats"]
    assert stats["min"] == pytest.approx(reference.min())
    assert stats["max"] == pytest.approx(reference.max())
    assert stats["mean"] == pytest.approx(reference.mean())
    assert stats["std"] == pytest.approx(reference.std())


def test_array_payload_truncation_keeps_the_leading_part_of_each_axis():
    array = jnp.arange(100 * 100, dtype=jnp.float32).reshape(100, 100)
    payload = array_payload(array, limit=4096)
    assert payload["truncated"] is True
    assert payload["kept_shape"] == [64, 64]
    np.testing.assert_array_equal(np.asarray(payload["values"]), np.asarray(array)[:64, :64])
    # the statistics are over the whole array
    assert payload["stats"]["max"] == 9999.0
    assert payload["stats"]["mean"] == pytest.approx(np.arange(10000).mean())
    assert kept_shape((5000, 8), 4096) == (512, 8)
    assert kept_shape((3, 4, 5, 6), 50) == (2, 2, 3, 4)
    assert kept_shape((10,), 4) == (4,)
    for shape, limit in [((7, 300), 100), ((2, 3, 4000), 999), ((1, 1, 10_000), 77)]:
        kept = kept_shape(shape, limit)
        assert math.prod(kept) <= limit and all(
            1 <= k <= n for k, n in zip(kept, shape, strict=True)
        )
    assert array_payload(jnp.arange(10), 4)["values"] == [0, 1, 2, 3]


def test_array_payload_nan_and_inf():
    array = jnp.array([1.0, jnp.nan, jnp.inf, -jnp.inf, 3.0])
    payload = array_payload(array, limit=100)
    assert payload["values"] == [1.0, "NaN", "Infinity", "-Infinity", 3.0]
    assert payload["stats"]["min"] == 1.0 and payload["stats"]["max"] == 3.0
    assert payload["stats"]["mean"] == 2.0
    assert payload["stats"]["nan_count"] == 1 and payload["stats"]["inf_count"] == 2
    empty = array_payload(jnp.array([jnp.nan]), limit=10)
    assert empty["stats"]["mean"] is None
    scalar = array_payload(jnp.float32(2.5), limit=10)
    assert scalar["values"] == 2.5 and scalar["shape"] == []
    flags = array_payload(jnp.array([True, False]), limit=10)
    assert flags["values"] == [True, False] and flags["stats"]["mean"] == 0.5
