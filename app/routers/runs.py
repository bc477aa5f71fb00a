"""Runs: grad, vmap and jit live on a module, with the code, the jaxpr, the HLO and a figure.

- ``POST /api/modules/{id}/run`` (JSON :class:`~app.runs.spec.RunRequest`): run a function of
  the module through a pipeline of transformations; answers the output tree, its values, a
  plotly figure, the timings, whether this call compiled, the jaxpr, the StableHLO text, the
  cost analysis, the device and the equivalent Python. ``?include=values,plot`` sends only
  the named heavy parts (of ``output, values, plot, code, jaxpr, hlo, warnings``; the rest is
  always sent); ``?include=none`` sends none of them (timings, cost and the cache's verdict
  only: the result's values are then never read, not even for NaN).
- ``POST /api/modules/{id}/sweep`` (JSON :class:`~app.runs.spec.SweepRequest`): ``f`` and its
  derivative along one input coordinate, computed with ``vmap`` of ``grad``.
- ``GET /api/runs/{run_id}``, ``POST /api/runs/{run_id}/cancel``: a run in progress, by the
  ``run_id`` its client chose (``?run_id=`` of the run and sweep endpoints, the ``run_id``
  field of the panel's forms): its stage and elapsed time; cancel it.
- ``POST /m/{id}/run``, ``POST /m/{id}/run/form``, ``POST /m/{id}/sweep``: the run panel's
  htmx fragments (the form with its result; the form alone after a pipeline edit; a sweep).

Every computation takes one of the server's compute slots and runs in a worker process (see
``app.runs.service``); a request whose client goes away is cancelled (:func:`_watched`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Literal

from fastapi import APIRouter, Body, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from app.errors import PlaygroundError
from app.runs.panel import render_form, render_run, render_sweep
from app.runs.results import (
    FIELDS,
    FastJSONResponse,
    quick_to_answer,
    run_payload,
    sweep_payload,
)
from app.runs.service import (
    cancel_run,
    compile_scope,
    reset_compiled,
    run_handle,
    run_status,
    run_stored,
    run_stored_async,
)
from app.runs.spec import RunRequest, SweepRequest
from app.services import Services
from app.store import ModuleRecord

router = APIRouter(tags=["runs"])


def parse_include(include: str | None) -> frozenset[str] | None:
    if include is None or include.strip() in ("", "all"):
        return None
    if include.strip() == "none":
        return frozenset()
    names = frozenset(part.strip() for part in include.split(",") if part.strip())
    unknown = sorted(names - set(FIELDS))
    if unknown:
        raise PlaygroundError(
            422,
            f"include names parts of the answer to send: {', '.join(FIELDS)}; "
            f"{', '.join(repr(u[:20]) for u in unknown[:3])} is not one of them",
            field="query.include",
        )
    return names


class Timings(BaseModel):
    trace_ms: float = Field(description="Tracing and lowering; 0 when a compiled run was reused.")
    compile_ms: float = Field(description="XLA compilation; 0 when a compiled run was reused.")
    run_ms: float = Field(description="Median of recent warm calls (block_until_ready).")


class RunOut(BaseModel):
    """The answer of a run (documentation of the JSON; see ``app.runs.results``)."""

    output: dict | None = Field(description="The result as a tree node (see GET /api/modules).")
    values: Any = Field(
        description="Nested lists of a single array, or {keystr path: nested lists} for a tree; "
        'each cut to leaf_values_limit elements. NaN and infinities are "NaN", "Infinity".'
    )
    truncated: bool = Field(description="Whether any array's values were cut.")
    timings: Timings
    compiled: bool = Field(description="Whether this call compiled (else it reused a compile).")
    compile_scope: Literal["now", "workspace", "server"] = Field(
        description="now: this call compiled; workspace: reused, compiled before by your "
        "workspace (or room); server: reused, compiled for someone else on this server."
    )
    eager_ms: float | None = Field(
        description="The pipeline without jit run op by op, as JAX runs it in a script: its "
        "per-call time in ms (median of recent calls). For a pipeline with jit, the same "
        "pipeline without it. null when not measured (eager_note says why)."
    )
    eager_note: str | None = Field(description="Why eager_ms was not measured, if it was not.")
    compiles: int = Field(description="Compilations since the server started.")
    jaxpr: str | None = Field(description="The jaxpr of the run (jax.make_jaxpr).")
    hlo: str | None = Field(description="The lowered StableHLO text.")
    cost: dict | None = Field(description="{flops, bytes_accessed} from XLA's cost analysis.")
    device: str = Field(description="The device the run used.")
    code: str | None = Field(description="Python equivalent to the run, after the module's code.")
    plot: dict | None = Field(description="A plotly figure (JSON).")
    warnings: list[str] | None = Field(
        description="NaN or infinity in the result, and the like (None when not included: "
        "finding them reads every value of the result)."
    )
    cache_key_changes: list[str] = Field(
        description="What changed in the compile key since the previous run (of this module, "
        "else of the workspace): 'input shape (5, 2) -> (6, 2)'."
    )
    function: str = Field(description="The run in one line of JAX.")


class SweepOut(BaseModel):
    """The answer of a sweep."""

    coordinate: int
    x: list[float]
    f: list[Any]
    df: list[Any]
    timings: Timings
    compiled: bool
    compiles: int
    plot: dict | None
    code: str | None
    warnings: list[str] | None


def _answer(services, workspace, module_id, body: RunRequest | SweepRequest, parts, handle):
    record = services.store.find(workspace, module_id)
    outcome, spec = run_stored(
        services,
        record,
        body,
        compile_scope=compile_scope(services, workspace),
        with_input=False,
        shows=parts,
        handle=handle,
    )
    if isinstance(body, SweepRequest):
        return FastJSONResponse(sweep_payload(outcome, spec, parts))
    return FastJSONResponse(run_payload(outcome, spec, services.settings, parts))


DISCONNECT_POLL_SECONDS = 0.1
"""How often a request waiting for its run checks that its client is still there."""


async def _watched(request: Request, handle: Any, work: Awaitable) -> Any:
    """Await ``work``; if the client goes away meanwhile, the run is cancelled (its worker
    stopped), so nobody's computation outlives the wait for it."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
        if done:
            return task.result()
        if not handle.cancelled and await request.is_disconnected():
            handle.cancel()


