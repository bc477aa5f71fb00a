"""What the pytree operations answer and show: the work the API's endpoints and the module
page's fragments do (loading the module, a compute slot, storing new modules and revisions)
and the fragments' contexts.

``app.routers.pytree_ops`` parses, calls these and answers.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from pydantic import ValidationError

from app import pytree_ops
from app.errors import PlaygroundError
from app.modules import model_roles, module_out
from app.plots import array_figure, bar_figure, heatmap_figure, scalar_figure
from app.runs.spec import RunRequest
from app.services import Services
from app.store import ModuleRecord, serialise_leaves

MAX_COMPARE_TEXT = 20_000
"""Characters of ``b`` in a compare (a run request as JSON)."""


def _model(services: Services, record: ModuleRecord) -> Any:
    """The module of ``record``, loaded (cached by the store)."""
    return services.store.load(record)


def flatten_answer(services: Services, record: ModuleRecord, offset: int, limit: int) -> dict:
    """The API's flatten: a page of leaves (without their summaries) and the treedef."""
    model = _model(services, record)
    answer = pytree_ops.flatten(model, offset, limit)
    for leaf in answer["leaves"]:
        leaf.pop("summary", None)
    return answer


def partition_answer(services: Services, record: ModuleRecord, name: str) -> dict:
    """The API's partition: the two trees ``eqx.partition`` makes with filter ``name``."""
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


def edit_module(services: Services, record: ModuleRecord, body: Any):
    """Edit the leaf (``body``: ``path``, ``index``, ``value``, ``expression``, as the edit
    API takes them) and store the result as the module's next revision."""
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


def edit_answer(services, record, model, words: str) -> dict:
    """The edit API's answer: the module, its revision, how many undos it has, the edit."""
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
            outcome = services.runs.run(a.spec(), a, request, with_input=False)
        words = " ∘ ".join(reversed(request.transforms)) or "forward"
        return outcome.result, f"the result of run {words} on module {a.id}"
    record = services.store.find(workspace, b, field="query.b")
    return services.store.load(record), f"module {record.id}"


def compare_answer(services: Services, workspace: str, a: str, b: str) -> dict:
    """The API's compare of module ``a`` with ``b`` (a module id or ``run:{json}``)."""
    first = services.store.find(workspace, a, field="query.a")
    other, _ = compare_target(services, workspace, first, b)
    return pytree_ops.compare(services.store.load(first), other)


def find_chain(services: Services, record: ModuleRecord, path: str) -> list[dict]:
    """The API's find: the nodes from the root to ``path``."""
    model = _model(services, record)
    return pytree_ops.chain(model, path, model_roles(model))


FLATTEN_ROWS = 200
"""Leaves listed per page of the flatten table."""
PAGE_TREE_NODES = 300
"""Nodes rendered per side of a partition on the page."""
BAR_LEAVES = 40
"""Leaves shown as bars in a comparison (the table lists them all)."""


def flatten_context(services: Services, record: ModuleRecord, offset: int) -> dict:
    """What the flatten fragment needs: a page of leaves, the counts, treedef and round trip."""
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


def partition_context(services: Services, record: ModuleRecord, name: str) -> dict:
    """What the partition fragment needs: the two trees side by side, and the code."""
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


def _bars(result: dict, title: str) -> dict | None:
    """The largest difference per leaf as bars (the first ``BAR_LEAVES`` leaves)."""
    leaves = result["leaves"][:BAR_LEAVES]
    if not leaves:
        return None
    return bar_figure(
        [leaf["path"] for leaf in leaves],
        [leaf["max_abs"] for leaf in leaves],
        title,
        value_title="max |a − b|",
    )


def map_context(services: Services, record: ModuleRecord, expression: str, name: str) -> dict:
    """Apply the tree_map (a new module); what its fragment shows beside the original."""
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


def edit_context(services: Services, record: ModuleRecord, body: Any) -> dict:
    """What ``ops_edit_result.html`` needs after an edit: the new revision, and the output
    and gradient before and after."""
    before = services.store.load(record)
    new_record, new_model, edited = edit_module(services, record, body)
    with services.compute.slot():
        return _effects_context(
            services, record, before, new_record, new_model, body.path, edited.note, edited.code
        )


def undo_context(services: Services, record: ModuleRecord) -> dict:
    """Undo the last edit; what the edit fragment shows of it (before and after)."""
    before = services.store.load(record)
    new_record, note = services.store.undo(record)
    after = services.store.load(new_record)
    changed = [leaf for leaf in pytree_ops.compare(before, after)["leaves"] if leaf["max_abs"]]
    path = changed[0]["path"] if changed else ""
    with services.compute.slot():
        return _effects_context(
            services, record, before, new_record, after, path, f"undid: {note.note}", None
        )


def compare_context(services: Services, workspace: str, record: ModuleRecord, b: str) -> dict:
    """What the compare fragment needs: the result, ``b`` in words, and the bars."""
    other, label = compare_target(services, workspace, record, b)
    result = pytree_ops.compare(services.store.load(record), other)
    return {
        "module": record,
        "other_label": label,
        "result": result,
        "figure": _bars(result, "The largest difference per leaf"),
    }


def map_answer(services: Services, record: ModuleRecord, expression: str, name: str) -> dict:
    """The API's answer to a tree_map: the new module."""
    new_record, new_model, _, notices = map_module(services, record, expression, name)
    return module_out(new_record, new_model, notices)


def edit_module_answer(services: Services, record: ModuleRecord, body: Any) -> dict:
    """The API's answer to an edit: the module's new revision."""
    new_record, new_model, edited = edit_module(services, record, body)
    return edit_answer(services, new_record, new_model, edited.note)


def undo_answer(services: Services, record: ModuleRecord) -> dict:
    """The API's answer to an undo: the module back before its last edit."""
    new_record, note = services.store.undo(record)
    model = services.store.load(new_record)
    return edit_answer(services, new_record, model, f"undid: {note.note}")
