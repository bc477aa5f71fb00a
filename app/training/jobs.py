"""Training jobs: run in the background, watched while they run, persisted when they end.

A :class:`JobManager` runs jobs on a small pool of worker threads of its own (sized from
``max_concurrent_computations``), so a job never holds a request's compute slot. A workspace may
have ``max_jobs_per_workspace`` jobs queued, running or paused, and a client address
``max_jobs_per_client`` whatever its workspaces; one more is a 429. Stop is a
flag the training loop reads before every step. When a job ends, done or stopped, its trained
parameters replace the module's (``store.set_leaves``: persisted, revision bumped), and the job
keeps a diff of how far every leaf moved. Each job's record is written to the database at start
and at the end, so it can still be read after a restart.

Play, pause, step: a plan's ``run(job)`` is a generator that yields after every step, so a
worker drives it one step at a time. A paused job is *parked*: its generator is kept, its worker
goes on to the next queued job (a paused job holds no thread). Resume, a single step or stop put
it back on the queue. Every change of a job's pause state happens under the job's own lock
(``Job.cond``), and a job is on the queue or in a worker at most once. A job paused for longer
than ``max_paused_seconds`` is stopped (its parameters saved). Reset (back to the module's
initial parameters) stops the module's jobs and discards their results under the lock that
saving takes, so a job ending at that moment cannot overwrite the reset.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from typing import Any

import equinox as eqx
import jax
import numpy as np

from app.errors import PlaygroundError
from app.serving import YOUR_ADDRESS
from app.store import ModuleRecord, ModuleStore, new_id
from app.training.storage import TrainingStorage
from library import trainable_filter

logger = logging.getLogger("playground.training")

FINISHED = ("done", "failed", "stopped")
ACTIVE = ("queued", "running", "paused")
MAX_JOBS_IN_MEMORY = 32
"""Finished jobs kept in memory (older ones are read back from the database)."""
SHUTDOWN_SECONDS = 5.0
"""When the app stops (``Services.close``), running jobs are stopped (their parameters saved)
and waited for this long."""
WORKER_IDLE_SECONDS = 30.0
"""A worker thread with no job for this long ends (a new job starts another)."""
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
    """One training job: settings, progress, metrics, and the result once it ends."""

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
        self.client = client
        """The address of the client that submitted it (for ``max_jobs_per_client``)."""
        self.module_id = module_id
        self.module_kind = module_kind
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
        self.discard = False
        """Set by a reset: the job's parameters are not saved when it ends."""
        self.cond = threading.Condition()
        """Guards the pause state below and the status; notified on every change."""
        self._pause = False
        self._budget = 0
        self._parked = False
        self._paused_at: float | None = None
        self._pace_origin: float | None = None
        self.runner: Any = None
        """The plan's ``run(job)`` generator, once started."""
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # Called by the training loop -------------------------------------------------------------
    def should_stop(self) -> bool:
        return self._stop.is_set()

    def set_step(self, step: int) -> None:
        """Step ``step`` is done. With ``watch_seconds`` in the settings, wait until that share
        of the (unpaused) time has passed, so that a fast job can be watched; Stop and Pause end
        the wait."""
        with self.cond:
            self.step = step
            self.version += 1
            self.cond.notify_all()
            pace = self.settings.get("watch_seconds") or 0.0
            if self._pace_origin is None:  # the pace counts from the first step (not the compile)
                self._pace_origin = time.time() - (pace / self.total if self.total else 0.0)
            if pace > 0 and self.total and not self._pause:
                wait = self._pace_origin + pace * step / self.total - time.time()
                if wait > 0:
                    self.cond.wait_for(
                        lambda: self._stop.is_set() or self._pause, timeout=min(wait, pace)
                    )

    def wants_frame(self) -> bool:
        """Paused (single steps): record and redraw after every step, so each one shows."""
        return self._pause

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
            "revision": self.revision,
            "diff": self.diff,
        }
        if with_view:
            out["view"] = self.view
        return out


