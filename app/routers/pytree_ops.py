"""Pytree operations over HTTP: flatten, partition, tree_map, edit and undo, compare, find.

JSON under ``/api/...`` (in OpenAPI); the module page's fragments under ``/m/{id}/...``. The
work is done by :mod:`app.pytree_ops`; this module parses, calls it and answers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import pytree_ops
from app.catalog import CATALOG
from app.errors import PlaygroundError
from app.pytree_ops import service
from app.routers.modules import ModuleOut, TreeNode
from app.services import RecordDep, Services, ServicesDep, WorkspaceDep
from app.store import ModuleRecord
from app.templating import templates
from app.trees import MAX_PATH_LENGTH

router = APIRouter(tags=["pytree operations"])


FLATTEN_PAGE = 500
"""Leaves in one flatten answer unless ``limit`` says otherwise."""
FLATTEN_MAX_PAGE = 5_000
"""The most leaves one flatten answer may ask for."""
Filter = Literal["is_array", "is_inexact_array", "trainable"]
MapFilter = Literal["all", "is_array", "is_inexact_array", "trainable"]


# Models -----------------------------------------------------------------------------------


class KeptFlags(BaseModel):
    is_array: bool = Field(description="eqx.is_array keeps it.")
    is_inexact_array: bool = Field(description="eqx.is_inexact_array keeps it.")
    trainable: bool = Field(description="library.trainable_filter(model) keeps it.")


class FlatLeaf(BaseModel):
    index: int = Field(description="The position in jax.tree_util.tree_leaves(model).")
    path: str = Field(description="The leaf's jax.tree_util.keystr path.")
    shape: list[int] | None = Field(description="The array's shape; null for other leaves.")
    dtype: str | None = Field(description="The array's dtype; null for other leaves.")
    value: Any = Field(
        description="The Python value of a leaf that is not an array (numbers, text, booleans "
        "as they are; functions as '<function relu>'); null for arrays."
    )
    kept: KeptFlags


class FlattenOut(BaseModel):
    """A module's leaves in ``jax.tree_util.tree_leaves`` order, a page at a time."""

    treedef: str = Field(description="The tree definition as JAX prints it.")
    num_leaves: int = Field(description="Leaves in all (whatever the page).")
    leaves: list[FlatLeaf]


class PartitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: Filter = Field(description="The filter eqx.partition splits with.")


class PartitionOut(BaseModel):
    """Both sides of ``eqx.partition(model, filter)``: nodes as in the tree, ``None`` holes as
    nodes of type ``None``."""

    kept: TreeNode
    rest: TreeNode


class TreeMapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: str = Field(
        max_length=10_000,
        description="An expression over `leaf` in the playground's expression language "
        "(never Python): leaf * 2, zeros_like(leaf), leaf / sqrt(sum(leaf ** 2)), sign(leaf).",
    )
    filter: MapFilter = Field(
        "is_inexact_array",
        description="Which leaves change: all (every array; other leaves stay), is_array, "
        "is_inexact_array, trainable (library.trainable_filter).",
    )


class EditIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(max_length=MAX_PATH_LENGTH, description="The array leaf's keystr path.")
    index: list[int] | None = Field(
        None, max_length=8, description="One element: one whole number per axis; null: all."
    )
    value: float | list[Any] | str | None = Field(
        None,
        description="A number (for the element, or for every element), nested lists of the "
        "target's shape, or the same pasted as text ('1 2; 3 4').",
    )
    expression: str | None = Field(
        None, max_length=10_000, description="An expression over the old value `leaf`."
    )


class EditOut(ModuleOut):
    """The module with its new revision."""

    revision: int = Field(description="The module's revision (it grows with every change).")
    undo_available: int = Field(description="Earlier revisions kept for Undo.")
    edit: str = Field(description="What changed, in words.")


class LeafNumbers(BaseModel):
    path: str
    max_abs: float = Field(description="max |a - b| over the leaf.")
    norm: float = Field(description="The 2-norm of a - b.")
    relative: float | None = Field(description="norm(a - b) / norm(a); null when a is zero.")


