"""Training jobs: run in chunks in worker processes, watched while they run, persisted when
they end.

A job's state (the model's arrays, the optimiser's state, the batches' order, the step) lives
here, in the web process. Its steps run in *chunks* (:mod:`app.training.chunks`): one chunk is
one task for a worker process of the pool (lane ``"train"``), lasting about ``CHUNK_SECONDS``,
that takes the state and gives back the next one with the metrics and the view; the job's plan
(its data) goes to a worker once, and later chunks name it by its key. The
:class:`~app.training.scheduler.ChunkScheduler` interleaves the chunks of every running job in
turn, so no job waits for another to finish; a watched job (``watch_seconds``) is paced by when
its next chunk is scheduled, never by a worker that waits. (With ``workers=0``, the tests'
setting, the pool runs the chunks in a thread of this process, their arguments and results
pickled all the same.)

Limits: a workspace may have ``max_jobs_per_workspace`` jobs queued, running or paused, and a
client address ``max_jobs_per_client`` whatever its workspaces (one more is a 429); a module
one (a second is a 409 naming the first). A job is budgeted as a
whole before it is queued (``app.training.service.check_job_budget``): its flops
(``max_train_flops``) and its seconds of computing (``max_job_seconds``), at the seconds a step
of its structure was measured to take, or, for a structure never timed, at least its flops at
this machine's measured speed (:mod:`app.training.speed`). While it runs, its first chunks'
measured time is checked again, and the seconds it computed are the backstop. A job whose worker
died or ran past the run limits fails with a message in words.

Play, pause, step, stop and reset act between chunks. A paused job is *parked*: it holds no
worker and no place in the turn; resume, a single step or stop put it back. Every change of a
job's pause state happens under the job's own lock (``Job.cond``), and a job is in the turn or
in a worker at most once. A job paused for longer than ``max_paused_seconds`` is stopped (its
parameters saved). When a job ends, done or stopped, its trained parameters replace the
module's (``store.set_leaves``: persisted, revision bumped), and the job keeps a diff of how far
every leaf moved; reset (back to the module's initial parameters) stops the module's jobs and
discards their results under the lock that saving takes, so a job ending at that moment cannot
overwrite the reset. Each job's record is written to the database at start and at the end, so
it can still be read after a restart.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import equinox as eqx
import jax
import numpy as np

from app.cache import BoundedCache
from app.errors import PlaygroundError
from app.serving import YOUR_ADDRESS
from app.store import ModuleRecord, ModuleStore, new_id
from app.training.chunks import PlanMissing, PlanParcel, replace_arrays, train_chunk
from app.training.gradient import VIEW_SECONDS
from app.training.scheduler import ChunkScheduler
from app.training.speed import StepCost
from app.training.storage import TrainingStorage
from app.workers import RunLimitExceeded, WorkerLost, WorkerPool, WorkersBusy
from library import trainable_filter

logger = logging.getLogger("playground.training")

FINISHED = ("done", "failed", "stopped")
ACTIVE = ("queued", "running", "paused")
MAX_JOBS_IN_MEMORY = 32
"""Finished jobs kept in memory (older ones are read back from the database)."""
SHUTDOWN_SECONDS = 5.0
"""When the app stops (``Services.close``), running jobs are stopped (their parameters saved)
and waited for this long."""
CHUNK_SECONDS = 0.075
"""A chunk ends after the step that takes it past this many seconds (about 50 to 100 ms of
computing for the playground's modules; a single longer step is one chunk)."""
PACE_SECONDS = 0.2
"""A watched job's chunks are this far apart: each takes the steps that came due since the
last one."""
BUSY_WAIT_SECONDS = 10.0
"""How long a chunk waits for a free worker; past it (the workers busy with other things) it
is tried again ``BUSY_RETRY_SECONDS`` later: a busy server slows a job down, never fails it."""
BUSY_RETRY_SECONDS = 0.5
MIN_TIMED_STEPS = 20
"""Steps timed before a job's seconds are estimated (one step alone may have waited for a
busy machine)."""
MEASURED_STRUCTURES = 256
"""Seconds per step remembered per module structure and batch (to refuse a job at once)."""
MAX_DIFF_ROWS = 200
"""Leaves listed in a job's parameter diff; the rest are counted."""
MAX_STEP_BUDGET = 20
"""Single steps asked for while paused and not yet done (more clicks are ignored)."""
STEP_WAIT_SECONDS = 15.0
"""``POST /step`` waits at most this long for its step to be done."""


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def parameter_diff(before: Any, after: Any) -> dict[str, Any]:
    """How far each array leaf moved: ``{"leaves": [{"path", "shape", "trained", "norm",
    "change", "relative", "max_abs"}], "total", "truncated"}``."""
    flat_before, treedef = jax.tree_util.tree_flatten_with_path(before)
    flat_after = jax.tree_util.tree_leaves(after)
    trained = jax.tree_util.tree_leaves(trainable_filter(before))
    if len(flat_after) != len(flat_before) or len(trained) != len(flat_before):
        return {"leaves": [], "total": 0, "truncated": False}
    rows = []
    for (path, old), new, is_trained in zip(flat_before, flat_after, trained, strict=True):
        if not eqx.is_inexact_array(old):
            continue
        old64 = np.asarray(old, np.float64)
        delta = np.asarray(new, np.float64) - old64
        norm = float(np.linalg.norm(old64))
        change = float(np.linalg.norm(delta))
        rows.append(
            {
                "path": jax.tree_util.keystr(path),
                "shape": list(old.shape),
                "trained": bool(is_trained),
                "norm": _finite(norm),
                "change": _finite(change),
                "relative": _finite(change / norm) if norm > 0 else (0.0 if change == 0 else None),
                "max_abs": _finite(float(np.max(np.abs(delta)))) if delta.size else 0.0,
            }
        )
    return {
        "leaves": rows[:MAX_DIFF_ROWS],
        "total": len(rows),
        "truncated": len(rows) > MAX_DIFF_ROWS,
    }


class Job:
    """One training job: settings, progress, metrics, its state, and the result once it ends."""

    def __init__(
        self,
        *,
        workspace: str,
        module_id: str,
        module_kind: str,
        plan: Any,
        settings: dict[str, Any],
        dataset: dict[str, Any],
        client: str | None = None,
    ):
        self.id = new_id(9)
        self.workspace = workspace
        self.module_id = module_id
        self.module_kind = module_kind
        self.client = client
        """The address of the client that submitted it (for ``max_jobs_per_client``)."""
        self.plan = plan
        self.mode = plan.mode
        self.settings = settings
        self.dataset = dataset
        self.status = "queued"
        self.step = 0
        self.total = plan.total
        self.metrics: dict[str, list] = {name: [] for name in plan.metric_names}
        self.error: str | None = None
        self.note: str | None = None
        self.view: dict | None = None
        self.diff: dict | None = None
        self.revision: int | None = None
        self.created_at = time.time()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.version = 0
        self.steps_per_epoch = float(getattr(plan, "steps_per_epoch", 0) or 0)
        self.paused_seconds = 0.0
        self.compute_seconds = 0.0
        """Seconds its chunks computed (compiling left out): what ``max_job_seconds`` bounds."""
        self.step_seconds: float | None = None
        """Its quickest step so far, in seconds (what its estimate counts on), of
        ``timed_steps`` timed."""
        self.timed_steps = 0
        self.discard = False
        """Set by a reset: the job's parameters are not saved when it ends."""
        self.state: dict | None = None
        """Where the training is (see :mod:`app.training.chunks`); None once it ended."""
        self.parcel: PlanParcel | None = PlanParcel.of(plan)
        """The plan as chunks carry it: whole until a worker has it, then by its key."""
        self._plan_sent = False
        self.cond = threading.Condition()
        """Guards the pause state below and the status; notified on every change."""
        self._pause = False
        self._budget = 0
        self._parked = False
        self._in_flight = False
        self._final = False
        self._wake_at: float | None = None
        self._paused_at: float | None = None
        self._pace_origin: float | None = None
        self._last_view = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def record(self, **values: Any) -> None:
        """Append one value to each named metric (None where a value does not apply)."""
        with self._lock:
            for name, value in values.items():
                if name in self.metrics and value is not None:
                    self.metrics[name].append(_finite(value))
            self.version += 1

    def set_view(self, view: dict | None) -> None:
        self.view = view
        self.version += 1

    # Read by requests ------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def pace(self) -> float:
        """The job's ``watch_seconds`` (0: as fast as it goes)."""
        return float(self.settings.get("watch_seconds") or 0.0) if self.total else 0.0

    def request_stop(self) -> None:
        with self.cond:
            self._stop.set()
            self.version += 1
            self.cond.notify_all()

    @property
    def epoch(self) -> float:
        """Epochs done (fractional): steps over steps per epoch."""
        return round(self.step / self.steps_per_epoch, 4) if self.steps_per_epoch else 0.0

    def public(self, with_view: bool = False) -> dict[str, Any]:
        """The job as the API answers it."""
        with self._lock:
            metrics = {name: list(values) for name, values in self.metrics.items()}
        for name in ("loss", "accuracy", "test_accuracy"):
            metrics.setdefault(name, [])
        now = self.finished_at or time.time()
        paused_now = now - self._paused_at if self._paused_at is not None else 0.0
        out = {
            "job": self.id,
            "module": self.module_id,
            "kind": self.module_kind,
            "mode": self.mode,
            "status": self.status,
            "step": self.step,
            "total": self.total,
            "epoch": self.epoch,
            "steps_per_epoch": round(self.steps_per_epoch, 4),
            "paused": self.status == "paused",
            "pause_requested": self._pause and not self.finished,
            "metrics": metrics,
            "error": self.error,
            "note": self.note,
            "stop_requested": self._stop.is_set() and not self.finished,
            "settings": self.settings,
            "dataset": self.dataset,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed": round(now - self.started_at - self.paused_seconds - paused_now, 3)
            if self.started_at
            else 0.0,
            "compute_seconds": round(self.compute_seconds, 3),
            "revision": self.revision,
            "diff": self.diff,
        }
        if with_view:
            out["view"] = self.view
        return out


def worker_failure(error: BaseException) -> str | None:
    """A job's message in words when its worker died or ran past the run limits, else None."""
    if isinstance(error, RunLimitExceeded):
        return (
            f"This training stopped: {error.message} The module keeps the parameters it had "
            "before the job."
        )
    if isinstance(error, WorkerLost):
        return (
            "This training stopped: the worker process computing it ended unexpectedly (it "
            "may have run out of memory). The module keeps the parameters it had before the "
            "job; press Train to try again."
        )
    return None


class JobManager:
    """Every training job of one app: the turn of their chunks, limits and persistence."""

    def __init__(
        self, store: ModuleStore, storage: TrainingStorage, settings: Any, pool: WorkerPool
    ):
        self.store = store
        self.storage = storage
        self.settings = settings
        self.pool = pool
        """The worker pool the chunks run in (lane ``"train"``)."""
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._persist_lock = threading.Lock()
        self._scheduler = ChunkScheduler(self._dispatch, self._complete, pool.capacity("train"))
        self._finisher = ThreadPoolExecutor(1, thread_name_prefix="training-finish")
        self._closing = False
        """Set by :meth:`shutdown`: a stopped job ends without a last chunk."""
        self._step_seconds: BoundedCache[Any, float] = BoundedCache(MEASURED_STRUCTURES)
        """Seconds of one step, measured, by the plans' ``cost_key``."""

    # Submitting ------------------------------------------------------------------------------
    def active_count(self, workspace: str) -> int:
        return sum(1 for j in self._jobs.values() if j.workspace == workspace and not j.finished)

    def check_capacity(self, workspace: str, client: str | None = None) -> None:
        """429 when ``workspace`` already has ``max_jobs_per_workspace`` jobs queued, running or
        paused, or the client address ``client`` has ``max_jobs_per_client`` (whatever its
        workspaces: a client that drops its cookie has a new one on every request)."""
        limit = self.settings.max_jobs_per_workspace
        if self.active_count(workspace) >= limit:
            raise PlaygroundError(
                429,
                f"Your workspace already has {limit} training jobs queued or running (limit "
                f"max_jobs_per_workspace={limit}). Stop one or wait for it to finish.",
                headers={"Retry-After": "5"},
            )
        limit = self.settings.max_jobs_per_client
        if client is None or not limit:
            return
        active = sum(1 for j in self._jobs.values() if j.client == client and not j.finished)
        if active >= limit:
            raise PlaygroundError(
                429,
                f"{YOUR_ADDRESS} already has {limit} training jobs queued or running (limit "
                f"max_jobs_per_client={limit}, PLAYGROUND_MAX_JOBS_PER_CLIENT). Stop one or "
                "wait for it to finish.",
                headers={"Retry-After": "5"},
            )

    def running_job(self, workspace: str, module_id: str) -> Job | None:
        """The module's job that is queued, running or paused, if any."""
        for job in self._jobs.values():
            if job.workspace == workspace and job.module_id == module_id and not job.finished:
                return job
        return None

    def check_module_free(self, record: ModuleRecord) -> None:
        """409 naming the job when the module already has one queued, running or paused."""
        job = self.running_job(record.workspace, record.id)
        if job is not None:
            raise PlaygroundError(
                409,
                f"This module is already training (job {job.id}, {job.status} at step "
                f"{job.step:,} of {job.total:,}). Stop it (POST /api/jobs/{job.id}/stop) or "
                "wait for it to end before training it again.",
                "module",
            )

    def check_seconds(self, plan: Any, cost: StepCost | None = None) -> None:
        """422 when the job's steps would compute for longer than ``max_job_seconds``: at the
        seconds a step of this structure was measured to take, or, never timed, at least
        ``cost.seconds()`` (its flops and arrays at this machine's measured speed)."""
        per_step = self._step_seconds.get(plan.cost_key)
        if per_step is not None:
            self._check_estimate(plan, plan.total, per_step, f"measured on its first {plan.unit}")
        elif cost is not None:
            basis = (
                f"or more: {cost.flops:.3g} floating-point operations and {cost.arrays:,} "
                "arrays each, at this machine's measured speed"
            )
            self._check_estimate(plan, plan.total, cost.seconds(), basis)

    def _check_estimate(self, plan: Any, total: int, per_step: float, basis: str) -> None:
        """422 when ``total`` steps of ``per_step`` seconds (``basis`` says how that is known)
        are over ``max_job_seconds``."""
        limit = self.settings.max_job_seconds
        estimate = per_step * total
        if estimate <= limit:
            return
        raise PlaygroundError(
            422,
            f"This training job would compute for about {estimate:.3g} s ({total:,} "
            f"{plan.unit} of {per_step * 1000:.3g} ms, {basis}); the limit is {limit:g} s per "
            f"job (max_job_seconds, PLAYGROUND_MAX_JOB_SECONDS). "
            f"{plan.advice(int(limit / per_step))}.",
            plan.length_field,
        )

    def _check_running(self, job: Job, step_seconds: float | None, timed_steps: int) -> None:
        """After each chunk: the job's steps at the quickest step measured so far (once
        ``MIN_TIMED_STEPS`` were timed) must fit in ``max_job_seconds`` (else it fails now, not
        at the limit), and so must the seconds it has computed."""
        if step_seconds is not None:
            job.step_seconds = min(step_seconds, job.step_seconds or step_seconds)
            job.timed_steps += timed_steps
        plan = job.plan
        if job.step_seconds is not None and job.timed_steps >= MIN_TIMED_STEPS:
            self._step_seconds.put(plan.cost_key, job.step_seconds)
            basis = f"measured on its first {plan.unit}"
            self._check_estimate(plan, job.total, job.step_seconds, basis)
        limit = self.settings.max_job_seconds
        if job.compute_seconds > limit:
            raise PlaygroundError(
                422,
                f"This training job computed for {job.compute_seconds:.3g} s ({job.step:,} of "
                f"its {job.total:,} {plan.unit}); the limit is {limit:g} s per job "
                f"(max_job_seconds, PLAYGROUND_MAX_JOB_SECONDS). Use fewer {plan.unit}, a "
                "smaller batch or a smaller module.",
                plan.length_field,
            )

    def submit(
        self,
        record: ModuleRecord,
        plan: Any,
        settings: dict,
        dataset: dict,
        paused: bool = False,
        client: str | None = None,
    ) -> Job:
        """Queue a job for ``record`` (``paused``: it stops before its first step, for Step);
        429 when its workspace, or its client address ``client``, already runs the most it
        may, 409 when the module has a job. (Its budgets were checked when it was planned:
        ``app.training.service.check_job_budget``.)"""
        self.expire_paused()
        job = Job(
            workspace=record.workspace,
            module_id=record.id,
            module_kind=record.kind,
            plan=plan,
            settings=settings,
            dataset=dataset,
            client=client,
        )
        job.initial_revision = record.revision
        job._pause = paused
        job.state = plan.start_state()
        with self._lock:
            # every limit on jobs at once is checked here, under one lock (so two requests at
            # the same moment cannot both pass): per workspace, per client address, per module
            self.check_capacity(record.workspace, client)
            self.check_module_free(record)
            self._jobs[job.id] = job
            self._evict()
        self._save(job)
        self._scheduler.add(job)
        return job

    def _evict(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.finished]
        for job_id in finished[: max(0, len(self._jobs) - MAX_JOBS_IN_MEMORY)]:
            del self._jobs[job_id]

    # Reading ---------------------------------------------------------------------------------
    def get(self, workspace: str, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.workspace == workspace:
            return job
        return None

    def describe(self, workspace: str, job_id: str, with_view: bool = False) -> dict | None:
        """The job's public record, from memory or (after a restart) from the database."""
        job = self.get(workspace, job_id)
        if job is not None:
            return job.public(with_view)
        if len(job_id) > 32:
            return None
        stored = self.storage.get_job(workspace, job_id)
        if stored is None:
            return None
        return self._restored(stored, with_view)

    @staticmethod
    def _restored(stored: dict, with_view: bool) -> dict:
        if stored.get("status") in ACTIVE:
            stored["status"] = "failed"
            stored["error"] = (
                "The server restarted while this job was running; the module kept the "
                "parameters it had before the job."
            )
        if not with_view:
            stored.pop("view", None)
        return stored

    def list(self, workspace: str, module_id: str | None = None) -> list[dict]:
        """Jobs of a workspace (newest first), in memory and stored."""
        self.expire_paused()
        seen = set()
        out = []
        for job in reversed(self._jobs.values()):
            if job.workspace == workspace and (module_id is None or job.module_id == module_id):
                seen.add(job.id)
                out.append(job.public())
        for stored in self.storage.list_jobs(workspace, module_id):
            if stored.get("job") not in seen:
                out.append(self._restored(stored, False))
        return out

    def stop(self, workspace: str, job_id: str) -> dict | None:
        job = self.get(workspace, job_id)
        if job is None:
            return self.describe(workspace, job_id)
        self._stop_job(job)
        return job.public()

    def stop_workspace(self, workspace: str) -> int:
        """Stop every unfinished job of ``workspace`` (its workspace is being deleted)."""
        with self._lock:
            mine = [j for j in self._jobs.values() if j.workspace == workspace and not j.finished]
        for job in mine:
            self._stop_job(job)
        return len(mine)

    def _stop_job(self, job: Job) -> None:
        """Stop ``job``: one that never started ends at once; a running one after its chunk
        (then one last chunk records what is left, and its parameters are saved); a paused or
        a watched one goes back in the turn at once."""
        with job.cond:
            if job.finished:
                return
            job.request_stop()
            stop_now = job.started_at is None and not job._in_flight
            if stop_now:
                job.status = "stopped"
            elif job._parked:
                self._unpark(job)
            else:
                self._scheduler.wake(job)
        if stop_now:
            self._finish(job, None, "stopped")

    # Play, pause, step -----------------------------------------------------------------------
    def _active(self, workspace: str, job_id: str) -> Job:
        job = self.get(workspace, job_id)
        if job is None:
            if self.describe(workspace, job_id) is None:
                raise PlaygroundError(404, f"No training job {job_id!r} in your workspace.")
            raise PlaygroundError(
                409, "This training has ended; press Train to start a new one.", "job"
            )
        if job.finished:
            raise PlaygroundError(
                409,
                f"This training has ended ({job.status}); press Train to start a new one.",
                "job",
            )
        return job

    def _play(self, job: Job, pause: bool, budget: int) -> None:
        """Set the pause state (the caller holds ``job.cond``); a parked job that has something
        to do goes back in the turn; a watched job waiting for its pace does not wait."""
        job._pause = pause
        job._budget = budget
        job.version += 1
        if job._parked and (not pause or budget):
            self._unpark(job)
        elif pause:
            self._scheduler.wake(job)
        job.cond.notify_all()

    def pause(self, workspace: str, job_id: str) -> dict:
        """Pause after the chunk under way; 409 once it ended."""
        job = self._active(workspace, job_id)
        with job.cond:
            self._play(job, True, 0)
        return job.public()

    def resume(self, workspace: str, job_id: str) -> dict:
        """Go on playing; 409 once it ended."""
        job = self._active(workspace, job_id)
        with job.cond:
            self._play(job, False, 0)
        return job.public()

    def step(self, workspace: str, job_id: str, wait: float = STEP_WAIT_SECONDS) -> dict:
        """One step (one batch), then pause; waits (at most ``wait`` seconds) until it is done.
        A playing job pauses after the chunk under way."""
        job = self._active(workspace, job_id)
        with job.cond:
            self._play(job, True, min(job._budget + 1, MAX_STEP_BUDGET))
            job.cond.wait_for(
                lambda: job.finished or (job._parked and job._budget == 0), timeout=wait
            )
        return job.public()

    def _unpark(self, job: Job) -> None:
        """Put a parked job back in the turn (the caller holds ``job.cond``)."""
        now = time.time()
        if job._paused_at is not None:
            job.paused_seconds += now - job._paused_at
            if job._pace_origin is not None:
                job._pace_origin += now - job._paused_at
            job._paused_at = None
        job._parked = False
        job.status = "running" if job.started_at is not None else "queued"
        job.version += 1
        self._scheduler.add(job)

    def _park(self, job: Job) -> bool:
        """Before each chunk (the caller holds ``job.cond``): park the job when it is paused
        with no single step to do. False: go on (one step when paused)."""
        if job.should_stop() or not job._pause:
            return False
        if job._budget > 0:
            job._budget -= 1
            job.status = "running"
            return False
        job._parked = True
        job._paused_at = time.time()
        job.status = "paused"
        job.version += 1
        job.cond.notify_all()
        return True

    def expire_paused(self) -> None:
        """Stop the jobs paused for longer than ``max_paused_seconds`` (parameters saved)."""
        limit = getattr(self.settings, "max_paused_seconds", None)
        if limit is None:
            return
        now = time.time()
        for job in list(self._jobs.values()):
            paused_at = job._paused_at
            if job._parked and paused_at is not None and now - paused_at > limit:
                job.note = f"Stopped after {limit:g} s paused (max_paused_seconds)."
                self._stop_job(job)

    # Reset -------------------------------------------------------------------------------------
    def reset_module(self, record: ModuleRecord) -> ModuleRecord:
        """Back to the module's initial parameters: its jobs are stopped and their results
        discarded (under the lock that saving a result takes, so none lands after this)."""
        with self._persist_lock:
            for job in list(self._jobs.values()):
                same = job.workspace == record.workspace and job.module_id == record.id
                if same and not job.finished:
                    job.discard = True
                    self._stop_job(job)
            return self.store.reset_leaves(record)

    def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        """Stop every job (each saves the parameters of its last chunk, at once or when the
        chunk under way comes back), wait for them (at most ``timeout``), then end the
        scheduler and the threads."""
        self._closing = True
        jobs = list(self._jobs.values())
        for job in jobs:
            self._stop_job(job)
        deadline = time.monotonic() + timeout
        for job in jobs:
            with job.cond:
                job.cond.wait_for(
                    lambda job=job: job.finished, max(0.0, deadline - time.monotonic())
                )
        self._scheduler.close(max(0.0, deadline - time.monotonic()))
        self._finisher.shutdown(wait=True)

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads of this manager that are running (the scheduler's, while it has one)."""
        thread = self._scheduler.thread
        return [thread] if thread is not None and thread.is_alive() else []

    # Running: the scheduler's two calls --------------------------------------------------------
    def _chunk_steps(self, job: Job) -> int:
        """The steps of the job's next chunk: all that are left (the chunk ends on time), or,
        for a watched job, those that are due by now."""
        remaining = job.total - job.step
        pace = job.pace
        if pace <= 0:
            return remaining
        if job._pace_origin is None:  # its first step; the pace counts from it
            return 1
        due = math.floor(job.total * (time.monotonic() - job._pace_origin) / pace)
        return max(1, min(remaining, due - job.step))

    def _dispatch(self, job: Job) -> Future | None:
        """The job's next chunk, sent to a worker; None when it has none to run now (it ended,
        parked, or was stopped before it started)."""
        with job.cond:
            if job.finished or job._in_flight:
                return None
            stopping = job.should_stop()
            if stopping and (job.started_at is None or self._closing):
                # never started, or the app is closing: it ends now, with what it learnt (the
                # state of its last chunk), without a last chunk
                started = job.started_at is not None
                job.status = "stopped" if not started else job.status
                stop_now = True
            else:
                stop_now = False
                if self._park(job):
                    return None
                single = job._pause and not stopping
                steps = 0 if stopping else (1 if single else self._chunk_steps(job))
                first = job.started_at is None
                if first:
                    job.started_at = time.time()
                    job.status = "running"
                    job.version += 1
                    job.cond.notify_all()
                view = single or stopping or time.monotonic() - job._last_view >= VIEW_SECONDS
                job._in_flight = True
                job._final = steps == 0
                parcel = job.parcel.bare() if job._plan_sent else job.parcel
                args = (parcel, job.state, steps, CHUNK_SECONDS, view, single)
        if stop_now:
            self._finish(job, self._model(job) if started else None, "stopped")
            return None
        if first:
            self._finisher.submit(self._save, job)
        try:
            return self._submit(job, *args)
        except Exception as error:  # noqa: BLE001 - the job fails in words; the turn goes on
            logger.exception("the chunk of training job %s could not be sent", job.id)
            self._fail(job, f"Training could not start a step: {type(error).__name__}: {error}")
            return None

    def _submit(self, job: Job, *args: Any) -> Future:
        return self.pool.submit(
            train_chunk,
            *args,
            lane="train",
            affinity=job.plan.cost_key,
            wait=BUSY_WAIT_SECONDS,
            client=job.client,
        )

    def _complete(self, job: Job, future: Future) -> None:
        """A chunk of ``job`` finished: take its state and what it shows, then the job ends,
        parks (at its next dispatch) or goes back in the turn, now or when its pace says."""
        try:
            state, report = future.result()
        except WorkersBusy:  # every worker is computing other things: this chunk, again later
            with job.cond:
                job._in_flight = False
            self._scheduler.add(job, time.monotonic() + BUSY_RETRY_SECONDS)
            return None
        except PlanMissing:  # that worker has not got the plan: this chunk again, with it
            with job.cond:
                job._in_flight = False
                job._plan_sent = False
            self._scheduler.add(job)
            return None
        except PlaygroundError as error:
            return self._fail(job, worker_failure(error) or error.message)
        except Exception as error:  # noqa: BLE001 - reported on the job, in words
            message = worker_failure(error)
            if message is None:
                logger.exception("training job %s failed", job.id)
                message = f"Training failed: {type(error).__name__}: {str(error)[:500]}"
            return self._fail(job, message)
        with job.cond:
            job._in_flight = False
            job._plan_sent = True
            job.state = state
            job.step = state["step"]
            for values in report.records:
                job.record(**values)
            if report.view is not None:
                job.view = report.view
                job._last_view = time.monotonic()
            job.compute_seconds += report.compute_seconds
            pace = job.pace
            if pace > 0 and job._pace_origin is None and report.steps:
                job._pace_origin = time.monotonic() - pace * job.step / job.total
            job.version += 1
            job.cond.notify_all()
            ended = job._final or job.step >= job.total
        if ended:
            status = "stopped" if job.should_stop() and job.step < job.total else "done"
            self._finisher.submit(self._finish, job, self._model(job), status)
            return None
        try:
            self._check_running(job, report.step_seconds, report.timed_steps)
        except PlaygroundError as error:
            return self._fail(job, error.message)
        self._scheduler.add(job, self._next_time(job))
        return None

    def _next_time(self, job: Job) -> float | None:
        """When the watched job's next steps are due (None: now)."""
        pace = job.pace
        if pace <= 0 or job._pace_origin is None or job._pause or job.should_stop():
            return None
        period = max(1, math.ceil(job.total * PACE_SECONDS / pace))
        return job._pace_origin + pace * min(job.step + period, job.total) / job.total

    def _fail(self, job: Job, message: str) -> None:
        with job.cond:
            job._in_flight = False
        job.error = message
        self._finisher.submit(self._finish, job, None, "failed")

    def _model(self, job: Job) -> Any:
        """The job's model as its state has it (the module's structure, the state's arrays)."""
        return replace_arrays(job.plan.model, job.state["params"])

    def _finish(self, job: Job, model: Any, status: str) -> None:
        """Persist the trained parameters (done or stopped), then mark the job ``status``."""
        if model is not None and job.step > 0:
            try:
                self._persist(job, model)
            except Exception as error:  # noqa: BLE001 - reported on the job
                logger.exception("saving the parameters of job %s failed", job.id)
                job.error = f"The parameters could not be saved: {type(error).__name__}: {error}"
                status = "failed"
        job.plan = job.parcel = None  # let the data and the models go
        job.state = None
        with job.cond:
            job.finished_at = time.time()
            if job._paused_at is not None:
                job.paused_seconds += job.finished_at - job._paused_at
                job._paused_at = None
            job._parked = False
            job.status = status
            job.version += 1
            job.cond.notify_all()
        self._save(job)

    def _persist(self, job: Job, model: Any) -> None:
        with self._persist_lock:
            self._persist_locked(job, model)

    def _persist_locked(self, job: Job, model: Any) -> None:
        if job.discard:
            job.note = "The module was reset while this job ran; its parameters were not saved."
            return
        record = self.store.get(job.workspace, job.module_id)
        if record is None:
            job.note = "The module was removed while it trained; the parameters were not saved."
            return
        if record.kind != job.module_kind:
            job.note = "The module changed while it trained; the parameters were not saved."
            return
        job.diff = parameter_diff(job.plan.model, model)
        updated = self.store.set_leaves(record, model)
        job.revision = updated.revision
        if record.revision != getattr(job, "initial_revision", record.revision):
            job.note = (
                "The module's parameters changed while this job ran (another job finished); "
                "this job's result replaced them."
            )

    def _save(self, job: Job) -> None:
        try:
            self.storage.save_job(job.id, job.workspace, job.module_id, job.public(True))
        except Exception:  # noqa: BLE001 - the job goes on; only its stored record is late
            logger.exception("storing the record of job %s failed", job.id)