class JobManager:
    """Every training job of one app: a queue, worker threads, limits and persistence."""

    def __init__(self, store: ModuleStore, storage: TrainingStorage, settings: Any):
        self.store = store
        self.storage = storage
        self.settings = settings
        self.workers = max(1, settings.max_concurrent_computations // 2)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._persist_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

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
        may."""
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
        with self._lock:
            self.check_capacity(record.workspace, client)
            self._jobs[job.id] = job
            self._evict()
        self._save(job)
        with self._lock:
            self._queue.put(job)
            self._start_workers()
        return job

    def _evict(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.finished]
        for job_id in finished[: max(0, len(self._jobs) - MAX_JOBS_IN_MEMORY)]:
            del self._jobs[job_id]

    def _start_workers(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"training-worker-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

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
        """Stop ``job``: a queued one ends at once, a running one before its next step, a
        paused one goes back to a worker, which ends it (its parameters saved)."""
        with job.cond:
            if job.finished:
                return
            job.request_stop()
            stop_now = job.runner is None and job.status == "queued"
            if stop_now:
                job.status = "stopped"
            elif job._parked:
                self._unpark(job)
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
        to do goes back on the queue; a watch_seconds wait ends."""
        job._pause = pause
        job._budget = budget
        job.version += 1
        if job._parked and (not pause or budget):
            self._unpark(job)
        job.cond.notify_all()

    def pause(self, workspace: str, job_id: str) -> dict:
        """Pause before the next step (the step under way finishes); 409 once it ended."""
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
        A playing job pauses after the step under way."""
        job = self._active(workspace, job_id)
        with job.cond:
            self._play(job, True, min(job._budget + 1, MAX_STEP_BUDGET))
            job.cond.wait_for(
                lambda: job.finished or (job._parked and job._budget == 0), timeout=wait
            )
        return job.public()

    def _unpark(self, job: Job) -> None:
        """Put a parked job back on the queue (the caller holds ``job.cond``)."""
        now = time.time()
        if job._paused_at is not None:
            job.paused_seconds += now - job._paused_at
            if job._pace_origin is not None:
                job._pace_origin += now - job._paused_at
            job._paused_at = None
        job._parked = False
        job.status = "running" if job.runner is not None else "queued"
        job.version += 1
        with self._lock:
            self._queue.put(job)
            self._start_workers()

    def _park(self, job: Job) -> bool:
        """Before each step: park the job when it is paused with no single step to do (its
        worker goes on to another job). False: go on with one step."""
        with job.cond:
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
        """Stop every job (a paused one goes back to a worker, which saves its parameters),
        end the worker threads and wait for them (at most ``timeout``)."""
        for job in list(self._jobs.values()):
            self._stop_job(job)
        with self._lock:
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # Running ---------------------------------------------------------------------------------
    def _work(self) -> None:
        """Run queued jobs; after ``WORKER_IDLE_SECONDS`` without one, the thread ends."""
        while True:
            try:
                job = self._queue.get(timeout=WORKER_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._threads.remove(threading.current_thread())
                        return
                continue
            if job is None:  # shutdown
                with self._lock:
                    self._threads.remove(threading.current_thread())
                return
            try:
                self._run(job)
            except Exception:  # noqa: BLE001 - a worker must survive anything
                logger.exception("training job %s crashed", job.id)
            finally:
                self._queue.task_done()

    def _run(self, job: Job) -> None:
        """Drive ``job``'s generator one step at a time until it ends or parks."""
        with job.cond:
            if job.finished:  # stopped while queued
                return
            first = job.runner is None
            cancelled = first and job.should_stop()  # stopped at shutdown before it started
            if first and not cancelled:
                job.status = "running"
        if cancelled:
            self._finish(job, None, "stopped")
            return
        if first:
            job.started_at = time.time()
            job.version += 1
            self._save(job)
            job.runner = job.plan.run(job)
        try:
            while True:
                if self._park(job):
                    return
                next(job.runner)
        except StopIteration as end:
            model = end.value
        except PlaygroundError as error:
            job.error = error.message
            self._finish(job, None, "failed")
            return
        except Exception as error:  # noqa: BLE001 - reported on the job, in words
            logger.exception("training job %s failed", job.id)
            job.error = f"Training failed: {type(error).__name__}: {str(error)[:500]}"
            self._finish(job, None, "failed")
            return
        self._finish(job, model, "stopped" if job.should_stop() else "done")

    def _finish(self, job: Job, model: Any, status: str) -> None:
        """Persist the trained parameters (done or stopped), then mark the job ``status``."""
        if model is not None and job.step > 0:
            try:
                self._persist(job, model)
            except Exception as error:  # noqa: BLE001 - reported on the job
                logger.exception("saving the parameters of job %s failed", job.id)
                job.error = f"The parameters could not be saved: {type(error).__name__}: {error}"
                status = "failed"
        job.plan = None  # let the data and the models go
        job.runner = None
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
