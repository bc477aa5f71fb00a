"""Pytree operations over HTTP: flatten, partition, tree_map, edit and undo, compare, find.

JSON under ``/api/...`` (in OpenAPI); the module page's fragments under ``/m/{id}/...``. The
work is done by :mod:`app.pytree_ops`; this module parses, calls it and answers.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import jax
import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import pytree_ops
from app.catalog import CATALOG
from app.errors import PlaygroundError
from app.modules import model_roles, module_out
from app.plots import array_figure, bar_figure, heatmap_figure, scalar_figure
from app.routers.modules import ModuleOut, TreeNode
from app.runs.spec import RunRequest
from app.services import RecordDep, Services, ServicesDep, WorkspaceDep
from app.store import ModuleRecord, serialise_leaves
from app.templating import templates
from app.trees import MAX_PATH_LENGTH

router = APIRouter(tags=["pytree operations"])


FLATTEN_PAGE = 500
"""Leaves in one flatten answer unless ``limit`` says otherwise."""
FLATTEN_MAX_PAGE = 5_000
"""The most leaves one flatten answer may ask for."""
MAX_COMPARE_TEXT = 20_000
"""Characters of ``b`` in a compare (a run request as JSON)."""

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


def _model(services: Services, record: ModuleRecord) -> Any:
    return services.store.load(record)


def _flatten(services: Services, record: ModuleRecord, offset: int, limit: int) -> dict:
    model = _model(services, record)
    answer = pytree_ops.flatten(model, offset, limit)
    for leaf in answer["leaves"]:
        leaf.pop("summary", None)
    return answer


def _partition(services: Services, record: ModuleRecord, name: str) -> dict:
    with services.compute.slot():
        return pytree_ops.partition(_model(services, record), name)


def map_module(services: Services, record: ModuleRecord, expression: str, name: str):
    """Apply the tree_map and store the result as a new module of the workspace."""
    with services.compute.slot():
        model = _model(services, record)
        mapped = pytree_ops.tree_map(model, expression, name, services.settings)
        new_record = services.store.create(
            record.workspace, record.spec(), leaves=serialise_leaves(mapped.model)
        )
        new_model = services.store.load(new_record)
    notices = services.store.pop_notices(record.workspace)
    which = "every array" if name == "all" else f"the leaves {name} keeps"
    note = (
        f"Made from module {record.id} by tree_map({expression[:80]!r}) over {which} "
        f"({mapped.mapped} arrays)."
    )
    if mapped.untouched:
        shown = ", ".join(mapped.untouched[:4]) + (" …" if len(mapped.untouched) > 4 else "")
        note += f" Leaves that are not arrays stay as they are: {shown}."
    return new_record, new_model, mapped, [note, *notices]


def edit_module(services: Services, record: ModuleRecord, body: EditIn):
    """Edit the leaf and store the result as the module's next revision."""
    settings = services.settings
    with services.compute.slot():
        model = _model(services, record)
        edited = pytree_ops.edit_leaf(
            model, body.path, body.index, body.value, body.expression, settings
        )
        new_record = services.store.edit(
            record, edited.model, edited.note, settings.max_undo_revisions, settings.max_undo_bytes
        )
        new_model = services.store.load(new_record)
    return new_record, new_model, edited


def _edit_answer(services, record, model, words: str) -> dict:
    return {
        **module_out(record, model),
        "revision": record.revision,
        "undo_available": len(services.store.history(record)),
        "edit": words,
    }


