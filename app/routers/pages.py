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

Every page and fragment renders through the one environment of ``app.templating``.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.catalog import CATALOG, SEED_KIND, UnknownKind, params_from_form, parse_spec
from app.devices import device_label
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
from app.modules import array_at, build_module, check_limits, model_roles, subtree
from app.pages import (
    FRAGMENT_MAX_NODES,
    PAGE_MAX_NODES,
    input_order,
    latest_or_seed,
    module_context,
    open_depth,
    values_table,
)
from app.plots import array_figure
from app.services import Services, get_workspace
from app.store import ModuleRecord
from app.templating import templates
from app.text import array_summary
from app.trees import (
    MAX_PATH_LENGTH,
    TreePathError,
    array_payload,
    array_stats,
    describe_tree,
)

router = APIRouter(include_in_schema=False)


# Context ----------------------------------------------------------------------------------


def _services(request: Request) -> Services:
    return request.app.state.services


def _module_context(request: Request, record: ModuleRecord, **kwargs) -> dict:
    services, workspace = _services(request), request.state.workspace
    return {"request": request, **module_context(services, workspace, record, **kwargs)}


def _page(request: Request, record: ModuleRecord, status_code: int = 200, **kwargs) -> Response:
    context = _module_context(request, record, **kwargs)
    return templates.TemplateResponse(request, "module.html", context, status_code=status_code)


def _record_or_404(request: Request, module_id: str) -> ModuleRecord:
    return _services(request).store.find(request.state.workspace, module_id)


# Pages ------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    """The newest module of the workspace; a new visitor's is the seed's example."""
    record = latest_or_seed(_services(request), request.state.workspace)
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
            record = latest_or_seed(_services(request), request.state.workspace)
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
        first = next((name for name in input_order(form) if name in by_field), None)
        focus = "f-" + first.replace(".", "-") if first else "form-errors"
        form = build_form(kind, shown, by_field, loose, focus=focus)
        return _form_failure(request, form)
    except PlaygroundError as error:
        form = build_form(kind, shown, {}, [error.message], focus="form-errors")
        return _form_failure(request, form, error.status_code)
    if not wants_html(request):
        return RedirectResponse(f"/m/{record.id}", status_code=303)
    context = _module_context(request, record)
    response = templates.TemplateResponse(request, "partials/app.html", context)
    response.headers["HX-Push-Url"] = f"/m/{record.id}"
    response.headers["HX-Retarget"] = "#app"
    response.headers["HX-Reswap"] = "outerHTML"
    return response


def _form_failure(request: Request, form: BuildForm, status_code: int = 422) -> Response:
    """The form with its errors, what was typed kept: for htmx a 200 (the form re-rendered in
    place, so the browser logs no failed load) with ``X-Form-Errors``; for a plain form post the
    whole page with ``status_code``."""
    if wants_html(request):
        response = _form_response(request, form, status_code=200)
        response.headers["X-Form-Errors"] = str(form.error_count)
        return response
    record = latest_or_seed(_services(request), request.state.workspace)
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
        {"tree": tree, "module": record, "open_depth": open_depth(tree), "found": focus},
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


@router.post("/m/{module_id}/delete")
def delete_module_page(request: Request, module_id: str) -> Response:
    """Delete the module, then show the workspace's newest one (or a fresh seed example)."""
    record = _record_or_404(request, module_id)
    _services(request).store.delete(record)
    target = latest_or_seed(_services(request), request.state.workspace)
    return RedirectResponse(f"/m/{target.id}", status_code=303)
