"""Opening a lesson's step in a workspace, and running its preset there.

Opening a step builds its module in the visitor's workspace, or reuses the newest module of
the workspace built from the same spec and not trained since (``keep_trained`` steps reuse a
trained one too), so reloading a step's page does not fill the workspace with copies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.catalog import CatalogEntry
from app.errors import PlaygroundError
from app.lessons.library import lessons
from app.lessons.model import Lesson, Step
from app.runs.digest import host_leaves
from app.runs.results import run_payload
from app.runs.service import run_scopes
from app.runs.spec import RunRequest
from app.store import ModuleRecord, ModuleStore
from app.training.service import compute_dynamics, start_training

BuildModule = Callable[[CatalogEntry], ModuleRecord]
"""Builds a spec in the caller's workspace (limits checked, in a compute slot)."""


def find_lesson(lesson_id: str) -> Lesson:
    """The lesson ``lesson_id``; 404 naming the lessons there are."""
    found = lessons().get(lesson_id[:60])
    if found is None:
        raise PlaygroundError(
            404,
            f"No lesson {lesson_id[:60]!r}. The lessons are: {', '.join(lessons())}.",
            field="lesson",
        )
    return found


def find_step(lesson: Lesson, number: int) -> Step:
    """Step ``number`` (from 1) of ``lesson``; 404 naming how many steps it has."""
    step = lesson.step(number)
    if step is None:
        raise PlaygroundError(
            404,
            f"The lesson {lesson.id!r} has steps 1 to {len(lesson.steps)}; there is no step "
            f"{number}.",
            field="step",
        )
    return step


def open_step(store: ModuleStore, workspace: str, step: Step, build: BuildModule) -> ModuleRecord:
    """The step's module in ``workspace``: the newest one built from the same spec (untrained,
    unless the step keeps a trained one), else a new one."""
    spec = step.module.spec()
    params = spec.model_dump(mode="json")
    for record in store.list(workspace):
        if record.kind == spec.kind and record.params == params:
            if step.keep_trained or not record.trained:
                return record
    return build(spec)


def module_of_step(store: ModuleStore, workspace: str, step: Step, module_id: str) -> ModuleRecord:
    """The workspace's module ``module_id``, which must be built from the step's spec (404 else)."""
    record = store.get(workspace, module_id[:32])
    spec = step.module.spec()
    if record is None or record.kind != spec.kind or record.params != spec.model_dump(mode="json"):
        raise PlaygroundError(
            404,
            "This step's module is no longer in your workspace; open the step again to build it.",
            field="module",
        )
    return record


@dataclass(frozen=True)
class BatchMean:
    """The per-example gradients' mean over the batch beside the batch gradient."""

    examples: int
    max_difference: float
    batch_scale: float
    rows: list[tuple[str, str, str]]
    """(leaf path, its per-example mean's first values, the batch gradient's)."""


def batch_request(per_example: RunRequest) -> RunRequest:
    """The batch gradient of the same loss on the same input (the per-example run less vmap)."""
    return per_example.model_copy(update={"transforms": ["grad"], "batched": False})


def _first_values(array: np.ndarray, count: int = 3) -> str:
    return ", ".join(f"{v:.4g}" for v in np.asarray(array).ravel()[:count]) + (
        ", …" if array.size > count else ""
    )


def batch_mean(per_example: Any, batch: Any) -> BatchMean:
    """Compare the mean over axis 0 of the per-example gradient tree with the batch gradient
    (NumPy, leaf by leaf, in float64)."""
    per_leaves = dict(host_leaves(per_example))
    batch_leaves = dict(host_leaves(batch))
    if per_leaves.keys() != batch_leaves.keys():
        raise ValueError("the per-example and batch gradients have different trees")
    worst, scale, rows, examples = 0.0, 0.0, [], 0
    for path, stacked in per_leaves.items():
        stacked = np.asarray(stacked, dtype=np.float64)
        mean = stacked.mean(axis=0)
        whole = np.asarray(batch_leaves[path], dtype=np.float64)
        examples = stacked.shape[0]
        worst = max(worst, float(np.max(np.abs(mean - whole))) if whole.size else 0.0)
        scale = max(scale, float(np.max(np.abs(whole))) if whole.size else 0.0)
        rows.append((path or "(the result)", _first_values(mean), _first_values(whole)))
    return BatchMean(examples, worst, scale, rows)


@dataclass
class StepRun:
    """What running a step's preset gave: the API's answer and, for the page, what to draw."""

    preset: str
    answer: dict
    outcome: Any = None
    model: Any = None
    batch_mean: BatchMean | None = None
    job: str | None = None


def run_preset(
    services: Any,
    record: ModuleRecord,
    step: Step,
    include: Any = None,
    compile_scope: str | None = None,
) -> StepRun:
    """Run the step's preset on its module: a run (and, for ``batch_mean``, the batch gradient
    beside it), a training job (queued; its record), or the network's dynamics.
    ``compile_scope`` (app.runs.scopes.scope_of): whose view of compiling the answer tells."""
    workspace = record.workspace
    if step.run is not None:
        spec = record.spec()
        with services.compute.client_slot():  # the runs are tasks of the worker pool
            model = services.store.load(record)
            outcome = services.runs.run(
                spec, record, step.run, scopes=run_scopes(record), compile_scope=compile_scope
            )
            mean = None
            if step.batch_mean:
                batch = services.runs.run(spec, record, batch_request(step.run), eager=False)
                mean = batch_mean(outcome.result, batch.result)
        answer = run_payload(outcome, spec, services.settings, include)
        if mean is not None:
            answer["batch_mean"] = {
                "examples": mean.examples,
                "max_difference": mean.max_difference,
                "batch_scale": mean.batch_scale,
            }
        return StepRun("run", answer, outcome, model, mean)
    if step.training is not None:
        job = start_training(services, workspace, record, step.training)
        return StepRun("training", job, job=job["job"])
    if step.dynamics is not None:
        return StepRun("dynamics", compute_dynamics(services, workspace, record, step.dynamics))
    raise PlaygroundError(422, "This step has nothing to run: explore its module instead.")
