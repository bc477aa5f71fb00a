"""The run panel of a module's page: its context, and the htmx fragments it posts to.

``templates/partials/run_panel.html`` is included by the module page with ``run_panel``, the
presets and the default form of :func:`run_panel_context`. The fragments:

- ``partials/run_body.html``: the presets, the form and the result (``POST /m/{id}/run``);
- ``partials/run_form.html``: the form alone, after a pipeline edit (``POST /m/{id}/run/form``);
- ``partials/run_sweep_result.html``: a sweep (``POST /m/{id}/sweep``).

A refused, stopped or cancelled run answers the same fragment with the message in plain words
where the result goes (``role="alert"``, :func:`refusal`), never a stack trace. The JSON API
answers such a run with a 4xx; the panel's fragment is a 200, since showing the message is what
the page asked for (a 4xx would also be an error in the browser's console). Errors answered
before this code runs (too large, too many at once) are swapped into the result area by
``static/playground.js`` (``data-error-target``).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.errors import PlaygroundError, describe_validation_errors
from app.modules import model_roles
from app.runs.results import FIELDS, run_payload, sweep_payload
from app.runs.service import compile_scope, run_stored
from app.runs.spec import MAX_TRANSFORMS, TRANSFORMS, SweepRequest
from app.runs.view import (
    INITS,
    MAX_ROWS,
    TRANSFORM_TITLES,
    RunForm,
    input_change,
    input_view,
    presets,
    result_rows,
    step_action,
)
from app.services import Services
from app.store import ModuleRecord
from app.templating import templates
from app.text import dims_text
from app.trees import describe_tree

PANEL_PARTS = frozenset(FIELDS) - {"values"}
"""The panel shows the result's tree, figure, code, jaxpr and HLO; the values are the API's."""


def _services(request: Request) -> Services:
    return request.app.state.services


def _simple(services: Services, model: Any) -> bool:
    return services.runs.structures.get(model).simple


def _sweep_allowed(spec: Any) -> bool:
    example = tuple(spec.example_input_shape())
    if getattr(spec, "input_dtype", "float32") != "float32":
        return False
    return len(example) <= 1 or (getattr(spec, "batched_input", False) and len(example) == 2)


def run_panel_context(module: ModuleRecord, spec: Any, model: Any, services: Services) -> dict:
    """What the panel needs on the module page: the default form (the seed's grad) and the
    presets."""
    items = presets(spec, _simple(services, model))
    form = copy.deepcopy(items[0].form)
    form.preset = None
    return _context(module, spec, form, items)


def _context(module, spec, form: RunForm, items) -> dict:
    return {
        "module": module,
        "spec": spec,
        "form": form,
        "presets": items,
        "transforms": TRANSFORMS,
        "transform_titles": TRANSFORM_TITLES,
        "inits": INITS,
        "max_transforms": MAX_TRANSFORMS,
        "example_shape": dims_text(spec.example_input_shape()),
        "input_dtype": getattr(spec, "input_dtype", "float32"),
        "sweep_allowed": _sweep_allowed(spec),
        "run_status_url": RUN_STATUS_URL,
    }


def _run(request: Request, record: ModuleRecord, form: RunForm, handle: Any) -> dict:
    services = _services(request)
    body = form.request()
    outcome, spec = run_stored(
        services,
        record,
        body,
        compile_scope=compile_scope(services, record.workspace),
        handle=handle,
    )
    model = services.store.load(record)
    payload = run_payload(outcome, spec, services.settings, PANEL_PARTS)
    model_node = describe_tree(model, roles=model_roles(model), max_nodes=MAX_ROWS)
    view = result_rows(outcome, payload["output"], model_node, body.wrt)
    return {
        "payload": payload,
        "view": view,
        "outcome": outcome,
        "request_body": body,
        "input": input_view(outcome.input),
    }


def _fragment_status(status: int) -> int:
    """A refused run is an answer the panel shows (200, the message in ``role="alert"``);
    only "busy" (503) and "gone" (404) keep their status."""
    return status if status in (404, 503) else 200


RUN_STATUS_URL = "/api/runs/"
"""Where the page asks a run's stage (``GET /api/runs/{run_id}``, static/runs.js)."""
LIMIT_SETTINGS = frozenset({"max_run_seconds", "worker_memory_mb"})
"""The limits a computation is stopped at while it runs (the others refuse it before)."""


def refusal(error: PlaygroundError, what: str) -> dict:
    """What the result area says when a run or a sweep (``what``) has no result: a title in
    plain words, the server's message and what to do next (``partials/run_error.html``)."""
    status = error.status_code
    if status == 409:
        kind, title = "cancelled", f"You cancelled this {what}."
        hint = (
            "Run it again when you are ready, or make it cheaper first: a smaller input, "
            "fewer layers or fewer transformations."
        )
    elif status == 429:
        kind, title = "too-many", "Too many at once."
        hint = f"Wait for your other runs to end (or cancel one), then try this {what} again."
    elif status == 503:
        kind, title = "busy", "The server is busy."
        hint = f"Nothing is wrong with your {what}: try again in a few seconds."
    elif status == 404:
        kind, title = "gone", "This module is no longer here."
        hint = "Open it again from your modules, or build it again."
    elif error.field in LIMIT_SETTINGS:
        kind, title, hint = "limit", f"This {what} was stopped at a limit.", None
    else:
        kind, title, hint = "refused", f"This {what} cannot be done.", None
    return {"error": error.message, "error_title": title, "error_hint": hint, "error_kind": kind}


def render_run(
    request: Request, record: ModuleRecord, pairs: list[tuple[str, str]], handle: Any = None
) -> Response:
    """Run the form, or the preset its button names; the panel with the result or the error.
    ``handle``: the worker pool's task handle (the page follows and cancels it by run_id)."""
    services = _services(request)
    spec = record.spec()
    model = services.store.load(record)
    items = presets(spec, _simple(services, model))
    fields = dict(pairs)
    action = fields.get("action", "run")[:60]
    form = RunForm.from_pairs(pairs)
    focus = "run-result"  # focusing the result scrolls it into view
    change = None
    if action.startswith("preset-"):
        chosen = [p for p in items if p.name == action[len("preset-") :]]
        if chosen:
            before = form if "init" in fields else None  # the form as it was (hx-include)
            form = copy.deepcopy(chosen[0].form)
            change = input_change(before, form, dims_text(spec.example_input_shape()))
    context = _context(record, spec, form, items)
    context["input_change"] = change
    context["request"] = request
    context["focus"] = focus
    status = 200
    try:
        context.update(_run(request, record, form, handle))
    except ValueError as error:
        context.update(error=str(error), error_title="The form has a problem:", error_kind="form")
    except PlaygroundError as error:
        context.update(refusal(error, "run"))
        status = _fragment_status(error.status_code)
    headers = {"Retry-After": "2"} if status == 503 else None
    return templates.TemplateResponse(
        request, "partials/run_body.html", context, status_code=status, headers=headers
    )


def render_form(request: Request, record: ModuleRecord, pairs: list[tuple[str, str]]) -> Response:
    """The form after a pipeline button (add, remove-i, up-i, down-i)."""
    services = _services(request)
    spec = record.spec()
    model = services.store.load(record)
    form = RunForm.from_pairs(pairs)
    action = dict(pairs).get("action", "")[:40]
    form.edit(action)
    form.transforms = [t for t in form.transforms if t in TRANSFORMS][:MAX_TRANSFORMS]
    context = _context(record, spec, form, presets(spec, _simple(services, model)))
    context["request"] = request
    context["focus"] = _focus_after_edit(action, len(form.transforms))
    return templates.TemplateResponse(request, "partials/run_form.html", context)


def _focus_after_edit(action: str, steps: int) -> str:
    """The control that keeps the keyboard focus after a pipeline button."""
    name, index = step_action(action)
    index = index or 0
    if name == "add":
        return f"run-step-{steps - 1}" if steps else "run-add-step"
    if name == "up":
        return f"run-step-{max(0, index - 1)}"
    if name == "down":
        return f"run-step-{min(steps - 1, index + 1)}"
    if name == "remove" and steps:
        return f"run-step-{min(index, steps - 1)}"
    return "run-add-step"


def render_sweep(
    request: Request, record: ModuleRecord, pairs: list[tuple[str, str]], handle: Any = None
) -> Response:
    """A sweep of f = loss and df/dx_i along one coordinate, as a figure."""
    services = _services(request)
    fields = dict(pairs)
    context: dict[str, Any] = {"request": request, "module": record}
    status = 200
    try:
        data = {
            key: fields[key].strip()
            for key in ("coordinate", "start", "stop", "points", "loss")
            if fields.get(key, "").strip()
        }
        body = SweepRequest.model_validate(data)
        outcome, spec = run_stored(services, record, body, with_input=False, handle=handle)
        context["sweep"] = sweep_payload(outcome, spec)
    except ValidationError as error:
        context.update(
            error=describe_validation_errors(error.errors()),
            error_title="The sweep form has a problem:",
            error_kind="form",
        )
    except PlaygroundError as error:
        context.update(refusal(error, "sweep"))
        status = _fragment_status(error.status_code)
    return templates.TemplateResponse(
        request, "partials/run_sweep_result.html", context, status_code=status
    )
