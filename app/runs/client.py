"""The web process's side of runs: refuse early, send the work to a worker, tell the story.

:class:`RunClient` (``services.runs``, one per app) does what is cheap and belongs to the
server as a whole, and hands the rest (trace, compile, run: ``app.runs.worker``) to the worker
pool:

- before any worker is taken, the refusals that need no module: the loss parsed and checked,
  the trace estimate from the catalog's leaf count (``Losses.check_cost``);
- the lane the run asks the pool for (:func:`lane_of`; every run of a client address that went
  past a worker's limit in the last :data:`STRIKE_SECONDS` goes to the heavy lane, so a client
  that sends bombs in a loop cannot keep taking the worker kept for light work) and its
  affinity (the same module and request go to the worker that compiled them before);
- after the worker answers: the compile scopes (``app.runs.scopes``: the scope's reset time
  goes to the worker, which says whether it compiled), "what changed" since the scope's
  previous run (``app.runs.keys.key_changes``), and the count of compilations.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import anyio.to_thread

from app import transfer
from app.cache import BoundedCache
from app.errors import PlaygroundError
from app.runs.engine import Losses, RunOutcome, run_transforms
from app.runs.keys import KeyRecord, key_changes
from app.runs.limits import NotLight, is_light
from app.runs.scopes import CompileScopes
from app.runs.spec import RunRequest, SweepRequest
from app.runs.structure import StructureMemo
from app.runs.worker import (
    ModuleSource,
    RunJob,
    forget_engine,
    local_engine,
    outcome_of,
    run_task,
)
from app.serving import current_client
from app.settings import Settings
from app.store import ModuleRecord, ModuleStore, ShareRecord, tree_nbytes

SEND_MODULE_BYTES = 262_144
"""A stored module whose arrays hold at most this many bytes is sent to the worker as it is
(the web process has it built): the worker then runs no random initialisation of its own, which
on a fresh worker compiles a dozen small programs within the run's time limit. A larger module
is built by the worker from its spec (once; it keeps it), rather than copied on every run."""
MAX_SENT, SENT_BYTES = 1024, 32 * 1024 * 1024
"""Stored modules kept pickled for the workers: at most this many, and bytes."""
MAX_SHARED, SHARED_BYTES = 1024, 64 * 1024 * 1024
"""Outcomes' shared parts (a compiled entry's info, key record and output tree) kept
unpacked: at most this many, and bytes as packed."""
MAX_PREVIOUS = 4096
"""Scopes whose last key is remembered, for "what changed"."""
STRIKE_SECONDS = 600.0
"""For this long after one of its runs went past a worker's limit, a client address's runs all
go to the heavy lane."""
MAX_STRIKES = 4096
"""Client addresses whose last strike is remembered."""


def lane_of(estimate: int, settings: Settings) -> str:
    """The pool's lane for a run whose trace estimate is ``estimate``: ``"light"`` when
    :func:`app.runs.limits.is_light` says so, else ``"heavy"`` (it may compile for seconds and
    must never hold the worker kept for light work). A light run whose compiled program is
    not light goes to the heavy lane after compiling (:func:`app.runs.limits.check_light`)."""
    return "light" if is_light(estimate, settings) else "heavy"


class RunClient:
    """Runs and sweeps as the web process asks for them (``services.runs``)."""

    def __init__(self, settings: Settings, store: ModuleStore, workers: Any = None):
        self.settings = settings
        self.store = store
        self.workers = workers
        """The worker pool (``app.workers``); None: the task is called in this thread."""
        self.token = secrets.token_hex(8)
        self.losses = Losses(settings)
        self.scopes = CompileScopes()
        self.structures = StructureMemo()
        """Modules' structures, for what the page shows (the presets of a simple module)."""
        self._previous: BoundedCache[tuple, KeyRecord] = BoundedCache(MAX_PREVIOUS)
        self._lock = threading.Lock()
        self.strikes: BoundedCache[str, float] = BoundedCache(MAX_STRIKES)
        """Client address -> when one of its runs last went past a worker's limit."""
        self._sent: BoundedCache[tuple, bytes] = BoundedCache(
            MAX_SENT, max_bytes=SENT_BYTES, cost=len
        )
        """Trained and small stored modules as sent to the workers, by id and revision
        (pickled once: a revision's parameters never change)."""
        self.compiles = 0
        """Compilations of this app's runs (every worker's) since it started."""
        self._module_affinities: BoundedCache[tuple, int] = BoundedCache(MAX_SENT)
        """Stored modules' part of a run's affinity, by id and revision."""
        self._shared: BoundedCache[tuple, tuple] = BoundedCache(
            MAX_SHARED, max_bytes=SHARED_BYTES, cost=lambda kept: kept[1]
        )
        """The workers' shared parts of outcomes, unpacked, by token (``outcome_of``)."""
        self._workers_have_settings = workers is not None and getattr(workers, "workers", 0) > 0
        """Worker processes are set up with the app's settings (``prepare_worker``), so its
        runs go without them; inline runs carry them."""

    def parse_loss(self, text: str, field_name: str = "loss") -> Any:
        return self.losses.parse(text, field_name)

    def check_cost(self, spec: Any, request: RunRequest | SweepRequest) -> int:
        """Refuse at once what the catalog's estimate says is too big; else the estimate."""
        return self.losses.check_cost(spec, request)

    def run(
        self,
        spec: Any,
        module: Any,
        request: RunRequest,
        *,
        scopes: Sequence[tuple] = (),
        compile_scope: str | None = None,
        eager: bool = True,
        with_input: bool = True,
        shows: frozenset[str] | None = None,
        handle: Any = None,
    ) -> RunOutcome:
        """Run ``request`` on ``module`` (a stored module's record, or a module) in a worker.

        ``scopes``: where the run's key is remembered for "what changed"; ``compile_scope``
        (``app.runs.scopes.scope_of``): whose view of compiling the answer tells; ``eager``:
        also time the pipeline without jit; ``with_input``: send the input's values back;
        ``shows``: the parts of the answer that will be shown (``app.runs.results.FIELDS``;
        None: all), the worker sends nothing else; ``handle``: the pool's task handle, to follow or
        cancel the run."""
        return self._run(
            spec, module, request, scopes, compile_scope, eager, with_input, shows, handle
        )

    def sweep(
        self,
        spec: Any,
        module: Any,
        request: SweepRequest,
        *,
        scopes: Sequence[tuple] = (),
        with_input: bool = True,
        handle: Any = None,
    ) -> RunOutcome:
        """f and df/dx_i along one input coordinate, in a worker."""
        return self._run(spec, module, request, scopes, None, False, with_input, None, handle)

    async def run_async(
        self,
        spec: Any,
        module: Any,
        request: RunRequest,
        *,
        scopes: Sequence[tuple] = (),
        compile_scope: str | None = None,
        with_input: bool = True,
        shows: frozenset[str] | None = None,
        handle: Any = None,
    ) -> RunOutcome:
        """:meth:`run` from the event loop: the worker's answer is awaited there, with no
        thread waiting for it (``WorkerPool.call_async``)."""
        job, lane, affinity, expression = self._prepare(
            spec, module, request, compile_scope, True, with_input, shows
        )
        if self.workers is None:
            packed = await anyio.to_thread.run_sync(run_task, job)
        else:
            packed = await self._call_async(job, lane, affinity, handle)
        return self._finish(
            outcome_of(packed, self._shared), request, expression, scopes, compile_scope
        )

    def _run(
        self,
        spec: Any,
        module: Any,
        request: RunRequest | SweepRequest,
        scopes: Sequence[tuple],
        compile_scope: str | None,
        eager: bool,
        with_input: bool,
        shows: frozenset[str] | None,
        handle: Any,
    ) -> RunOutcome:
        job, lane, affinity, expression = self._prepare(
            spec, module, request, compile_scope, eager, with_input, shows
        )
        packed = run_task(job) if self.workers is None else self._call(job, lane, affinity, handle)
        return self._finish(
            outcome_of(packed, self._shared), request, expression, scopes, compile_scope
        )

    def _prepare(
        self,
        spec: Any,
        module: Any,
        request: RunRequest | SweepRequest,
        compile_scope: str | None,
        eager: bool,
        with_input: bool,
        shows: frozenset[str] | None,
    ) -> tuple[RunJob, str, Any, Any]:
        """What the worker is sent (the refusals that need no module first): the job, its
        lane, its affinity and the parsed loss."""
        estimate = self.check_cost(spec, request)
        _, loss = run_transforms(request)
        expression = self.parse_loss(loss) if loss is not None else None
        source = self._source(module)
        job = RunJob(
            token=self.token,
            settings=None if self._workers_have_settings else self.settings,
            spec=spec,
            source=source,
            request=request,
            reset_at=self.scopes.reset_time(compile_scope),
            eager=eager,
            with_input=with_input,
            shows=shows,
        )
        affinity = self._affinity(spec, source, request)
        return job, lane_of(estimate, self.settings), affinity, expression

    def _finish(
        self,
        outcome: RunOutcome,
        request: RunRequest | SweepRequest,
        expression: Any,
        scopes: Sequence[tuple],
        compile_scope: str | None,
    ) -> RunOutcome:
        """The worker's outcome with what the web process tells: the compile scope's view,
        what changed since the scopes' previous run, and the count of compilations."""
        outcome.request = request
        outcome.expression = expression
        outcome.compile_scope = self.scopes.record(compile_scope, outcome.key, outcome.compiled)
        before, outcome.compared_with = self._remember(scopes, outcome.key)
        outcome.changes = key_changes(before, outcome.key)
        with self._lock:
            self.compiles += int(outcome.compiled)
            outcome.compiles = self.compiles
        return outcome

    def _call(self, job: RunJob, lane: str, affinity: Any, handle: Any) -> transfer.Packed:
        client = current_client()
        lane = self._lane(client, lane)
        with self._striking(client):
            try:
                light = replace(job, light=lane == "light")
                return self.workers.call(
                    run_task, light, lane=lane, handle=handle, affinity=affinity
                )
            except NotLight:  # its compiled program is not light work: the heavy lane
                return self.workers.call(
                    run_task, job, lane="heavy", handle=handle, affinity=affinity
                )

    async def _call_async(
        self, job: RunJob, lane: str, affinity: Any, handle: Any
    ) -> transfer.Packed:
        """:meth:`_call`, awaited in the event loop."""
        client = current_client()
        lane = self._lane(client, lane)
        with self._striking(client):
            try:
                light = replace(job, light=lane == "light")
                return await self.workers.call_async(
                    run_task, light, lane=lane, handle=handle, affinity=affinity
                )
            except NotLight:
                return await self.workers.call_async(
                    run_task, job, lane="heavy", handle=handle, affinity=affinity
                )

    def _lane(self, client: str | None, lane: str) -> str:
        if client is not None and self._struck(client):
            return "heavy"  # it went past a limit lately: never again on the light worker
        return lane

    @contextmanager
    def _striking(self, client: str | None):
        """A run past a worker's limit, or refused by one only after tracing and compiling,
        sends its client's runs to the heavy lane for a while."""
        try:
            yield
        except PlaygroundError as error:
            limit = getattr(error, "setting", None) or getattr(error, "limit", None)
            if client is not None and limit is not None:
                self.strikes.put(client, time.monotonic())
            raise

    def _struck(self, client: str) -> bool:
        when = self.strikes.get(client)
        return when is not None and time.monotonic() - when < STRIKE_SECONDS

    def _source(self, module: Any) -> ModuleSource:
        if isinstance(module, ModuleRecord | ShareRecord):
            key = (type(module).__name__, module.id, getattr(module, "revision", 0))
            sent = self._sent.get(key)
            if sent is None:
                built = self.store.load(module) if module.trained else self.store.built(module)
                if built is not None and (
                    module.trained or tree_nbytes(built) <= SEND_MODULE_BYTES
                ):
                    sent = self._sent.get_or_make(key, lambda: transfer.dumps(built))
                elif built is not None:
                    self._sent.put(key, b"")  # too large to send: the worker builds it
            return ModuleSource(key, module.kind, module.params, sent or None)
        return ModuleSource(None, "", {}, transfer.dumps(module))

    def _affinity(self, spec: Any, source: ModuleSource, request: RunRequest | SweepRequest) -> int:
        """The same module kind and parameters and the same request: the pool prefers the
        worker that compiled them before (a stored module's part is kept by its revision)."""
        if source.key is None:
            module = _module_affinity(spec)
        else:
            module = self._module_affinities.get_or_make(source.key, lambda: _module_affinity(spec))
        return hash((module, request.model_dump_json()))

    def _remember(
        self, scopes: Sequence[tuple], key: KeyRecord
    ) -> tuple[KeyRecord | None, str | None]:
        before, compared = None, None
        for scope in scopes:
            found = self._previous.get(scope)
            if found is not None and found.mode == key.mode:
                before, compared = found, scope[0]
                break
        for scope in scopes:
            self._previous.put(scope, key)
        return before, compared

    def local_engine(self) -> Any:
        """The engine that ran this app's runs in this process (inline runs, ``workers=0``);
        None when its runs went to worker processes. For tests that look inside the cache."""
        return local_engine(self.token)

    def close(self) -> None:
        """Forget this app's engine in this process (inline runs)."""
        forget_engine(self.token)


def _module_affinity(spec: Any) -> int:
    """The module kind and parameters, seed aside (it changes no compiled program)."""
    params = {k: v for k, v in spec.model_dump(mode="json").items() if k != "seed"}
    return hash((spec.kind, json.dumps(params, sort_keys=True)))