class StructuralChange(BaseModel):
    path: str
    change: Literal["added", "removed", "shape", "dtype", "static"]
    before: str | None
    after: str | None


class CompareOut(BaseModel):
    """Two trees compared."""

    same_structure: bool
    jit_reuses: bool = Field(
        description="Whether jit would reuse a function compiled for a on b: the run engine's "
        "structure key (tree definition with static fields, non-array leaves, array shapes and "
        "dtypes) is the same."
    )
    leaves: list[LeafNumbers] = Field(description="Per array leaf, when the structures match.")
    structural: list[StructuralChange]


# The work, off the event loop ---------------------------------------------------------------


# Endpoints --------------------------------------------------------------------------------

_NOT_HERE = {404: {"description": "No such module in your workspace."}}


@router.get("/api/modules/{module_id}/flatten", response_model=FlattenOut, responses=_NOT_HERE)
async def flatten_module(
    record: RecordDep,
    services: ServicesDep,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="The first leaf.")] = 0,
    limit: Annotated[
        int, Query(ge=1, le=FLATTEN_MAX_PAGE, description="Leaves in this answer.")
    ] = FLATTEN_PAGE,
) -> dict:
    """The leaves in ``jax.tree_util.tree_leaves`` order from ``offset`` (``limit`` of them;
    ``num_leaves`` is always the total), with the filters that keep each, and the treedef."""
    return await run_in_threadpool(service.flatten_answer, services, record, offset, limit)


@router.post("/api/modules/{module_id}/partition", response_model=PartitionOut, responses=_NOT_HERE)
async def partition_module(body: PartitionIn, record: RecordDep, services: ServicesDep) -> dict:
    """``eqx.partition(model, filter)`` as two trees (up to 1,500 nodes each, breadth first;
    deeper levels of a big tree are marked ``lazy``). ``eqx.combine(kept, rest)`` is the
    module again."""
    return await run_in_threadpool(service.partition_answer, services, record, body.filter)


@router.post(
    "/api/modules/{module_id}/tree-map",
    status_code=201,
    response_model=ModuleOut,
    responses={
        **_NOT_HERE,
        422: {
            "description": "A bad expression or filter, or a leaf "
            "whose shape or dtype the expression would change."
        },
    },
)
async def tree_map_module(body: TreeMapIn, record: RecordDep, services: ServicesDep) -> dict:
    """A new module of the workspace: ``eqx.combine(jax.tree.map(f, eqx.filter(model,
    filter)), model)`` with ``f`` the expression over ``leaf``. The original is unchanged."""
    return await run_in_threadpool(
        service.map_answer, services, record, body.expression, body.filter
    )


@router.post("/api/modules/{module_id}/edit", response_model=EditOut, responses=_NOT_HERE)
async def edit_module_api(body: EditIn, record: RecordDep, services: ServicesDep) -> dict:
    """Set the array at ``path`` (or its element ``index``) to ``value`` or to ``expression``
    over its old value ``leaf``: the module becomes ``eqx.tree_at(...)`` of itself, as a new
    revision. A shape or dtype change is refused (422); static fields change in the build
    form. 409 when the module changed meanwhile."""
    return await run_in_threadpool(service.edit_module_answer, services, record, body)


@router.post("/api/modules/{module_id}/undo", response_model=EditOut, responses=_NOT_HERE)
async def undo_module(record: RecordDep, services: ServicesDep) -> dict:
    """Go back to the parameters before the last edit (409 when there is none). The revision
    number still grows: nothing computed for the undone revision is reused."""
    return await run_in_threadpool(service.undo_answer, services, record)


