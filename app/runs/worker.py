"""The worker's side of a run: :func:`run_task`, a module-level task the worker pool runs.

In the worker process it finds (or builds) the module, prepares the input, traces, compiles
(or reuses its own compile cache), executes and times the run with a :class:`RunEngine` kept
for the worker's life in ``worker_state()``, one per app (an app's runs carry its ``token``:
with ``workers=0`` every app of the process runs inline, each with its own engine). It answers
the :class:`~app.runs.engine.RunOutcome` packed by :mod:`app.transfer` (NumPy results, the
compiled entry's :class:`~app.runs.cache.CompiledInfo`, never the executable).

The module travels as a :class:`ModuleSource`: its catalog spec (the worker builds it, and
keeps it under ``key``) or, for trained parameters, the module itself.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, replace
from typing import Any

import jax

from app import transfer
from app.cache import BoundedCache
from app.catalog import parse_spec
from app.runs.digest import ResultDigest, digest, flat
from app.runs.engine import RunEngine, RunOutcome
from app.runs.limits import light_lane
from app.runs.spec import RunRequest, SweepRequest
from app.settings import Settings
from app.store import BUILT_CACHE_BYTES, BUILT_CACHE_ENTRIES, tree_nbytes
from app.workers import worker_state

ENGINES_KEPT = 8
"""Run engines a process keeps (one per app; more than one only with inline runs in tests)."""


@dataclass(frozen=True)
class ModuleSource:
    """How the worker gets the module of a run."""

    key: tuple | None
    """Where the worker keeps the built module (a stored module's id and revision), or None."""
    kind: str
    params: dict
    model: bytes | None = None
    """The module itself (app.transfer), when its spec alone does not make it (trained)."""

    def build(self) -> Any:
        if self.model is not None:
            return transfer.loads(self.model)
        return parse_spec(self.kind, self.params).build()


@dataclass(frozen=True)
class RunJob:
    """One run or sweep, as the web process sends it to a worker."""

    token: str
    """The app's runs (``RunClient.token``): which engine of the process runs it."""
    settings: Settings | None
    """The app's settings; None in a worker process, which has them from its set-up
    (``app.runs.warmup.prepare_worker``): they are not pickled with every run."""
    spec: Any
    source: ModuleSource
    request: RunRequest | SweepRequest
    reset_at: float | None = None
    eager: bool = True
    with_input: bool = True
    light: bool = False
    """Sent to the light lane: refuse to run what its compiled program says is not light
    (:func:`app.runs.limits.check_light`)."""
    shows: frozenset[str] | None = None
    """The parts of the answer that will be shown (``app.runs.results.FIELDS``; None: all):
    the outcome sent back holds nothing else (:func:`_split`)."""


def engine_for(token: str, settings: Settings) -> RunEngine:
    """The run engine of the app ``token`` in this process (made on its first run)."""
    engines = worker_state().setdefault("run-engines", BoundedCache(ENGINES_KEPT))
    return engines.get_or_make(token, lambda: RunEngine(settings))


def local_engine(token: str) -> RunEngine | None:
    """The engine of ``token`` in this process, if it ran here (inline runs: tests)."""
    engines = worker_state().get("run-engines")
    return None if engines is None else engines.get(token)


def forget_engine(token: str) -> None:
    """Drop the app's engine from this process (an inline app closing)."""
    engines = worker_state().get("run-engines")
    if engines is not None:
        engines.pop(token)


def _model(job: RunJob) -> Any:
    source = job.source
    if source.key is None:
        return source.build()
    models = worker_state().setdefault(
        "run-models",
        BoundedCache(BUILT_CACHE_ENTRIES, max_bytes=BUILT_CACHE_BYTES, cost=tree_nbytes),
    )
    return models.get_or_make((job.token, *source.key), source.build)


def run_task(job: RunJob) -> transfer.Packed:
    """Run ``job`` in this process: the outcome, packed by :mod:`app.transfer`."""
    engine = engine_for(job.token, job.settings or worker_state()["settings"])
    model = _model(job)
    with light_lane(job.light):
        return _run(engine, model, job)


def _run(engine: RunEngine, model: Any, job: RunJob) -> transfer.Packed:
    if isinstance(job.request, SweepRequest):
        outcome = engine.sweep(
            job.spec, model, job.request, reset_at=job.reset_at, with_input=job.with_input
        )
    else:
        outcome = engine.run(
            job.spec,
            model,
            job.request,
            reset_at=job.reset_at,
            eager=job.eager,
            with_input=job.with_input,
        )
    if job.shows is None:  # the result itself is used, as a tree: its arrays to the host
        outcome.result = jax.device_get(outcome.result)
        return transfer.pack(outcome)
    return transfer.pack(_split(outcome, job.shows))


TEMPLATES_KEPT, TEMPLATE_BYTES = 256, 32 * 1024 * 1024
"""Outcome templates a worker keeps (:func:`_template`): at most this many, and bytes packed."""
PROCESS_TOKEN = secrets.token_hex(8)
"""This process's part of its shared parts' tokens (a replacement worker's differ)."""
_serials = itertools.count()


@dataclass(frozen=True)
class SharedParts:
    """What a compiled entry and the parts shown fix in every outcome of it: the entry's info
    as shown, its key record and its output tree, packed once. The web process unpacks them
    once per token (:func:`outcome_of`), a warm run then carries only what changes."""

    token: tuple[str, int]
    packed: transfer.Packed


@dataclass(frozen=True)
class SplitOutcome:
    """An outcome as a warm run sends it: its shared parts and the rest."""

    shared: SharedParts
    outcome: RunOutcome
    """The outcome without ``entry``, ``key`` and ``output`` (in ``shared``)."""


@dataclass(eq=False)
class _Template:
    entry: Any
    key: Any
    output: Any
    shared: SharedParts
    unchecked: ResultDigest | None = None
    """The result's digest when its values are not read (fixed by the entry), once made."""


def _template(outcome: RunOutcome, shows: frozenset[str]) -> _Template:
    """The template of outcomes of this compiled entry showing ``shows`` (the engine hands
    out the same entry info, key record and output tree for every run of an entry; a template
    keeps them, so their ids stay theirs while it is kept)."""
    templates = worker_state().setdefault(
        "run-templates",
        BoundedCache(TEMPLATES_KEPT, max_bytes=TEMPLATE_BYTES, cost=_template_bytes),
    )
    key = (id(outcome.entry), id(outcome.key), id(outcome.output), shows)
    found = templates.get(key)
    if (
        found is None
        or found.entry is not outcome.entry
        or found.key is not outcome.key
        or found.output is not outcome.output
    ):
        hidden = {part: "" for part in ("jaxpr", "hlo") if part not in shows}
        parts = (
            replace(outcome.entry, **hidden) if hidden else outcome.entry,
            outcome.key,
            outcome.output if "output" in shows else None,
        )
        shared = SharedParts((PROCESS_TOKEN, next(_serials)), transfer.pack(parts))
        found = _Template(outcome.entry, outcome.key, outcome.output, shared)
        templates.put(key, found)
    return found


def _template_bytes(template: _Template) -> int:
    return transfer.packed_bytes(template.shared.packed)


def _split(outcome: RunOutcome, shows: frozenset[str]) -> SplitOutcome:
    """``outcome`` as the web process needs it for an answer showing only ``shows``, the parts
    its compiled entry fixes sent as a template (:func:`_template`: the output tree, jaxpr and
    HLO text go when they are not shown). The result goes as its leaves by path
    (:class:`~app.runs.digest.ResultLeaves`), or only as its
    :class:`~app.runs.digest.ResultDigest` when neither values nor figure are shown (a 4 x 512
    MLP's gradient is 4 MB to copy, then to send between processes; it is read for NaN and
    infinity only when ``warnings`` are shown)."""
    template = _template(outcome, shows)
    if shows & {"values", "plot"}:
        outcome.result = flat(outcome.result)
    elif "warnings" in shows:
        outcome.result = digest(outcome.result, check=True)
    else:
        if template.unchecked is None:
            template.unchecked = digest(outcome.result, check=False)
        outcome.result = template.unchecked
    outcome.entry = outcome.key = outcome.output = None
    return SplitOutcome(template.shared, outcome)


def outcome_of(packed: transfer.Packed, known: BoundedCache | None = None) -> RunOutcome:
    """The outcome :func:`run_task` packed, whole. Its shared parts are unpacked, or found in
    ``known`` by their token, as ``(parts, packed bytes)`` (the web process keeps them: a
    warm run's are the same)."""
    value = transfer.unpack(packed)
    if not isinstance(value, SplitOutcome):
        return value
    shared = value.shared
    if known is None:
        parts = transfer.unpack(shared.packed)
    else:
        parts, _ = known.get_or_make(
            shared.token,
            lambda: (transfer.unpack(shared.packed), transfer.packed_bytes(shared.packed)),
        )
    outcome = value.outcome
    outcome.entry, outcome.key, outcome.output = parts
    return outcome
