"""Find: the chain of tree nodes from the root to a path, so a page can open it without
paging through the children before it."""

from __future__ import annotations

from typing import Any

from app.errors import PlaygroundError
from app.trees import (
    TreePathError,
    children_of,
    describe_tree,
    find_child,
    find_node,
    key_name,
    key_segment,
    type_name,
    value_summary,
)

CHAIN_NODE_BUDGET = 1
"""Each node of the chain is described alone (its children are not listed)."""


def chain(model: Any, path: Any, roles: Any) -> list[dict]:
    """The nodes from the root to ``path`` (each without its children), root first, each
    with ``index``: its position among its parent's children. ``roles`` is
    ``library.trainable_filter(model)``."""
    try:
        find_child(model, path)
    except TreePathError as error:
        raise PlaygroundError(422, str(error), field="query.path") from None
    nodes = []
    node, walked, rest, index = model, "", path, None
    while True:
        described = describe_tree(
            node, path=walked, max_nodes=CHAIN_NODE_BUDGET, roles=find_node(roles, walked)
        )
        described["children"] = None if not described["leaf"] else []
        described["index"] = index
        nodes.append(described)
        if not rest:
            break
        for position, child in enumerate(children_of(node) or []):
            segment = key_segment(child.key)
            if rest.startswith(segment) and (
                len(rest) == len(segment) or rest[len(segment)] in ".["
            ):
                node, walked, rest, index = (
                    child.value,
                    walked + segment,
                    rest[len(segment) :],
                    position,
                )
                if child.static_field:
                    nodes.append(_static_node(child, walked, position))
                    return nodes
                break
    return nodes


def _static_node(child: Any, path: str, index: int) -> dict:
    return {
        "path": path,
        "name": key_name(child.key),
        "type": type_name(child.value),
        "role": "static",
        "summary": value_summary(child.value),
        "shape": None,
        "dtype": None,
        "size": 0,
        "nbytes": 0,
        "params": 0,
        "leaf": True,
        "static_field": True,
        "child_count": 0,
        "children": [],
        "index": index,
    }
