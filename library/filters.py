"""Filters: which arrays of a model are trained."""

import equinox as eqx
import jax
from jax.tree_util import DictKey, GetAttrKey, SequenceKey


def trainable_filter(tree):
    """Filter spec of the trained arrays of `tree`.

    Starts from `jax.tree.map(eqx.is_inexact_array, tree)` and sets `False` for
    every field named in the `buffer_fields` class attribute of any module found
    in `tree` (library modules declare their non-trained arrays there). Works on
    any pytree: library modules, layermaps, orchestrators, `eqx.nn` layers, plain
    arrays.

    **Arguments:**

    - `tree`: any pytree.

    **Returns:**

    A pytree of bools with the structure of `tree`, for `eqx.partition` or
    `eqx.filter`.
    """

    def is_trained(path, leaf) -> bool:
        if not eqx.is_inexact_array(leaf):
            return False
        node = tree
        for key in path:
            if isinstance(key, GetAttrKey):
                if key.name in getattr(type(node), "buffer_fields", ()):
                    return False
                node = getattr(node, key.name)
            elif isinstance(key, SequenceKey):
                node = node[key.idx]
            elif isinstance(key, DictKey):
                node = node[key.key]
            else:  # a custom node we cannot walk into: keep the default
                break
        return True

    return jax.tree_util.tree_map_with_path(is_trained, tree)