async def _answer_in_thread(
    request: Request, module_id: str, body, context: tuple | None = None
) -> FastJSONResponse:
    """Read the query (unless ``context`` has it: :func:`_run_context`), then run or sweep in
    the thread pool, in one trip, watched."""
    parts, services, workspace, handle = context or _run_context(request)
    work = run_in_threadpool(_answer, services, workspace, module_id, body, parts, handle)
    return await _watched(request, handle, work)


async def _answer_run(request: Request, module_id: str, body: RunRequest) -> FastJSONResponse:
    """A run, from the event loop when the module's record is one read of the local database
    away (``ModuleStore.reads_at_once``): the loop sends it to a free worker and awaits the
    answer, with no thread between them; otherwise as :func:`_answer_in_thread`."""
    context = _run_context(request)
    parts, services, workspace, handle = context
    if not services.store.reads_at_once(workspace):
        return await _answer_in_thread(request, module_id, body, context)
    record = services.store.find(workspace, module_id)
    scope = compile_scope(services, workspace)
    work = run_stored_async(services, record, body, scope, shows=parts, handle=handle)
    outcome, spec = await _watched(request, handle, work)
    if quick_to_answer(outcome):
        return FastJSONResponse(run_payload(outcome, spec, services.settings, parts))
    return await run_in_threadpool(
        lambda: FastJSONResponse(run_payload(outcome, spec, services.settings, parts))
    )


