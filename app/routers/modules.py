"""The modules API: the catalog, building modules, their trees and their leaves (JSON).

- ``GET /api/catalog``: every kind with the JSON Schema of its params.
- ``POST /api/modules {"kind", "params"}``: build a module in the caller's workspace (201).
- ``GET /api/modules``: the workspace's modules.
- ``GET /api/modules/{id}``: one module with its tree and its Python code.
- ``GET /api/modules/{id}/tree?path=...&offset=...``: one node with its children (lazy loading).
- ``GET /api/modules/{id}/leaf?path=...``: one array's statistics and values.
- ``DELETE /api/modules/{id}``.

Every refusal is a 4xx whose message names the field at fault and, for limits, the limit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.catalog import CATALOG, UnknownKind, describe_catalog, parse_spec
from app.errors import PlaygroundError
from app.modules import build_module, leaf_out, module_out, subtree
from app.services import RecordDep, ServicesDep, SettingsDep, StoreDep, WorkspaceDep
from app.trees import CHILDREN_PAGE, MAX_PATH_LENGTH, describe_tree

router = APIRouter(tags=["modules"])

CatalogKind = Literal[tuple(CATALOG)]  # type: ignore[valid-type]


# Models -----------------------------------------------------------------------------------


class CatalogItem(BaseModel):
    """One kind of module the playground builds."""

    model_config = ConfigDict(populate_by_name=True)

    kind: str = Field(description="The kind's name, e.g. library.Linear or eqx.nn.MLP.")
    title: str = Field(description="A human title.")
    summary: str = Field(description="One sentence of help.")
    group: str = Field(description="The picker group: Seed, Library, Equinox or Compose.")
    params_schema: dict[str, Any] = Field(
        alias="schema",
        serialization_alias="schema",
        description="The JSON Schema of the kind's params (its catalog model).",
    )


class ModuleCreate(BaseModel):
    """What to build: a catalog kind and its params (see ``GET /api/catalog``)."""

    model_config = ConfigDict(extra="forbid")

    kind: CatalogKind = Field(description="A kind of the catalog.")  # type: ignore[valid-type]
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The kind's params, validated by its catalog model (the schema in "
        "GET /api/catalog); missing ones take their defaults.",
    )


class TreeNode(BaseModel):
    """One node of a module's pytree (see ``app.trees``)."""

    path: str = Field(description="The JAX keystr of the node: '' (root), .weight, .layers[0].")
    name: str = Field(description="The node's last key: weight, [0], ['a']; '' for the root.")
    type: str = Field(description="The Python type's name: Linear, Array, tuple, function.")
    role: Literal["param", "buffer", "static"] | None = Field(
        description="For leaves: param (trained), buffer (an array not trained), static (a "
        "static field or non-array leaf); None for a None leaf and inner nodes."
    )
    summary: str = Field(description="f32[2,3] for arrays, the value for static fields.")
    shape: list[int] | None = Field(description="The array's shape; null for other nodes.")
    dtype: str | None = Field(description="The array's dtype; null for other nodes.")
    size: int = Field(description="Array elements in the subtree.")
    nbytes: int = Field(description="Array bytes in the subtree.")
    params: int = Field(description="Trained array elements (role param) in the subtree.")
    leaf: bool = Field(description="Whether the node is a leaf.")
    static_field: bool = Field(
        False, description="A static dataclass field (eqx.field(static=True))."
    )
    child_count: int = Field(0, description="How many children the node has in all.")
    children_offset: int = Field(0, description="The index of the first child listed.")
    lazy: bool = Field(False, description="Children not loaded: ask GET .../tree?path=.")
    children: list[TreeNode] | None = Field(
        description=f"The children (at most {CHILDREN_PAGE} from children_offset), or null "
        "when not loaded (lazy)."
    )


class ModuleOut(BaseModel):
    """A module of the workspace, with its tree and its Python code."""

    id: str
    kind: str
    params: dict[str, Any] = Field(description="The params as validated, defaults filled in.")
    title: str = Field(description="The kind's title.")
    created_at: float = Field(description="Unix time of creation.")
    trained: bool = Field(description="Whether training replaced the built parameters.")
    tree: TreeNode
    code: str = Field(description="A Python script that rebuilds the module as `model`.")
    notices: list[str] = Field(
        default_factory=list,
        description="Messages for the workspace, e.g. modules evicted to keep within the limit.",
    )


class ModuleSummary(BaseModel):
    """A module in the workspace's list."""

    id: str
    kind: str
    title: str
    created_at: float
    trained: bool


class LeafStats(BaseModel):
    """Statistics over the whole array, in float64, of its finite values."""

    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    nan_count: int = Field(description="NaN values (left out of the statistics).")
    inf_count: int = Field(description="Infinite values (left out of the statistics).")


class LeafOut(BaseModel):
    """One array leaf: statistics over all of it, and its values (cut to ``limit``)."""

    path: str
    shape: list[int]
    dtype: str
    stats: LeafStats
    values: Any = Field(
        description="Nested lists; when truncated, the leading part of every axis "
        "(kept_shape). NaN and infinities are the strings 'NaN', 'Infinity', '-Infinity'."
    )
    truncated: bool = Field(description="Whether values were cut to the limit.")
    kept_shape: list[int] = Field(description="The shape of the values sent.")
    limit: int = Field(description="The most values sent for one array (leaf_values_limit).")