def compare_target(services: Services, workspace: str, a: ModuleRecord, b: str) -> tuple[Any, str]:
    """The tree ``b`` names: a module id of the workspace, or ``run:{json}``, the result of
    that run request (``POST /api/modules/{a}/run``'s body) on module ``a``."""
    if b.startswith("run:"):
        text = b[4:]
        if len(text) > MAX_COMPARE_TEXT:
            raise PlaygroundError(
                422, f"b is {len(b)} characters; at most {MAX_COMPARE_TEXT}.", field="query.b"
            )
        try:
            request = RunRequest.model_validate(json.loads(text or "{}"))
        except (ValueError, ValidationError) as error:
            message = str(error).splitlines()[0][:200]
            raise PlaygroundError(
                422,
                f"b=run:{{...}} holds a run request as JSON (the body of POST "
                f'/api/modules/{{id}}/run, e.g. run:{{"transforms":["grad"]}}): {message}',
                field="query.b",
            ) from None
        with services.compute.slot():
            outcome = services.runs.run(a.spec(), services.store.load(a), request)
        words = " ∘ ".join(reversed(request.transforms)) or "forward"
        return outcome.result, f"the result of run {words} on module {a.id}"
    record = services.store.find(workspace, b, field="query.b")
    return services.store.load(record), f"module {record.id}"


def _compare(services: Services, workspace: str, a: str, b: str) -> dict:
    first = services.store.find(workspace, a, field="query.a")
    other, _ = compare_target(services, workspace, first, b)
    return pytree_ops.compare(services.store.load(first), other)


def _find(services: Services, record: ModuleRecord, path: str) -> list[dict]:
    model = _model(services, record)
    return pytree_ops.chain(model, path, model_roles(model))


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
    return await run_in_threadpool(_flatten, services, record, offset, limit)


@router.post("/api/modules/{module_id}/partition", response_model=PartitionOut, responses=_NOT_HERE)
async def partition_module(body: PartitionIn, record: RecordDep, services: ServicesDep) -> dict:
    """``eqx.partition(model, filter)`` as two trees (up to 1,500 nodes each, breadth first;
    deeper levels of a big tree are marked ``lazy``). ``eqx.combine(kept, rest)`` is the
    module again."""
    return await run_in_threadpool(_partition, services, record, body.filter)


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

    def work() -> dict:
        new_record, new_model, _, notices = map_module(
            services, record, body.expression, body.filter
        )
        return module_out(new_record, new_model, notices)

    return await run_in_threadpool(work)


@router.post("/api/modules/{module_id}/edit", response_model=EditOut, responses=_NOT_HERE)
async def edit_module_api(body: EditIn, record: RecordDep, services: ServicesDep) -> dict:
    """Set the array at ``path`` (or its element ``index``) to ``value`` or to ``expression``
    over its old value ``leaf``: the module becomes ``eqx.tree_at(...)`` of itself, as a new
    revision. A shape or dtype change is refused (422); static fields change in the build
    form. 409 when the module changed meanwhile."""

    def work() -> dict:
        new_record, new_model, edited = edit_module(services, record, body)
        return _edit_answer(services, new_record, new_model, edited.note)

    return await run_in_threadpool(work)


@router.post("/api/modules/{module_id}/undo", response_model=EditOut, responses=_NOT_HERE)
async def undo_module(record: RecordDep, services: ServicesDep) -> dict:
    """Go back to the parameters before the last edit (409 when there is none). The revision
    number still grows: nothing computed for the undone revision is reused."""

    def work() -> dict:
        new_record, note = services.store.undo(record)
        model = services.store.load(new_record)
        return _edit_answer(services, new_record, model, f"undid: {note.note}")

    return await run_in_threadpool(work)


@router.get("/api/compare", response_model=CompareOut)
async def compare_trees(
    services: ServicesDep,
    workspace: WorkspaceDep,
    a: Annotated[str, Query(max_length=32, description="A module id of your workspace.")],
    b: Annotated[
        str,
        Query(
            max_length=MAX_COMPARE_TEXT + 4,
            description="Another module id, or run:{json}: the result of that run request "
            '(the body of POST /api/modules/{a}/run, e.g. run:{"transforms":["grad"]}) '
            "on module a.",
        ),
    ],
) -> dict:
    """With the same structure, per array leaf: max |a - b|, the norm of a - b and the
    relative difference; otherwise the structural diff. Always: whether jit would reuse a
    function compiled for one on the other."""
    return await run_in_threadpool(_compare, services, workspace, a, b)


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
    return await run_in_threadpool(_find, services, record, path)


# The module page's fragments (htmx) ---------------------------------------------------------

