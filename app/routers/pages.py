"""HTML pages: the playground's one page, per module, and the htmx fragments it loads.

- ``GET /``: the workspace's newest module (the seed's ``Linear(2, 3, PRNGKey(0))`` for a new
  visitor), by a redirect to its own address.
- ``GET /m/{id}``: the page of one module: the build form, the workspace's modules, the tree, the
  LayerMap matrix, the Python code, and the slots where runs, training, dynamics and sharing
  plug in (``templates/partials/{run,train,dynamics,share}_panel.html``).
- ``GET /build/form``, ``POST /build/form``: the build form of a kind, re-rendered after a
  change (another kind, a row added or removed).
- ``POST /build``: validate the form with the kind's catalog model and build the module.
- ``GET /m/{id}/tree``, ``/m/{id}/leaf``, ``/m/{id}/values``: tree fragments (lazy subtrees,
  pages of children), an array's statistics and figure, its values.
- ``POST /m/{id}/delete``.

Other parts render their fragments with :data:`templates` (its filters and globals included).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jax
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from app import pytree_ops
from app.catalog import CATALOG, SEED_KIND, UnknownKind, params_from_form, parse_spec
from app.errors import PlaygroundError, wants_html
from app.forms import (
    FORM_ACTIONS,
    BuildForm,
    build_form,
    catalog_groups,
    edit_list,
    field_names,
    nest_form,
    place_errors,
)
from app.plots import array_figure
from app.routers.health import device_label
from app.routers.modules import (
    array_at,
    build_module,
    check_limits,
    model_roles,
    subtree,
)
from app.services import Services, get_workspace
from app.store import ModuleRecord
from app.trees import (
    CHILDREN_PAGE,
    MAX_PATH_LENGTH,
    TreePathError,
    array_payload,
    array_stats,
    array_summary,
    describe_tree,
    path_of,
    tree_at_accessor,
)

ROOT = Path(__file__).resolve().parent.parent.parent
PAGE_MAX_NODES = 800
"""Nodes rendered in the first view of a tree; deeper ones load when opened."""
FRAGMENT_MAX_NODES = 400
"""Nodes rendered in one lazily loaded fragment."""
OPEN_ALL_BELOW = 40
"""Trees with at most this many nodes render with every inner node open."""

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(ROOT / "templates"))


# Formatting -------------------------------------------------------------------------------


def node_id(path: str) -> str:
    """A stable HTML id for the tree node at ``path``."""
    return "node-" + hashlib.blake2s(path.encode(), digest_size=6).hexdigest()


def count_text(value: int | float | None) -> str:
    """``10,004``."""
    if value is None:
        return "–"
    return f"{int(value):,}"


def bytes_text(value: int | None) -> str:
    """``24 B``, ``1.5 kB``, ``3.2 MB``."""
    if value is None:
        return "–"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1000
    return f"{value} B"


def number_text(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; NaN and infinities spelled out."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    if number == 0:
        return "0"
    text = f"{number:.{digits}g}"
    return text.replace("-", "−") if text.startswith("-") else text


def shape_text(shape: Any) -> str:
    if shape is None:
        return ""
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def params_text(params: dict, limit: int = 90) -> str:
    """The scalar params of a module in one line: ``in_dim=2, out_dim=3, seed=0``."""
    parts = []
    for key, value in params.items():
        if isinstance(value, list):
            parts.append(f"{len(value)} {key}")
        elif isinstance(value, dict):
            continue
        else:
            parts.append(f"{key}={value}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


templates.env.filters.update(
    node_id=node_id,
    count=count_text,
    nbytes=bytes_text,
    num=number_text,
    shape=shape_text,
    params_text=params_text,
    q=lambda value: quote(str(value), safe=""),
)
templates.env.globals.update(
    accessor=tree_at_accessor,
    CHILDREN_PAGE=CHILDREN_PAGE,
    ops_filters=pytree_ops.FILTERS,
    ops_filter_help=pytree_ops.FILTER_HELP,
    ops_examples=pytree_ops.EXAMPLES,
)


# Context ----------------------------------------------------------------------------------


def _services(request: Request) -> Services:
    return request.app.state.services


def _notices(request: Request) -> list[str]:
    return _services(request).store.pop_notices(request.state.workspace)


def find_layermaps(model: Any) -> list[dict]:
    """Every LayerMap in ``model`` as a receiver-by-sender matrix for the page."""
    from library import LayerMap

    found = []
    flat, _ = jax.tree_util.tree_flatten_with_path(
        model, is_leaf=lambda node: isinstance(node, LayerMap)
    )
    for keys, node in flat:
        if not isinstance(node, LayerMap):
            continue
        path = path_of(keys)
        rows = list(node.rows())
        cols = sorted({j for i in rows for j in node.cols_of(i)} | set(rows))
        cells = []
        for i in rows:
            row = []
            for j in cols:
                if (i, j) in node:
                    module = node[i, j]
                    entry_path = f"{path}._layers[{i!r}][{j!r}]"
                    role = "layer" if i == j else ("forward" if j < i else "backward")
                    row.append(
                        {
                            "type": type(module).__name__,
                            "path": entry_path,
                            "role": role,
                            "i": i,
                            "j": j,
                        }
                    )
                else:
                    row.append(None)
            cells.append((i, row))
        found.append({"path": path, "cols": cols, "rows": cells})
    return found


def _open_depth(tree: dict) -> int:
    nodes = 0
    stack = [tree]
    while stack and nodes <= OPEN_ALL_BELOW:
        node = stack.pop()
        nodes += 1
        stack.extend(node.get("children") or [])
    return 99 if nodes <= OPEN_ALL_BELOW else 2


def module_context(
    request: Request,
    record: ModuleRecord,
    *,
    form: BuildForm | None = None,
    readonly: bool = False,
) -> dict:
    """What ``module.html`` and ``partials/app.html`` need for ``record``.

    The slots of other parts get ``module`` (the record), ``spec`` (its catalog entry) and
    ``model`` (the built module).
    """
    services = _services(request)
    store = services.store
    model = store.load(record)
    spec = record.spec()
    tree = describe_tree(
        model, roles=model_roles(model), max_nodes=PAGE_MAX_NODES, fold=True, stats=True
    )
    workspace = request.state.workspace
    modules = store.list(workspace) if not readonly else []
    if form is None:
        form = build_form(record.kind, record.params)
    return {
        "request": request,
        "module": record,
        "spec": spec,
        "model": model,
        "tree": tree,
        "open_depth": _open_depth(tree),
        "entry": type(spec),
        "layermaps": find_layermaps(model),
        "code": spec.code(),
        "modules": modules,
        "catalog": CATALOG,
        "catalog_groups": catalog_groups(),
        "form": form,
        "readonly": readonly,
        "device": device_label(),
        "settings": services.settings,
        "notices": _notices(request),
    }


def _page(request: Request, record: ModuleRecord, status_code: int = 200, **kwargs) -> Response:
    context = module_context(request, record, **kwargs)
    return templates.TemplateResponse(request, "module.html", context, status_code=status_code)


def _latest_or_seed(request: Request) -> ModuleRecord:
    services = _services(request)
    workspace = request.state.workspace
    records = services.store.list(workspace)
    if records:
        return records[0]
    record, _ = build_module(services, workspace, parse_spec(SEED_KIND, {}))
    return record


def _record_or_404(request: Request, module_id: str) -> ModuleRecord:
    record = None
    if len(module_id) <= 32:
        record = _services(request).store.get(request.state.workspace, module_id)
    if record is None:
        raise PlaygroundError(
            404,
            f"No module {module_id[:40]!r} in your workspace. Modules live in the browser's "
            "workspace that built them; a shared link opens a copy of its own.",
        )
    return record


# Pages ------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    """The newest module of the workspace; a new visitor's is the seed's example."""
    record = _latest_or_seed(request)
    return RedirectResponse(f"/m/{record.id}", status_code=303)


@router.get("/m/{module_id}", response_class=HTMLResponse)
def module_page(request: Request, module_id: str, kind: str | None = None) -> Response:
    """The page of one module (the build form shows ``kind`` when given)."""
    record = _services(request).store.get(request.state.workspace, module_id)
    if record is None or len(module_id) > 32:
        return templates.TemplateResponse(
            request,
            "not_found.html",
            {"module_id": module_id[:40], "device": device_label(), "notices": []},
            status_code=404,
        )
    form = None
    if kind and kind in CATALOG and kind != record.kind:
        form = build_form(kind)
    return _page(request, record, form=form)


# The build form ---------------------------------------------------------------------------


def _form_response(request: Request, form: BuildForm, status_code: int = 200) -> Response:
    return templates.TemplateResponse(
        request,
        "partials/build_form.html",
        {"form": form, "catalog_groups": catalog_groups()},
        status_code=status_code,
    )


@router.get("/build/form", response_class=HTMLResponse)
def build_form_fragment(request: Request, kind: str = Query(SEED_KIND, max_length=80)) -> Response:
    """The build form of ``kind`` with its defaults."""
    if kind not in CATALOG:
        raise PlaygroundError(422, f"Unknown kind {kind[:80]!r}.", field="query.kind")
    return _form_response(request, build_form(kind, focus="f-kind"))


async def _read_form(request: Request) -> list[tuple[str, str]]:
    form = await request.form()
    return [(key, value) for key, value in form.multi_items() if isinstance(value, str)]


@router.post("/build/form", response_class=HTMLResponse)
async def rebuild_form(request: Request) -> Response:
    """Re-render the form after a change: another kind, or a row or field added or removed."""
    pairs = await _read_form(request)
    fields = dict(pairs)
    kind = fields.get("kind", SEED_KIND)
    action = fields.get("form_action", "refresh")[:40]
    if kind not in CATALOG:
        raise PlaygroundError(422, f"Unknown kind {kind[:80]!r}.", field="kind")
    if action.partition(":")[0] not in FORM_ACTIONS:
        raise PlaygroundError(
            422, f"form_action: {action!r} is not an action of this form.", field="form_action"
        )
    if action == "change-kind":
        form = build_form(kind, focus="f-kind")
    else:
        values = nest_form(pairs)
        focus = None
        if action.startswith(("add-", "remove-")):
            values, focus = edit_list(values, action, kind)
        form = build_form(kind, values, focus=focus)
    if not wants_html(request):
        current = fields.get("current_module", "")
        record = _services(request).store.get(request.state.workspace, current[:32])
        if record is None:
            record = _latest_or_seed(request)
        return await run_in_threadpool(_page, request, record, form=form)
    return _form_response(request, form)


@router.post("/build", response_class=HTMLResponse)
async def build(request: Request) -> Response:
    """Validate the form with the kind's catalog model and build the module; on errors, the
    form again with each message next to its input (422)."""
    pairs = await _read_form(request)
    fields = dict(pairs)
    kind = fields.get("kind", "")
    return await run_in_threadpool(
        _build_from_form, request, _services(request), get_workspace(request), kind, pairs
    )


def _build_from_form(
    request: Request, services: Services, workspace: str, kind: str, pairs: list
) -> Response:
    if kind not in CATALOG:
        raise PlaygroundError(
            422, f"Choose a kind of module; {kind[:80]!r} is not in the catalog.", field="kind"
        )
    shown = nest_form(pairs)
    try:
        spec = parse_spec(kind, params_from_form(kind, pairs))
        check_limits(spec, services.settings, field="form")
        record, _ = build_module(services, workspace, spec)
    except UnknownKind as error:
        raise PlaygroundError(422, str(error), field="kind") from error
    except ValidationError as error:
        form = build_form(kind, shown)
        by_field, loose = place_errors(error, field_names(form))
        first = next((name for name in _input_order(form) if name in by_field), None)
        focus = "f-" + first.replace(".", "-") if first else "form-errors"
        form = build_form(kind, shown, by_field, loose, focus=focus)
        return _form_failure(request, form)
    except PlaygroundError as error:
        form = build_form(kind, shown, {}, [error.message], focus="form-errors")
        return _form_failure(request, form, error.status_code)
    except HTTPException as error:  # the server is busy (no compute slot came free): say so
        form = build_form(kind, shown, {}, [str(error.detail)], focus="form-errors")
        return _form_failure(request, form, error.status_code)
    if not wants_html(request):
        return RedirectResponse(f"/m/{record.id}", status_code=303)
    context = module_context(request, record)
    response = templates.TemplateResponse(request, "partials/app.html", context)
    response.headers["HX-Push-Url"] = f"/m/{record.id}"
    response.headers["HX-Retarget"] = "#app"
    response.headers["HX-Reswap"] = "outerHTML"
    return response


def _input_order(form: BuildForm) -> list[str]:
    names = []
    for item in form.items:
        if hasattr(item, "groups"):
            names.append(item.name)
            names.extend(f.name for group in item.groups for f in group.fields)
        else:
            names.append(item.name)
    return names


def _form_failure(request: Request, form: BuildForm, status_code: int = 422) -> Response:
    """The form with its errors, what was typed kept: for htmx a 200 (the form re-rendered in
    place, so the browser logs no failed load) with ``X-Form-Errors``; for a plain form post the
    whole page with ``status_code``."""
    if wants_html(request):
        response = _form_response(request, form, status_code=200)
        response.headers["X-Form-Errors"] = str(form.error_count)
        return response
    record = _latest_or_seed(request)
    return _page(request, record, status_code=status_code, form=form)


# Fragments of a module --------------------------------------------------------------------


@router.get("/m/{module_id}/tree", response_class=HTMLResponse)
def tree_fragment(
    request: Request,
    module_id: str,
    path: str = Query("", max_length=MAX_PATH_LENGTH),
    offset: int = Query(0, ge=0, le=10_000_000),
    stop: int | None = Query(None, ge=0, le=10_000_000),
) -> Response:
    """The children of the node at ``path`` from ``offset`` (to ``stop``: a folded run), as
    tree items (lazy loading); their own identical runs are folded unless they are a run
    being opened."""
    record = _record_or_404(request, module_id)
    model = _services(request).store.load(record)
    node, roles, static_field = subtree(model, path)
    if static_field:
        raise PlaygroundError(422, f"{path!r} is a static field; it has no children.")
    described = describe_tree(
        node,
        path=path,
        roles=roles,
        max_nodes=FRAGMENT_MAX_NODES,
        children_offset=offset,
        children_stop=stop,
        fold=stop is None,
        stats=True,
    )
    return templates.TemplateResponse(
        request,
        "partials/tree_children.html",
        {"node": described, "module": record, "open_depth": 0, "focus_first": offset > 0},
    )


@router.get("/m/{module_id}/tree-view", response_class=HTMLResponse)
def tree_view_fragment(
    request: Request, module_id: str, focus: str = Query("", max_length=MAX_PATH_LENGTH)
) -> Response:
    """The whole tree view again: after an edit, or landed on ``focus`` (the search box): every
    node on the way open, the target in view with the keyboard focus, no paging."""
    record = _record_or_404(request, module_id)
    model = _services(request).store.load(record)
    focus = focus.strip()
    try:
        tree = describe_tree(
            model,
            roles=model_roles(model),
            max_nodes=PAGE_MAX_NODES,
            fold=True,
            stats=True,
            focus=focus or None,
        )
    except TreePathError as error:
        return templates.TemplateResponse(
            request,
            "partials/tree_search_miss.html",
            {"message": str(error), "module": record},
        )
    return templates.TemplateResponse(
        request,
        "partials/tree_view.html",
        {"tree": tree, "module": record, "open_depth": _open_depth(tree), "found": focus},
    )


@router.get("/m/{module_id}/leaf", response_class=HTMLResponse)
def leaf_fragment(
    request: Request, module_id: str, path: str = Query(..., max_length=MAX_PATH_LENGTH)
) -> Response:
    """An array leaf's statistics and figure."""
    record = _record_or_404(request, module_id)
    model = _services(request).store.load(record)
    array = array_at(model, path)
    stats = array_stats(array)
    title = f"{path or 'model'}: {array_summary(array)}"
    return templates.TemplateResponse(
        request,
        "partials/leaf.html",
        {
            "module": record,
            "path": path,
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "size": int(array.size),
            "stats": stats,
            "figure": array_figure(array, title),
        },
    )


