"""Runs and sweeps of a stored module: what the JSON API and the run panel share.

A run takes one of the server's compute slots for as long as a worker traces, compiles and
computes (``services.compute.slot()``); ``services.runs`` (``app.runs.client``) remembers each
run's key under the module's and the workspace's scopes, to say what changed since the
previous run.
"""

from __future__ import annotations

from typing import Any

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
    handle: Any = None,
) -> tuple[RunOutcome, Any]:
    """Run (a :class:`RunRequest`) or sweep (a :class:`SweepRequest`) the module of ``record``:
    ``(outcome, catalog spec)``. A run tells ``compile_scope``'s view of compiling
    (:func:`app.runs.scopes.scope_of`); ``with_input``: the outcome holds the input's values
    (the panel shows them); ``handle``: the pool's task handle (to follow or cancel it)."""
    spec = record.spec()
    services.runs.check_cost(spec, body)  # refused before a slot is taken
    scopes = run_scopes(record)
    with services.compute.slot():
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
                handle=handle,
            )
    return outcome, spec


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