@router.get("/api/compare", response_model=CompareOut)
async def compare_trees(
    services: ServicesDep,
    workspace: WorkspaceDep,
    a: Annotated[str, Query(max_length=32, description="A module id of your workspace.")],
    b: Annotated[
        str,
        Query(
            max_length=service.MAX_COMPARE_TEXT + 4,
            description="Another module id, or run:{json}: the result of that run request "
            '(the body of POST /api/modules/{a}/run, e.g. run:{"transforms":["grad"]}) '
            "on module a.",
        ),
    ],
) -> dict:
    """With the same structure, per array leaf: max |a - b|, the norm of a - b and the
    relative difference; otherwise the structural diff. Always: whether jit would reuse a
    function compiled for one on the other."""
    return await run_in_threadpool(service.compare_answer, services, workspace, a, b)


@router.get("/api/modules/{module_id}/find", response_model=list[TreeNode], responses=_NOT_HERE)
async def find_path(
    record: RecordDep,
    services: ServicesDep,
    path: Annotated[
        str, Query(max_length=MAX_PATH_LENGTH, description="A keystr path: .layers[2500].bias")
    ],
) -> list[dict]:
    """The nodes from the root to ``path`` (each without its children), so a page can open
    the path without paging; 422 naming the first key that is not there."""
    return await run_in_threadpool(service.find_chain, services, record, path)


# The module page's fragments (htmx) ---------------------------------------------------------


def _page_record(request: Request, module_id: str) -> ModuleRecord:
    services: Services = request.app.state.services
    return services.store.find(request.state.workspace, module_id)


def _fragment(request: Request, name: str, context: dict, headers: dict | None = None):
    response = templates.TemplateResponse(request, f"partials/{name}", context)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _refusal(request: Request, error: PlaygroundError, title: str) -> Response:
    """A refusal the panel shows in place, in plain words (htmx swaps it like an answer)."""
    return _fragment(request, "ops_refused.html", {"title": title, "message": error.message})


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


@router.get("/m/{module_id}/flatten", response_class=HTMLResponse, include_in_schema=False)
async def flatten_fragment(
    request: Request, module_id: str, offset: int = Query(0, ge=0, le=10_000_000)
) -> Response:
    """The leaves in tree_leaves order (a page of them), the treedef and the round trip."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    context = await run_in_threadpool(service.flatten_context, services, record, offset)
    name = "ops_flatten_rows.html" if offset else "ops_flatten.html"
    return _fragment(request, name, context)


@router.post("/m/{module_id}/partition", response_class=HTMLResponse, include_in_schema=False)
async def partition_fragment(request: Request, module_id: str) -> Response:
    """``eqx.partition`` with the chosen filter: the two trees side by side."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    fields = await _form(request)
    try:
        name = pytree_ops.check_filter(fields.get("filter", ""), field="filter")
        context = await run_in_threadpool(service.partition_context, services, record, name)
    except PlaygroundError as error:
        return _refusal(request, error, "This partition cannot be made.")
    return _fragment(request, "ops_partition.html", context)


@router.post("/m/{module_id}/tree-map", response_class=HTMLResponse, include_in_schema=False)
async def tree_map_fragment(request: Request, module_id: str) -> Response:
    """Apply the expression under the filter: a new module, shown beside the original."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    fields = await _form(request)
    try:
        name = pytree_ops.check_filter(
            fields.get("filter", ""), pytree_ops.MAP_FILTERS, field="filter"
        )
        context = await run_in_threadpool(
            service.map_context, services, record, fields.get("expression", "")[:10_000], name
        )
    except PlaygroundError as error:
        return _refusal(request, error, "This tree_map cannot be done.")
    return _fragment(request, "ops_map_result.html", context, {"HX-Trigger": "modules-changed"})


def _edit_body(fields: dict[str, str]) -> EditIn:
    """The edit form as the API's body: the value box holds a number, pasted values, or (with
    the expression mode) an expression over leaf."""
    text = fields.get("value", "").strip()
    index_text = fields.get("index", "").strip().strip("[]()")
    index = None
    if index_text:
        try:
            index = [int(part) for part in index_text.replace(",", " ").split()]
        except ValueError:
            raise PlaygroundError(
                422,
                f"The index {index_text[:40]!r} is whole numbers, one per axis, like 0, 1.",
                field="index",
            ) from None
    if not text:
        raise PlaygroundError(422, "Type a value, or an expression over leaf.", field="value")
    if fields.get("mode") == "expression":
        return EditIn(path=fields.get("path", ""), index=index, expression=text)
    return EditIn(path=fields.get("path", ""), index=index, value=text)


@router.post("/m/{module_id}/edit", response_class=HTMLResponse, include_in_schema=False)
async def edit_fragment(request: Request, module_id: str) -> Response:
    """Edit one leaf: the new revision, and the output and gradient before and after."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    fields = await _form(request)
    try:
        body = _edit_body(fields)
        context = await run_in_threadpool(service.edit_context, services, record, body)
    except ValidationError as error:
        message = "; ".join(item["msg"] for item in error.errors(include_url=False))
        return _refusal(request, PlaygroundError(422, message), "This edit cannot be made.")
    except PlaygroundError as error:
        return _refusal(request, error, "This edit cannot be made.")
    return _fragment(request, "ops_edit_result.html", context, {"HX-Trigger": "module-edited"})