FLATTEN_ROWS = 200
"""Leaves listed per page of the flatten table."""
PAGE_TREE_NODES = 300
"""Nodes rendered per side of a partition on the page."""
BAR_LEAVES = 40
"""Leaves shown as bars in a comparison (the table lists them all)."""


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


def _flatten_context(services: Services, record: ModuleRecord, offset: int) -> dict:
    model = services.store.load(record)
    answer = pytree_ops.flatten(model, offset, FLATTEN_ROWS)
    return {
        "module": record,
        "flat": answer,
        "offset": offset,
        "rows": FLATTEN_ROWS,
        "counts": pytree_ops.counts(model),
        "treedef": pytree_ops.short_treedef(model),
        "round_trip": pytree_ops.round_trip(model),
    }


@router.get("/m/{module_id}/flatten", response_class=HTMLResponse, include_in_schema=False)
async def flatten_fragment(
    request: Request, module_id: str, offset: int = Query(0, ge=0, le=10_000_000)
) -> Response:
    """The leaves in tree_leaves order (a page of them), the treedef and the round trip."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    context = await run_in_threadpool(_flatten_context, services, record, offset)
    name = "ops_flatten_rows.html" if offset else "ops_flatten.html"
    return _fragment(request, name, context)


def _partition_context(services: Services, record: ModuleRecord, name: str) -> dict:
    with services.compute.slot():
        model = services.store.load(record)
        sides = pytree_ops.partition(model, name, max_nodes=PAGE_TREE_NODES)
        combined = pytree_ops.combines_back(model, name)
    return {
        "module": record,
        "filter": name,
        "filter_code": pytree_ops.FILTERS[name],
        "sides": sides,
        "code": pytree_ops.partition_code(name),
        "combined": combined,
    }


@router.post("/m/{module_id}/partition", response_class=HTMLResponse, include_in_schema=False)
async def partition_fragment(request: Request, module_id: str) -> Response:
    """``eqx.partition`` with the chosen filter: the two trees side by side."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    fields = await _form(request)
    try:
        name = pytree_ops.check_filter(fields.get("filter", ""), field="filter")
        context = await run_in_threadpool(_partition_context, services, record, name)
    except PlaygroundError as error:
        return _refusal(request, error, "This partition cannot be made.")
    return _fragment(request, "ops_partition.html", context)


def _bars(result: dict, title: str) -> dict | None:
    leaves = result["leaves"][:BAR_LEAVES]
    if not leaves:
        return None
    return bar_figure(
        [leaf["path"] for leaf in leaves],
        [leaf["max_abs"] for leaf in leaves],
        title,
        value_title="max |a − b|",
    )


def _map_context(services: Services, record: ModuleRecord, expression: str, name: str) -> dict:
    new_record, new_model, mapped, notices = map_module(services, record, expression, name)
    original = services.store.load(record)
    result = pytree_ops.compare(original, new_model)
    return {
        "module": record,
        "new": new_record,
        "mapped": mapped,
        "notices": notices,
        "filter": name,
        "compare": result,
        "figure": _bars(result, "How much each leaf changed"),
        "before_stats": _leaf_stats(original),
        "after_stats": _leaf_stats(new_model),
    }


def _leaf_stats(model: Any, limit: int = BAR_LEAVES) -> dict[str, dict]:
    """Mean and std of the first ``limit`` array leaves, by path."""
    out = {}
    for keys, leaf in jax.tree_util.tree_flatten_with_path(model)[0]:
        if len(out) >= limit:
            break
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            values = np.asarray(leaf, dtype=np.float64)
            out[jax.tree_util.keystr(keys)] = {
                "mean": float(values.mean()) if values.size else None,
                "std": float(values.std()) if values.size else None,
            }
    return out


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
            _map_context, services, record, fields.get("expression", "")[:10_000], name
        )
    except PlaygroundError as error:
        return _refusal(request, error, "This tree_map cannot be done.")
    return _fragment(request, "ops_map_result.html", context, {"HX-Trigger": "modules-changed"})


