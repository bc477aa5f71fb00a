"""The modules of a workspace: build them within the limits, read their trees and leaves.

What the JSON API (``app.routers.modules``), the pages (``app.routers.pages``), sharing and the
run panel share: the size checks before anything is built, building in a compute slot, a
module's answer as JSON, and the node or array leaf at a path (422 for a path that names none).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from app.cache import BoundedCache
from app.catalog import CatalogEntry
from app.errors import PlaygroundError
from app.runs.limits import is_light
from app.services import Services
from app.settings import Settings
from app.store import ModuleRecord
from app.trees import (
    TreePathError,
    array_payload,
    built_tree,
    describe_tree,
    find_child,
    find_node,
    is_array,
    trainable_spec,
    type_name,
)

ROLES_CACHE_SIZE = 64
"""Models whose trainable spec is remembered."""


_roles: BoundedCache[Any, Any] = BoundedCache(ROLES_CACHE_SIZE, weak_keys=True)
"""The trainable spec of recently described models (lazy loads of a big tree reuse it); weak
keys, so it never keeps a model alive."""


def model_roles(model: Any) -> Any:
    """``library.trainable_filter(model)``, cached for the model object."""
    return _roles.get_or_make(model, lambda: trainable_spec(model))


def check_limits(spec: CatalogEntry, settings: Settings, field: str = "body.params") -> None:
    """Refuse, before anything is built, a module over the size limits (422 naming them)."""
    limits = (
        (spec.estimated_parameters(), "max_module_params", "hold {:,} array elements", "module"),
        (spec.estimated_leaves(), "max_module_leaves", "have {:,} array leaves", "module"),
        (
            spec.largest_array_elements(),
            "max_array_elements",
            "have an array of {:,} elements",
            "array",
        ),
    )
    for value, name, what, per in limits:
        limit = getattr(settings, name)
        if value > limit:
            hint = " Choose smaller sizes." if name == "max_module_params" else ""
            raise PlaygroundError(
                422,
                f"This {spec.kind} would {what.format(value)}; the limit is {limit:,} per "
                f"{per} ({name}, PLAYGROUND_{name.upper()}).{hint}",
                field=field,
            )


def build_module(
    services: Services, workspace: str, spec: CatalogEntry
) -> tuple[ModuleRecord, dict]:
    """Check the limits, then build and store ``spec``; the record and its tree
    (:func:`~app.trees.describe_tree`, roles included).

    A small module is built here, in a compute slot, and kept for its pages. A large one (not
    :func:`~app.runs.limits.is_light`: a deep MLP takes seconds of Python, which in the web
    process would slow every other request) is built in a worker, in the heavy lane, which
    answers its tree; its page builds it here when someone opens it. A spec that validates but
    cannot be built (a bug, or a constructor's own check) is a 422 with the constructor's
    message, and nothing is kept.
    """
    check_limits(spec, services.settings)
    if not is_light(spec.estimated_leaves(), services.settings):
        with services.compute.client_slot(), _built_or_422(spec):
            tree = services.workers.call(built_tree, spec, lane="heavy")
        return services.store.create(workspace, spec), tree
    with services.compute.slot():
        record = services.store.create(workspace, spec)
        try:
            with _built_or_422(spec):
                model = services.store.load(record)
        except PlaygroundError:
            services.store.delete(record)
            raise
    return record, describe_tree(model, roles=model_roles(model))


@contextmanager
def _built_or_422(spec: CatalogEntry):
    try:
        yield
    except (ValueError, TypeError) as error:
        raise PlaygroundError(
            422, f"{spec.kind} could not be built: {error}", field="body.params"
        ) from error


def subtree(model: Any, path: str) -> tuple[Any, Any, bool]:
    """The node at ``path``, its trainable spec and whether it is a static field; 422 if none."""
    try:
        node, static_field = find_child(model, path)
        roles = None if static_field else find_node(model_roles(model), path)
    except TreePathError as error:
        raise PlaygroundError(422, str(error), field="query.path") from error
    return node, roles, static_field


def module_out(
    record: ModuleRecord, model: Any, notices: list[str] | None = None, tree: dict | None = None
) -> dict:
    """A module's JSON answer; ``tree``: its tree when already described (else ``model``'s)."""
    spec = record.spec()
    return {
        "id": record.id,
        "kind": record.kind,
        "params": record.params,
        "title": type(spec).title,
        "created_at": record.created_at,
        "trained": record.trained,
        "tree": tree if tree is not None else describe_tree(model, roles=model_roles(model)),
        "code": spec.code(),
        "notices": notices or [],
    }


def array_at(model: Any, path: str) -> Any:
    """The array leaf at ``path``; 422 for a path that names no node or another kind of node."""
    node, _, static_field = subtree(model, path)
    if static_field or not is_array(node):
        what = "a static field" if static_field else f"a {type_name(node)}"
        where = f"The node at {path!r}" if path else "The root"
        raise PlaygroundError(
            422,
            f"{where} is {what}, not an array leaf; ask for the path of an array, such as .weight.",
            field="query.path",
        )
    return node


def leaf_out(model: Any, path: str, limit: int) -> dict:
    """The leaf payload of the array at ``path``, values cut to ``limit``."""
    return {"path": path, **array_payload(array_at(model, path), limit), "limit": limit}