def _run_context(request: Request) -> tuple[frozenset[str], Services, str, Any]:
    """The parts the answer shows (``include``, by name: the worker then sends them, never
    the result's tree), the services, the workspace and the run's task handle (registered
    under ``run_id`` when the query gives one)."""
    parts = parse_include(_query(request, "include"))
    parts = frozenset(FIELDS) if parts is None else parts
    run_id = _query(request, "run_id")
    services: Services = request.app.state.services
    workspace = request.state.workspace
    return parts, services, workspace, run_handle(services, workspace, run_id, "query.run_id")


QUERY = {
    "include": (
        200,
        "Comma-separated heavy parts to send (default all): output, values, plot, code, "
        "jaxpr, hlo, warnings; or none.",
    ),
    "run_id": (
        64,
        "An id of your choosing (1 to 64 letters, digits, - or _, e.g. a UUID) to follow the "
        "run while it runs (GET /api/runs/{run_id}) or cancel it "
        "(POST /api/runs/{run_id}/cancel).",
    ),
}
"""The run endpoints' query parameters: their longest length and what they mean. They are read
by :func:`_query`, not declared to FastAPI, whose per-request work for declared parameters
costs more than a small run's trip to its worker; ``openapi_extra`` documents them."""
QUERY_DOCS = {
    "parameters": [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": "string", "maxLength": limit},
        }
        for name, (limit, description) in QUERY.items()
    ]
}


def _query(request: Request, name: str) -> str | None:
    """The query parameter ``name`` of :data:`QUERY`, or None; a 422 past its length."""
    value = request.query_params.get(name)
    limit = QUERY[name][0]
    if value is not None and len(value) > limit:
        raise PlaygroundError(
            422,
            f"The query parameter {name} is {len(value)} characters long; at most {limit}.",
            field=f"query.{name}",
        )
    return value


RUN_ERRORS = {
    404: {"description": "No such module here."},
    409: {"description": "The run was cancelled (POST /api/runs/{run_id}/cancel)."},
    422: {
        "description": "Refused before it ran, or stopped at a limit (max_run_seconds, "
        "worker_memory_mb: the message names the limit, its value and the stage reached)."
    },
    503: {"description": "Every worker stayed busy, or the worker died: retry after Retry-After."},
}


# The endpoints are ``async`` and hand their whole work to the thread pool in one step: sync
# dependencies would each take a trip through the pool, which costs more than a small run.
@router.post(
    "/api/modules/{module_id}/run",
    responses={200: {"model": RunOut}, **RUN_ERRORS},
    openapi_extra=QUERY_DOCS,
)
async def run_module(
    module_id: str,
    request: Request,
    body: RunRequest = Body(default_factory=RunRequest),  # noqa: B008
) -> FastJSONResponse:
    """Run the module's forward pass or a loss through grad, vmap, jit, jacfwd, jacrev."""
    return await _answer_run(request, module_id, body)


@router.post(
    "/api/modules/{module_id}/sweep",
    responses={200: {"model": SweepOut}, **RUN_ERRORS},
    openapi_extra=QUERY_DOCS,
)
async def sweep_module(
    module_id: str,
    request: Request,
    body: SweepRequest = Body(default_factory=SweepRequest),  # noqa: B008
) -> FastJSONResponse:
    """f (a scalar loss) and df/dx_i along one coordinate of a scalar or vector input."""
    return await _answer_in_thread(request, module_id, body)


class RunStatusOut(BaseModel):
    run_id: str
    stage: str = Field(
        description="waiting (for a worker), starting, tracing, compiling, running, done, or "
        "cancelled."
    )
    elapsed: float = Field(description="Seconds since the run was sent.")


RUN_STATUS_ERRORS = {404: {"description": "No run with this id in your workspace."}}


@router.get("/api/runs/{run_id}", response_model=RunStatusOut, responses=RUN_STATUS_ERRORS)
def get_run(run_id: str, request: Request) -> dict:
    """A run of your workspace by the run_id you gave it: its stage and elapsed seconds."""
    services: Services = request.app.state.services
    return run_status(services, request.state.workspace, run_id)


