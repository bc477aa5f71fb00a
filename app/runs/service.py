"""Runs and sweeps of a stored module: what the JSON API and the run panel share.

A run is a task of the worker pool (``services.runs``, ``app.runs.client``), which bounds how
many run at once and keeps a worker for light work; of the compute slots it takes only its
client address's (``services.compute.client_slot()``, ``max_computations_per_client``), so that
two heavy runs never hold the server-wide slots that building a module or a first page needs.
``services.runs`` remembers each run's key under the module's and the workspace's scopes, to say
what changed since the previous run.
"""

from __future__ import annotations

import re
from typing import Any

from app.errors import PlaygroundError
from app.runs.engine import RunOutcome
from app.runs.scopes import scope_of
from app.runs.spec import RunRequest, SweepRequest
from app.services import Services
from app.store import ModuleRecord


def run_scopes(record: ModuleRecord) -> list[tuple]:
    """Where a run's key is remembered, to say what changed since the previous run: the
    module's own previous run first, else the workspace's."""
    return [("module", record.workspace, record.id), ("your previous run", record.workspace)]


def run_stored(
    services: Services,
    record: ModuleRecord,
    body: RunRequest | SweepRequest,
    compile_scope: str | None = None,
    *,
    with_input: bool = True,
    shows: frozenset[str] | None = None,
    handle: Any = None,
) -> tuple[RunOutcome, Any]:
    """Run (a :class:`RunRequest`) or sweep (a :class:`SweepRequest`) the module of ``record``:
    ``(outcome, catalog spec)``. A run tells ``compile_scope``'s view of compiling
    (:func:`app.runs.scopes.scope_of`); ``with_input``: the outcome holds the input's values
    (the panel shows them); ``shows``: the parts of a run's answer that will be shown
    (``app.runs.results.FIELDS``; None: all), the worker sends nothing else;
    ``handle``: the pool's task handle (to follow or cancel it)."""
    spec = record.spec()
    services.runs.check_cost(spec, body)  # refused before a slot is taken
    scopes = run_scopes(record)
    with services.compute.client_slot():
        if isinstance(body, SweepRequest):
            outcome = services.runs.sweep(
                spec, record, body, scopes=scopes, with_input=with_input, handle=handle
            )
        else:
            outcome = services.runs.run(
                spec,
                record,
                body,
                scopes=scopes,
                compile_scope=compile_scope,
                with_input=with_input,
                shows=shows,
                handle=handle,
            )
    return outcome, spec


async def run_stored_async(
    services: Services,
    record: ModuleRecord,
    body: RunRequest,
    compile_scope: str | None = None,
    *,
    shows: frozenset[str] | None = None,
    handle: Any = None,
) -> tuple[RunOutcome, Any]:
    """:func:`run_stored` of a run from the event loop, without the input's values: the
    worker's answer is awaited there (``RunClient.run_async``)."""
    spec = record.spec()
    services.runs.check_cost(spec, body)
    with services.compute.client_slot():
        outcome = await services.runs.run_async(
            spec,
            record,
            body,
            scopes=run_scopes(record),
            compile_scope=compile_scope,
            with_input=False,
            shows=shows,
            handle=handle,
        )
    return outcome, spec


RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A run's id, chosen by the client (the page sends a fresh UUID with each run)."""


def run_handle(services: Services, workspace: str, run_id: str | None, field: str) -> Any:
    """A task handle for a run; registered under ``(workspace, run_id)`` when the client chose
    an id, so that ``GET /api/runs/{run_id}`` follows it and ``.../cancel`` stops it."""
    handle = services.workers.handle()
    if run_id:
        if not RUN_ID.fullmatch(run_id):
            raise PlaygroundError(
                422,
                f"run_id {run_id[:80]!r} is not an id this server takes: 1 to 64 letters, "
                "digits, - or _ (a UUID is one)",
                field=field,
            )
        services.workers.tracker.register(workspace, run_id, handle)
    return handle


def _tracked(services: Services, workspace: str, run_id: str) -> Any:
    handle = services.workers.tracker.get(workspace, run_id) if RUN_ID.fullmatch(run_id) else None
    if handle is None:
        raise PlaygroundError(
            404,
            f"No run {run_id[:80]!r} here: the id is unknown to this workspace, or its run "
            "ended long ago.",
            field="run_id",
        )
    return handle


def run_status(services: Services, workspace: str, run_id: str) -> dict:
    """A run's stage and the seconds since it was sent (404 for an id of no run here)."""
    handle = _tracked(services, workspace, run_id)
    stage = "cancelled" if handle.cancelled else handle.stage
    return {"run_id": run_id, "stage": stage, "elapsed": round(handle.elapsed, 3)}


def cancel_run(services: Services, workspace: str, run_id: str) -> dict:
    """Stop a run of the workspace (its worker is killed if it has started); the run's own
    request then answers that it was cancelled. A run that has ended stays as it was."""
    handle = _tracked(services, workspace, run_id)
    if not handle.done:
        handle.cancel()
    return run_status(services, workspace, run_id)


def compile_scope(services: Services, workspace: str) -> str:
    """The compile scope of the workspace's runs: the room it joined or created most recently
    (so "you compiled it before" covers everyone in the room), else the workspace itself."""
    return scope_of(workspace, services.rooms.compile_room(workspace))


def reset_compiled(services: Services, workspace: str, room: str | None = None) -> str:
    """Forget what the workspace (or room) compiled: its next run of each function compiles
    again for real. Answers the scope."""
    scope = scope_of(workspace, room)
    services.runs.scopes.reset(scope)
    return scope