@router.post("/m/{module_id}/undo", response_class=HTMLResponse, include_in_schema=False)
async def undo_fragment(request: Request, module_id: str) -> Response:
    """Undo the last edit: back to the parameters before it."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    try:
        context = await run_in_threadpool(service.undo_context, services, record)
    except PlaygroundError as error:
        return _refusal(request, error, "Nothing to undo.")
    return _fragment(request, "ops_edit_result.html", context, {"HX-Trigger": "module-edited"})


@router.get("/m/{module_id}/compare", response_class=HTMLResponse, include_in_schema=False)
async def compare_fragment(
    request: Request, module_id: str, b: str = Query("", max_length=service.MAX_COMPARE_TEXT + 4)
) -> Response:
    """This module against another one (or a run's result): bars per leaf, or the diff."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    try:
        if not b:
            raise PlaygroundError(422, "Choose what to compare with.", field="b")
        context = await run_in_threadpool(
            service.compare_context, services, request.state.workspace, record, b
        )
    except PlaygroundError as error:
        return _refusal(request, error, "These trees cannot be compared.")
    return _fragment(request, "ops_compare.html", context)


@router.get("/m/{module_id}/compare-choices", response_class=HTMLResponse, include_in_schema=False)
def compare_choices_fragment(request: Request, module_id: str) -> Response:
    """The compare form's choices again (after tree_map made a module)."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    modules = services.store.list(request.state.workspace)
    return _fragment(request, "ops_compare_choices.html", {"module": record, "modules": modules})


@router.get("/m/{module_id}/module-list", response_class=HTMLResponse, include_in_schema=False)
def module_list_fragment(request: Request, module_id: str) -> Response:
    """The workspace's modules again (after tree_map made one)."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    modules = services.store.list(request.state.workspace)
    context = {"module": record, "modules": modules, "catalog": CATALOG}
    return _fragment(request, "module_list.html", context)


@router.get("/m/{module_id}/wrt-split", response_class=HTMLResponse, include_in_schema=False)
async def wrt_split_fragment(request: Request, module_id: str) -> Response:
    """The run panel's split: what grad differentiates (params) and what it holds fixed."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    model = await run_in_threadpool(services.store.load, record)
    split = await run_in_threadpool(pytree_ops.wrt_split, model, "params")
    return _fragment(request, "ops_wrt_split.html", {"module": record, "split": split})


@router.get("/m/{module_id}/edit-form", response_class=HTMLResponse, include_in_schema=False)
async def edit_form_fragment(request: Request, module_id: str) -> Response:
    """The edit form, with the module's array leaves to choose from (trained ones first)."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    model = await run_in_threadpool(services.store.load, record)
    paths = await run_in_threadpool(pytree_ops.array_paths, model)
    return _fragment(request, "ops_edit_form.html", {"module": record, "array_paths": paths})
