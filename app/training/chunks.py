"""A training job in chunks: what a worker process runs for it.

A job's state (the model's arrays, the optimiser's state, the batches' order and RNG, the step)
lives in the web process, as NumPy arrays and plain data. Each *chunk* is one task,
:func:`train_chunk`, that a worker runs: it rebuilds the model from the module's spec and the
state's arrays, takes up to ``steps`` steps (ending early once ``seconds`` have passed, so a
chunk lasts about as long whatever the module), and returns the new state with what the job
shows (metrics recorded, the boundary or fit).

The plan (``GradientPlan`` or ``LocalPlan``: the dataset, the arrays derived from it, the
objective) is the bulk of a job (hundreds of kB for a 20,000-row dataset), and it never
changes: it goes to a worker once, as a :class:`PlanParcel` keyed by the digest of its pickle,
and the worker keeps it (``PLANS_KEPT``, ``PLANS_BYTES``); later chunks carry only the key. A
worker that has not got it (a new or replaced one, or one that let it go) answers
:class:`PlanMissing`, and the job sends that chunk again with the plan.

Compiled steps stay warm in the worker: the steps are ``eqx.filter_jit`` functions whose
static parts (the objective, the optimiser, the model's structure) compare equal for modules of
one structure, so thirty identical jobs compile once per worker; the models' skeletons (one
build per structure) are kept in :func:`app.workers.worker_state`, the worker's own dict.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from app.cache import BoundedCache
from app.workers import worker_state

SKELETONS_KEPT = 64
"""Module skeletons (one per structure) a worker keeps."""
WARM_KEPT = 1024
"""Compiled calls (structure and part) a worker remembers having run."""
PLANS_KEPT = 64
"""Jobs' plans a worker keeps (a room's jobs at once, and then some)."""
PLANS_BYTES = 256 * 2**20
"""What the plans a worker keeps may weigh together (their pickles' bytes)."""


def structure_key(entry: Any) -> tuple[str, str]:
    """Modules with this key have the same structure (they differ only in their values)."""
    params = {k: v for k, v in entry.model_dump(mode="json").items() if k != "seed"}
    return entry.kind, json.dumps(params, sort_keys=True)


def array_leaves(model: Any) -> list[np.ndarray]:
    """``model``'s arrays as NumPy arrays, in tree order (what a job's state keeps)."""
    return [np.asarray(leaf) for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def _array_or_shape(leaf: Any) -> bool:
    return eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)


def replace_arrays(model: Any, leaves: list[np.ndarray]) -> Any:
    """``model`` (a module, or its skeleton of shapes) with ``leaves`` (as
    :func:`array_leaves` lists them) as its arrays."""
    params, static = eqx.partition(model, _array_or_shape)
    treedef = jax.tree.structure(params)
    return eqx.combine(jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves]), static)


def model_from_leaves(entry: Any, leaves: list[np.ndarray]) -> Any:
    """The module ``entry`` builds, with ``leaves`` as its arrays. Its skeleton comes from
    tracing the build, not running it (a fresh worker would compile a dozen small programs of
    random initialisation first), and is kept by the worker, one per structure."""
    skeletons = worker_state().setdefault("training.skeletons", BoundedCache(SKELETONS_KEPT))
    skeleton = skeletons.get_or_make(
        structure_key(entry), lambda: eqx.filter_eval_shape(entry.build)
    )
    return replace_arrays(skeleton, leaves)


@dataclass
class ChunkReport:
    """What one chunk did: the steps, the metrics recorded (one dict per record, the job's
    ``record`` arguments), the last view (or None), and its seconds: all of it, the part spent
    computing (steps, evaluations, views), which a job's time budget counts, and the part spent
    compiling (first calls of a structure in this worker), which it leaves out."""

    steps: int = 0
    records: list[dict] = field(default_factory=list)
    view: dict | None = None
    seconds: float = 0.0
    compute_seconds: float = 0.0
    compile_seconds: float = 0.0
    step_seconds: float | None = None
    """The quickest step of the chunk but its first (which may have compiled), or None: a
    step's cost, robust to a busy machine's pauses."""
    timed_steps: int = 0
    """The steps ``step_seconds`` is the quickest of."""


class ChunkClock:
    """Times a chunk's compiled calls; the first call of each one for a structure this worker
    has not run before counts as compiling."""

    def __init__(self, warm_key: Any, report: ChunkReport):
        self.report = report
        self.start = time.perf_counter()
        self._key = warm_key
        self._warm = worker_state().setdefault("training.warm", BoundedCache(WARM_KEPT))
        self._stepped = False

    def timed(self, part: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, waited for and timed as ``part`` of the chunk."""
        began = time.perf_counter()
        out = jax.block_until_ready(fn(*args, **kwargs))
        seconds = time.perf_counter() - began
        if (self._key, part) in self._warm:
            self.report.compute_seconds += seconds
            if part == "step" and self._stepped:
                quickest = self.report.step_seconds
                self.report.step_seconds = seconds if quickest is None else min(quickest, seconds)
                self.report.timed_steps += 1
        else:
            self._warm.put((self._key, part), True)
            self.report.compile_seconds += seconds
        self._stepped = self._stepped or part == "step"
        return out

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def done(self) -> ChunkReport:
        self.report.seconds = self.elapsed()
        return self.report


class PlanMissing(Exception):
    """This worker has not got the plan a chunk names (the chunk carried only its key)."""


@dataclass(frozen=True)
class PlanParcel:
    """A job's plan as a chunk carries it: its ``key`` (the digest of its pickle) always, the
    pickle itself only when the worker may not have it yet."""

    key: str
    payload: bytes | None = None

    @classmethod
    def of(cls, plan: Any) -> PlanParcel:
        payload = pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL)
        return cls(hashlib.sha256(payload).hexdigest(), payload)

    def bare(self) -> PlanParcel:
        """The same plan by its key only."""
        return PlanParcel(self.key)

    def open(self) -> Any:
        """The plan, in a worker: the one carried (then kept), else the one kept, else
        :class:`PlanMissing`."""
        plans = worker_state().setdefault(
            "training.plans",
            BoundedCache(PLANS_KEPT, max_bytes=PLANS_BYTES, cost=lambda held: held[1]),
        )
        if self.payload is not None:
            return plans.get_or_make(
                self.key, lambda: (pickle.loads(self.payload), len(self.payload))
            )[0]
        held = plans.get(self.key)
        if held is None:
            raise PlanMissing(self.key)
        return held[0]


def train_chunk(
    parcel: PlanParcel, state: dict | None, steps: int, seconds: float, view: bool, single: bool
) -> tuple[dict, ChunkReport]:
    """Run one chunk of a job in this (worker) process: up to ``steps`` steps of the parcel's
    plan from ``state`` (None: the job's start), ending once ``seconds`` have passed (after
    one step at least); ``view``: compute the boundary or fit at the end; ``single``: record
    and show every step (a paused job's single step). ``steps=0`` ends the job: what is left
    to record and the last view. Returns ``(state, report)``; :class:`PlanMissing` when the
    parcel has only the key of a plan this worker has not got."""
    return parcel.open().advance(state, steps, seconds, view, single)