@router.get("/m/{module_id}/values", response_class=HTMLResponse)
def values_fragment(
    request: Request, module_id: str, path: str = Query(..., max_length=MAX_PATH_LENGTH)
) -> Response:
    """An array leaf's values (cut to ``leaf_values_limit``) as a table."""
    record = _record_or_404(request, module_id)
    services = _services(request)
    model = services.store.load(record)
    array = array_at(model, path)
    limit = services.settings.leaf_values_limit
    payload = array_payload(array, limit)
    return templates.TemplateResponse(
        request,
        "partials/leaf_values.html",
        {
            "module": record,
            "path": path,
            "leaf": payload,
            "table": values_table(payload),
            "limit": limit,
        },
    )


def values_table(payload: dict) -> dict:
    """The values of a leaf payload as a table: column headers and ``(row header, cells)``.

    A 1-D array is one column; higher ranks are rows indexed by all axes but the last.
    """
    shape = payload["kept_shape"]
    values = payload["values"]
    if len(shape) == 0:
        return {"columns": ["value"], "rows": [("", [values])]}
    if len(shape) == 1:
        return {"columns": ["value"], "rows": [(str(i), [v]) for i, v in enumerate(values)]}
    rows = []

    def walk(node: Any, index: tuple[int, ...]) -> None:
        if len(index) == len(shape) - 1:
            header = str(index[0]) if len(index) == 1 else "(" + ", ".join(map(str, index)) + ")"
            rows.append((header, node))
            return
        for i, child in enumerate(node):
            walk(child, (*index, i))

    walk(values, ())
    return {"columns": [str(j) for j in range(shape[-1])], "rows": rows}


@router.post("/m/{module_id}/delete")
def delete_module_page(request: Request, module_id: str) -> Response:
    """Delete the module, then show the workspace's newest one (or a fresh seed example)."""
    record = _record_or_404(request, module_id)
    _services(request).store.delete(record)
    target = _latest_or_seed(request)
    return RedirectResponse(f"/m/{target.id}", status_code=303)