def _effect_figure(values: Any, title: str) -> dict:
    """A compact figure for half a column: a heatmap (2-D), bars (1-D) or the number."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        rows, cols = values.shape
        return heatmap_figure(
            values, list(range(cols)), list(range(rows)), title, x_title="column", y_title="row"
        )
    if values.ndim == 1:
        return bar_figure(list(range(values.size)), values.tolist(), title)
    if values.ndim == 0:
        return scalar_figure(float(values), title)
    return array_figure(values, title)


def _effects_context(services, before_record, before, after_record, after, path, words, code):
    effects = pytree_ops.before_after(before_record.spec(), before, after, path)
    figures = None
    if effects is not None:
        figures = {
            "out_before": _effect_figure(effects["before"]["out"], "Output before"),
            "out_after": _effect_figure(effects["after"]["out"], "Output after"),
        }
        if effects["before"]["grad"] is not None and effects["after"]["grad"] is not None:
            figures["grad_before"] = _effect_figure(
                effects["before"]["grad"], f"Gradient at {path} before"
            )
            figures["grad_after"] = _effect_figure(
                effects["after"]["grad"], f"Gradient at {path} after"
            )
    return {
        "module": after_record,
        "words": words,
        "code": code,
        "path": path,
        "effects": effects,
        "figures": figures,
        "undo_available": len(services.store.history(after_record)),
        "history": services.store.history(after_record)[:5],
    }


def _edit_context(services: Services, record: ModuleRecord, body: EditIn) -> dict:
    before = services.store.load(record)
    new_record, new_model, edited = edit_module(services, record, body)
    with services.compute.slot():
        return _effects_context(
            services, record, before, new_record, new_model, body.path, edited.note, edited.code
        )


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
        context = await run_in_threadpool(_edit_context, services, record, body)
    except ValidationError as error:
        message = "; ".join(item["msg"] for item in error.errors(include_url=False))
        return _refusal(request, PlaygroundError(422, message), "This edit cannot be made.")
    except PlaygroundError as error:
        return _refusal(request, error, "This edit cannot be made.")
    return _fragment(request, "ops_edit_result.html", context, {"HX-Trigger": "module-edited"})


def _undo_context(services: Services, record: ModuleRecord) -> dict:
    before = services.store.load(record)
    new_record, note = services.store.undo(record)
    after = services.store.load(new_record)
    changed = [leaf for leaf in pytree_ops.compare(before, after)["leaves"] if leaf["max_abs"]]
    path = changed[0]["path"] if changed else ""
    with services.compute.slot():
        return _effects_context(
            services, record, before, new_record, after, path, f"undid: {note.note}", None
        )


@router.post("/m/{module_id}/undo", response_class=HTMLResponse, include_in_schema=False)
async def undo_fragment(request: Request, module_id: str) -> Response:
    """Undo the last edit: back to the parameters before it."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    try:
        context = await run_in_threadpool(_undo_context, services, record)
    except PlaygroundError as error:
        return _refusal(request, error, "Nothing to undo.")
    return _fragment(request, "ops_edit_result.html", context, {"HX-Trigger": "module-edited"})


def _compare_context(services: Services, workspace: str, record: ModuleRecord, b: str) -> dict:
    other, label = compare_target(services, workspace, record, b)
    result = pytree_ops.compare(services.store.load(record), other)
    return {
        "module": record,
        "other_label": label,
        "result": result,
        "figure": _bars(result, "The largest difference per leaf"),
    }


@router.get("/m/{module_id}/compare", response_class=HTMLResponse, include_in_schema=False)
async def compare_fragment(
    request: Request, module_id: str, b: str = Query("", max_length=MAX_COMPARE_TEXT + 4)
) -> Response:
    """This module against another one (or a run's result): bars per leaf, or the diff."""
    record = _page_record(request, module_id)
    services: Services = request.app.state.services
    try:
        if not b:
            raise PlaygroundError(422, "Choose what to compare with.", field="b")
        context = await run_in_threadpool(
            _compare_context, services, request.state.workspace, record, b
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
