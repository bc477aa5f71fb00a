"""What you can do with a pytree, one concept per module (the web layer calls these):

- ``filters``: the filters by name (``is_array``, ``is_inexact_array``, ``trainable``, ``all``).
- ``flatten``: leaves in ``tree_leaves`` order, kept flags, the tree definition folded.
- ``partition``: ``eqx.partition`` / ``eqx.combine`` as two trees; the split a run's ``wrt`` makes.
- ``tree_map``: an expression over ``leaf`` applied under a filter, giving a new module.
- ``edit``: one leaf (or element) set by ``eqx.tree_at``; ``effects``: output and gradient
  before and after.
- ``compare``: numbers per leaf, the structural diff, whether ``jit`` reuses a compile.
- ``find``: the chain of nodes from the root to a path.
- ``service``: what the router calls: the work of each endpoint on a stored module (a compute
  slot, new modules and revisions stored) and the module page's fragment contexts.
"""

from app.pytree_ops.compare import compare, jit_reuses, structural_diff
from app.pytree_ops.edit import Edited, edit_leaf
from app.pytree_ops.effects import before_after
from app.pytree_ops.filters import FILTER_HELP, FILTERS, MAP_FILTERS, check_filter, filter_spec
from app.pytree_ops.find import chain
from app.pytree_ops.flatten import array_paths, counts, flatten, round_trip, short_treedef
from app.pytree_ops.partition import combines_back, partition, partition_code, split, wrt_split
from app.pytree_ops.tree_map import EXAMPLES, Mapped, tree_map

__all__ = [
    "EXAMPLES",
    "FILTERS",
    "FILTER_HELP",
    "MAP_FILTERS",
    "Edited",
    "Mapped",
    "array_paths",
    "before_after",
    "chain",
    "check_filter",
    "combines_back",
    "compare",
    "counts",
    "edit_leaf",
    "filter_spec",
    "flatten",
    "jit_reuses",
    "partition",
    "partition_code",
    "round_trip",
    "short_treedef",
    "split",
    "structural_diff",
    "tree_map",
    "wrt_split",
]