@router.post("/api/runs/{run_id}/cancel", response_model=RunStatusOut, responses=RUN_STATUS_ERRORS)
def cancel_run_endpoint(run_id: str, request: Request) -> dict:
    """Cancel a run of your workspace by its run_id: its worker is stopped (killed if it is
    compiling) and the run's request answers 409, cancelled. A run that ended is left as it
    was."""
    services: Services = request.app.state.services
    return cancel_run(services, request.state.workspace, run_id)


class CompiledResetOut(BaseModel):
    scope: str = Field(description="The scope whose view was reset: workspace:<id>.")


@router.post("/api/runs/compiled/reset", response_model=CompiledResetOut)
def reset_compiled_view(request: Request) -> dict:
    """Reset your workspace's "compiled here" view: the next run of each function compiles
    again (compile_scope "now"), even if someone else compiled it meanwhile. A workspace in a
    room runs in the room's scope, which only the presenter resets
    (``POST /api/rooms/{room}/reset-compiled``)."""
    services: Services = request.app.state.services
    return {"scope": reset_compiled(services, request.state.workspace)}


# ------------------------------------------------------------------------------------------
# The run panel (htmx)


async def _pairs(request: Request) -> list[tuple[str, str]]:
    form = await request.form()
    return [(key, value) for key, value in form.multi_items() if isinstance(value, str)]


def _record(request: Request, module_id: str) -> ModuleRecord:
    services: Services = request.app.state.services
    return services.store.find(request.state.workspace, module_id)


def _fragment_handle(request: Request, pairs: list[tuple[str, str]]) -> Any:
    services: Services = request.app.state.services
    run_id = dict(pairs).get("run_id", "").strip() or None
    return run_handle(services, request.state.workspace, run_id, "run_id")


@router.post("/m/{module_id}/run", response_class=HTMLResponse, include_in_schema=False)
async def run_fragment(request: Request, module_id: str) -> Response:
    """Run the panel's form (or a preset) and answer the panel with the result."""
    pairs = await _pairs(request)
    record = _record(request, module_id)
    handle = _fragment_handle(request, pairs)
    return await _watched(
        request, handle, run_in_threadpool(render_run, request, record, pairs, handle)
    )


@router.post("/m/{module_id}/run/form", response_class=HTMLResponse, include_in_schema=False)
async def run_form_fragment(request: Request, module_id: str) -> Response:
    """The panel's form after a pipeline edit (add, remove, move a step)."""
    pairs = await _pairs(request)
    record = _record(request, module_id)
    return await run_in_threadpool(render_form, request, record, pairs)


@router.post(
    "/m/{module_id}/run/compiled-reset", response_class=HTMLResponse, include_in_schema=False
)
def reset_compiled_fragment(request: Request, module_id: str) -> HTMLResponse:
    """The run panel's reset button: a line saying the next runs compile again."""
    _record(request, module_id)
    services: Services = request.app.state.services
    reset_compiled(services, request.state.workspace)
    if services.rooms.compile_room(request.state.workspace) is not None:
        return HTMLResponse(
            '<p class="run-compiled-reset" role="status">You are in a room: what the room '
            "compiled is shared, and only the presenter can make it compile again.</p>"
        )
    return HTMLResponse(
        '<p class="run-compiled-reset" role="status">Done: the next run of each function '
        "compiles again for this workspace, as if it were the first.</p>"
    )


@router.post("/m/{module_id}/sweep", response_class=HTMLResponse, include_in_schema=False)
async def sweep_fragment(request: Request, module_id: str) -> Response:
    """A sweep of the panel's sweep form."""
    pairs = await _pairs(request)
    record = _record(request, module_id)
    handle = _fragment_handle(request, pairs)
    return await _watched(
        request, handle, run_in_threadpool(render_sweep, request, record, pairs, handle)
    )