def params_error(error: ValidationError) -> RequestValidationError:
    """A catalog ValidationError as a 422 whose locations start with ``["body", "params"]``."""
    errors = []
    for item in error.errors(include_url=False):
        item = dict(item)
        item["loc"] = ("body", "params", *item.get("loc", ()))
        item.pop("ctx", None)
        errors.append(item)
    return RequestValidationError(errors)


PathQuery = Annotated[
    str,
    Query(
        max_length=MAX_PATH_LENGTH,
        description="A node's JAX keystr path, as in the tree: '' for the root, .weight, "
        ".layers[0].bias.",
    ),
]


# Endpoints --------------------------------------------------------------------------------


@router.get("/api/catalog", response_model=list[CatalogItem])
def catalog() -> list[dict]:
    """Every kind of module, in picker order, with the JSON Schema of its params."""
    return describe_catalog()


def _default_params(kind: str) -> dict:
    try:
        return CATALOG[kind]().model_dump(mode="json")
    except Exception:  # noqa: BLE001 - an example only
        return {}


_EXAMPLES = {
    kind: {"summary": entry.title, "value": {"kind": kind, "params": _default_params(kind)}}
    for kind, entry in CATALOG.items()
}


@router.post(
    "/api/modules",
    status_code=201,
    response_model=ModuleOut,
    responses={422: {"description": "A param at fault (its location names it) or a limit."}},
)
def create_module(
    request_body: Annotated[ModuleCreate, Body(openapi_examples=_EXAMPLES)],
    services: ServicesDep,
    workspace: WorkspaceDep,
) -> dict:
    """Validate the params with the kind's catalog model, then build the module.

    Modules over ``max_module_params`` array elements (or the leaf and array limits) are
    refused before anything is built. When the workspace is full, its oldest unsaved module is
    evicted and ``notices`` says so.
    """
    try:
        spec = parse_spec(request_body.kind, request_body.params)
    except UnknownKind as error:  # the Literal already refuses these; kept for safety
        raise PlaygroundError(422, str(error), field="body.kind") from error
    except ValidationError as error:
        raise params_error(error) from error
    record, tree = build_module(services, workspace, spec)
    notices = services.store.pop_notices(workspace)
    return module_out(record, None, notices, tree=tree)


@router.get("/api/modules", response_model=list[ModuleSummary])
def list_modules(workspace: WorkspaceDep, store: StoreDep) -> list[dict]:
    """The workspace's modules, newest first."""
    return [
        {
            "id": record.id,
            "kind": record.kind,
            "title": CATALOG[record.kind].title if record.kind in CATALOG else record.kind,
            "created_at": record.created_at,
            "trained": record.trained,
        }
        for record in store.list(workspace)
    ]


@router.get(
    "/api/modules/{module_id}",
    response_model=ModuleOut,
    responses={404: {"description": "No such module in your workspace."}},
)
def get_module(record: RecordDep, store: StoreDep, workspace: WorkspaceDep) -> dict:
    """One module of the workspace with its tree (the first levels; the rest lazily)."""
    return module_out(record, store.load(record), store.pop_notices(workspace))


@router.get(
    "/api/modules/{module_id}/tree",
    response_model=TreeNode,
    responses={404: {"description": "No such module."}, 422: {"description": "No such path."}},
)
def get_tree_node(
    record: RecordDep,
    store: StoreDep,
    path: PathQuery = "",
    offset: Annotated[
        int, Query(ge=0, le=10_000_000, description="The first child to list (paging).")
    ] = 0,
) -> dict:
    """The node at ``path`` with its descendants (breadth first, up to 1500 nodes), its
    children listed from ``offset``, at most 100 of them."""
    model = store.load(record)
    node, roles, static_field = subtree(model, path)
    if static_field:
        raise PlaygroundError(
            422, f"{path!r} is a static field, a leaf with no children.", field="query.path"
        )
    return describe_tree(node, path=path, roles=roles, children_offset=offset)


@router.get(
    "/api/modules/{module_id}/leaf",
    response_model=LeafOut,
    responses={404: {"description": "No such module."}, 422: {"description": "Not an array."}},
)
def get_leaf(path: PathQuery, record: RecordDep, store: StoreDep, settings: SettingsDep) -> dict:
    """One array's statistics (over all of it) and values, at most ``leaf_values_limit``
    (default 4096, ``PLAYGROUND_LEAF_VALUES_LIMIT``) of them: a larger array keeps the leading
    part of every axis, smaller axes whole, and says ``truncated: true``."""
    return leaf_out(store.load(record), path, settings.leaf_values_limit)


@router.delete("/api/modules/{module_id}", status_code=204, response_class=Response)
def delete_module(record: RecordDep, store: StoreDep) -> Response:
    """Delete the module from the workspace."""
    store.delete(record)
    return Response(status_code=204)
