"""From a request to a job or to a dynamics answer: the request models, the defaults, the
checks, the plan.

Everything a job needs is checked here, in the request, before anything is queued: the
settings' bounds, the dataset (generated or uploaded) and whether it fits the module's input and
output. Each problem is a 422 naming the field and, for shapes, both shapes.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Literal

import equinox as eqx
import jax
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from app.cache import BoundedCache
from app.errors import PlaygroundError
from app.runs.inputs import prepare_input
from app.runs.limits import check_trace_size
from app.runs.spec import InputSpec
from app.services import Services
from app.serving import current_client
from app.store import ModuleRecord, new_id
from app.training import dynamics
from app.training.chunks import array_leaves
from app.training.datasets import (
    MAX_SEED,
    CsvDataset,
    Data,
    DatasetChoice,
    GeneratedDataset,
    as_dataset,
    csv_data,
    generate,
    parse_csv,
)
from app.training.gradient import GradientPlan, prepare_objective
from app.training.local import (
    LocalPlan,
    check_network_data,
    one_vs_all,
    slot_sizes,
    state_template,
)
from app.training.losses import LossName
from app.training.plan import plan_cost
from app.training.speed import StepCost
from app.training.views import finite_list
from library.orchestrators import SequentialOrchestrator

MAX_BATCH_SIZE = 4096
COSTS_KEPT = 256
"""Costs of jobs' steps kept (one per structure, batch and data shapes)."""
MISSING = object()
MAX_WATCH_SECONDS = 60.0
MAX_DYNAMICS_SWEEPS = 100
"""``steps_train`` and ``steps_inference`` of the local rule, per batch."""

DEFAULTS = {
    "gradient": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 32, "steps": 500},
    "local": {"optimizer": "adam", "learning_rate": 5e-3, "batch_size": 16, "epochs": 3},
}
"""What a request leaves out. The local rule's are the reference protocol's (docs/library.md)."""


class TrainRequest(BaseModel):
    """The body of ``POST /api/modules/{id}/train``. Every field is optional."""

    model_config = ConfigDict(extra="forbid")

    dataset: DatasetChoice | None = Field(
        None,
        description="A dataset name, {name, noise, num_examples, test_fraction, seed} or "
        "{csv_id, test_fraction, seed, task}. Default: circle (2 inputs), sine (1 input), "
        "prototypes (library networks).",
    )
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="The Optax optimiser.")
    learning_rate: float | None = Field(
        None,
        gt=0,
        le=10,
        allow_inf_nan=False,
        description="Default 0.01 (gradient) or 0.005 (library networks, the reference's).",
    )
    weight_decay: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="adamw's weight decay (1e-4)."
    )
    steps: int | None = Field(
        None, ge=1, description="Gradient steps (gradient training; default 500)."
    )
    epochs: int | None = Field(
        None,
        ge=1,
        description="Passes over the training set: library networks (default 3); for gradient "
        "training, instead of steps.",
    )
    batch_size: int | None = Field(
        None, ge=1, le=MAX_BATCH_SIZE, description="Default 32 (gradient) or 16 (networks)."
    )
    loss: LossName = Field(
        "auto",
        description="auto (logistic for one output, softmax cross-entropy for one per class, "
        "mse for regression), logistic, softmax_cross_entropy or mse. Gradient training only.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the batches' order.")
    watch_seconds: float = Field(
        0.0,
        ge=0,
        le=MAX_WATCH_SECONDS,
        allow_inf_nan=False,
        description="Spread the job over at least this many seconds, so that a fast training "
        "can be watched live (the page asks for 5); 0 trains at full speed.",
    )
    paused: bool = Field(
        False,
        description="Start paused, before the first step: then POST /api/jobs/{job}/step trains "
        "one batch at a time and /resume plays.",
    )
    steps_train: int = Field(
        10,
        ge=0,
        le=MAX_DYNAMICS_SWEEPS,
        description="Library networks: sweeps of step after init(x, y), per batch.",
    )
    steps_inference: int = Field(
        10,
        ge=0,
        le=MAX_DYNAMICS_SWEEPS,
        description="Library networks: sweeps of step_inference before backward, and before "
        "predict when measuring accuracy.",
    )


# --- data ----------------------------------------------------------------------------------------


def load_data(choice: Any, services: Services, workspace: str) -> Data:
    """The dataset a request names, generated or read from the workspace's uploads."""
    spec = as_dataset(choice)
    if isinstance(spec, GeneratedDataset):
        return generate(spec, services.settings)
    stored = services.storage.get_csv(workspace, spec.csv_id)
    if stored is None:
        raise PlaygroundError(
            404,
            f"No uploaded CSV {spec.csv_id!r} in your workspace: upload it with "
            "POST /api/datasets/csv.",
            "dataset.csv_id",
        )
    return csv_data(spec, stored.columns, stored.data, stored.filename)


def upload_csv(services: Services, workspace: str, filename: str, content: bytes) -> dict:
    """Check and store an uploaded CSV file: ``{"csv_id", "rows", "columns", ...}``."""
    columns, table = parse_csv(content, services.settings)
    elements = table.size
    if elements > services.settings.max_array_elements:
        raise PlaygroundError(
            422,
            f"the file holds {elements:,} numbers; the limit is "
            f"{services.settings.max_array_elements:,} (max_array_elements).",
            "file",
        )
    csv_id = new_id(9)
    name = (filename or "upload.csv").replace("\\", "/").rsplit("/", 1)[-1][:80]
    services.storage.save_csv(csv_id, workspace, name, columns, table)
    preview = csv_data(CsvDataset(csv_id=csv_id), columns, table, name)
    return {
        "csv_id": csv_id,
        "filename": name,
        "rows": int(table.shape[0]),
        "columns": int(table.shape[1]),
        "names": columns,
        "task": preview.task,
        "num_classes": preview.num_classes,
        "features": int(table.shape[1] - 1),
    }


def default_dataset(entry: Any, is_network: bool) -> GeneratedDataset:
    if is_network:
        return GeneratedDataset(name="prototypes")
    example = tuple(entry.example_input_shape())
    if getattr(entry, "batched_input", False):
        example = example[1:]
    size = math.prod(example) if example else 1
    if size == 1:
        return GeneratedDataset(name="sine")
    return GeneratedDataset(name="circle")


# --- planning ------------------------------------------------------------------------------------


def _limit(value: int, limit: int, name: str, setting: str) -> None:
    if value > limit:
        raise PlaygroundError(
            422, f"{name} is {value:,}; the limit is {limit:,} ({setting}).", name
        )


def plan_training(
    services: Services, workspace: str, record: ModuleRecord, request: TrainRequest
) -> tuple[Any, dict, dict]:
    """``(plan, resolved settings, dataset summary)`` for a request, or a 422."""
    settings = services.settings
    entry = record.spec()
    model = services.store.load(record)
    is_network = isinstance(model, SequentialOrchestrator)
    mode = "local" if is_network else "gradient"
    defaults = DEFAULTS[mode]
    choice = request.dataset if request.dataset is not None else default_dataset(entry, is_network)
    spec = as_dataset(choice)
    data = load_data(spec, services, workspace)
    optimizer = request.optimizer
    learning_rate = request.learning_rate or defaults["learning_rate"]
    batch_size = min(request.batch_size or defaults["batch_size"], len(data.x_train))
    weight_decay = request.weight_decay
    if weight_decay is not None and optimizer != "adamw":
        raise PlaygroundError(
            422,
            f"weight_decay applies to adamw only; the optimizer is {optimizer}.",
            "weight_decay",
        )
    resolved: dict[str, Any] = {
        "dataset": spec.model_dump(),
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "seed": request.seed,
    }
    if optimizer == "adamw":
        resolved["weight_decay"] = 1e-4 if weight_decay is None else weight_decay
    if is_network:
        if request.steps is not None:
            raise PlaygroundError(
                422,
                "library networks train in epochs with their local rule: give 'epochs', not "
                "'steps'.",
                "steps",
            )
        if request.loss != "auto":
            raise PlaygroundError(
                422,
                "library networks learn by their local (perceptron) rule, not by a loss: leave "
                "'loss' out.",
                "loss",
            )
        epochs = request.epochs or defaults["epochs"]
        _limit(epochs, settings.max_train_epochs, "epochs", "max_train_epochs")
        state = state_template(entry, model, data)
        encoder = check_network_data(state, data, getattr(spec, "seed", 0))
        plan = LocalPlan(
            model,
            entry,
            state,
            data,
            encoder,
            optimizer_name=optimizer,
            learning_rate=learning_rate,
            weight_decay=resolved.get("weight_decay"),
            epochs=epochs,
            batch_size=batch_size,
            seed=request.seed,
            steps_train=request.steps_train,
            steps_inference=request.steps_inference,
        )
        check_job_budget(services, plan, settings)
        resolved.update(
            epochs=epochs,
            steps_train=request.steps_train,
            steps_inference=request.steps_inference,
            batches_per_epoch=plan.batches_per_epoch,
            input_encoding=encoder.describe(),
        )
    else:
        if request.steps is not None and request.epochs is not None:
            raise PlaygroundError(
                422, "give either 'steps' or 'epochs' for gradient training, not both.", "steps"
            )
        if request.steps is not None:
            steps = request.steps
        elif request.epochs is not None:
            _limit(request.epochs, settings.max_train_epochs, "epochs", "max_train_epochs")
            steps = request.epochs * math.ceil(len(data.x_train) / batch_size)
        else:
            steps = defaults["steps"]
        _limit(steps, settings.max_train_steps, "steps", "max_train_steps")
        check_trace_size(
            len(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))),
            0,
            ("grad",),
            settings,
            what="training job",
            field="module",
        )
        objective = prepare_objective(entry, model, data, request.loss)
        plan = GradientPlan(
            model,
            objective,
            data,
            optimizer_name=optimizer,
            learning_rate=learning_rate,
            weight_decay=resolved.get("weight_decay"),
            steps=steps,
            batch_size=batch_size,
            seed=request.seed,
        )
        check_job_budget(services, plan, settings)
        resolved.update(steps=steps, loss=objective.loss)
    resolved["watch_seconds"] = request.watch_seconds
    return plan, resolved, data.summary()


_costs: BoundedCache[tuple, StepCost | None] = BoundedCache(COSTS_KEPT)
_costs_locks: BoundedCache[tuple, threading.Lock] = BoundedCache(COSTS_KEPT)


def job_cost(services: Services, plan: GradientPlan | LocalPlan) -> StepCost | None:
    """What one step of ``plan`` costs (None when the compiler does not say), traced in a
    worker once per structure, batch and data shapes (thirty identical jobs asked at once
    trace it once: the others wait for the first)."""
    key = (plan.cost_key, plan.data.x_test.shape)
    with _costs_locks.get_or_make(key, threading.Lock):
        found = _costs.get(key, MISSING)
        if found is MISSING:
            leaves = array_leaves(plan.model)
            found = _costs.put(key, services.workers.call(plan_cost, plan, leaves, lane="train"))
        return found


def check_job_budget(services: Services, plan: GradientPlan | LocalPlan, settings: Any) -> None:
    """Refuse a job whose steps (batches, for a library network) and evaluations together
    are over ``max_train_flops``, or whose steps would compute for longer than
    ``max_job_seconds`` (measured for a structure timed before, else estimated from its
    cost): a job is budgeted as a whole, so many cheap steps cannot buy what one run is
    refused, and a job that cannot fit never starts."""
    cost = job_cost(services, plan)
    if cost is not None:
        check_job_flops(plan, cost, settings.max_train_flops)
    services.jobs.check_seconds(plan, cost)


def check_job_flops(plan: GradientPlan | LocalPlan, cost: StepCost, limit: float) -> None:
    """422 when the job's steps and evaluations are over ``limit`` flops."""
    step, evaluation = cost.flops, cost.evaluation_flops

    def total(steps: int) -> float:
        return steps * step + plan.records(steps) * evaluation

    if total(plan.total) <= limit:
        return
    # the most steps that fit (records thin out as jobs grow, so total() is not monotonic)
    low = next((n for n in range(plan.total - 1, 0, -1) if total(n) <= limit), 0)
    raise PlaygroundError(
        422,
        f"This training job would take about {total(plan.total):.3g} floating-point operations "
        f"({plan.total:,} {plan.unit} of {step:.3g}, and {plan.records():,} evaluations on "
        f"every row of {evaluation:.3g}; the compiler's estimate); the limit is {limit:.3g} per "
        f"job (max_train_flops, PLAYGROUND_MAX_TRAIN_FLOPS). {plan.advice(low)}.",
        plan.length_field,
    )


def start_training(
    services: Services, workspace: str, record: ModuleRecord, request: TrainRequest
) -> dict:
    """Plan and queue a job; its public record."""
    jobs = services.jobs
    client = current_client()
    jobs.check_capacity(workspace, client)  # before generating any data
    jobs.check_module_free(record)
    plan, resolved, dataset = plan_training(services, workspace, record, request)
    job = jobs.submit(record, plan, resolved, dataset, paused=request.paused, client=client)
    return job.public()


def reset_module(services: Services, record: ModuleRecord) -> ModuleRecord:
    """The module back to its initial parameters (those its spec builds); its training jobs
    are stopped and their results discarded."""
    return services.jobs.reset_module(record)


# --- dynamics -----------------------------------------------------------------------------------

MAX_DYNAMICS_STEPS = 500
MAX_DYNAMICS_BATCH = 256
MAX_DYNAMICS_VALUES = 250_000
"""Numbers in a dynamics answer: sweeps x batch x units of every slot."""


class DatasetBatch(BaseModel):
    """A batch of a dataset as the network's input."""

    model_config = ConfigDict(extra="forbid")

    dataset: DatasetChoice = Field(description="As in the train request.")
    batch: int = Field(8, ge=1, le=MAX_DYNAMICS_BATCH, description="Examples in the batch.")
    split: Literal["train", "test"] = Field("test", description="Which part of the dataset.")


class DynamicsRequest(BaseModel):
    """The body of ``POST /api/modules/{id}/dynamics``."""

    model_config = ConfigDict(extra="forbid")

    input: DatasetBatch | InputSpec | None = Field(
        None,
        description="An input spec (shape (batch, input size) or (input size,)) or "
        '{"dataset", "batch"}. Default: 8 test examples of prototypes when the input slot has '
        "100 units, else a normal input of shape (8, input size).",
    )
    steps: int = Field(20, ge=1, le=MAX_DYNAMICS_STEPS, description="Sweeps T.")
    phase: Literal["train", "inference"] = Field(
        "inference",
        description="train: init(x, y) then `step` (all messages, output clamped); "
        "inference: init(x) then `step_inference` (forward messages only).",
    )
    example: int = Field(0, ge=0, description="The example of the batch the figures show.")


def network_state(services: Services, record: ModuleRecord) -> tuple[SequentialOrchestrator, Any]:
    """The module's network and its state template; 422 for any other module."""
    model = services.store.load(record)
    entry = record.spec()
    if not isinstance(model, SequentialOrchestrator) or not hasattr(entry, "state"):
        raise PlaygroundError(
            422,
            f"dynamics need a library network (kind library.network); this module is "
            f"{record.kind}.",
            "module",
        )
    return model, entry.state()


def _dynamics_input(
    request: DynamicsRequest, services: Services, workspace: str, state: Any
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(x, y or None, description)`` for the network's input slot."""
    sizes = slot_sizes(state)
    source = request.input
    if source is None:
        if sizes[0] == 100 and sizes[-1] == 10:
            source = DatasetBatch(dataset="prototypes")
        else:
            source = InputSpec(shape=[8, sizes[0]], init="normal")
    if isinstance(source, DatasetBatch):
        spec = as_dataset(source.dataset)
        data = load_data(spec, services, workspace)
        encoder = check_network_data(state, data, getattr(spec, "seed", 0))
        xs, ys = (
            (data.x_test, data.y_test) if source.split == "test" else (data.x_train, data.y_train)
        )
        count = min(source.batch, len(xs))
        x = encoder(xs[:count])
        y = one_vs_all(ys[:count], data.num_classes)
        return x, y, f"{count} {source.split} examples of {data.name} ({encoder.describe()})"
    prepared = prepare_input(source, (8, sizes[0]), "float32", services.settings.max_input_elements)
    x = np.asarray(prepared.array, np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != sizes[0]:
        raise PlaygroundError(
            422,
            f"the input has shape {tuple(prepared.shape)}, but the network's input slot has "
            f"shape ({sizes[0]},): give an input of shape (batch, {sizes[0]}) or ({sizes[0]},).",
            "input.shape",
        )
    if x.shape[0] > MAX_DYNAMICS_BATCH:
        raise PlaygroundError(
            422,
            f"the batch has {x.shape[0]} examples; the limit is {MAX_DYNAMICS_BATCH}.",
            "input.shape",
        )
    return x, None, f"an input of shape {tuple(x.shape)} ({source.init})"


def compute_dynamics(
    services: Services, workspace: str, record: ModuleRecord, request: DynamicsRequest
) -> dict:
    model, state = network_state(services, record)
    x, y, description = _dynamics_input(request, services, workspace, state)
    sizes = slot_sizes(state)
    values = request.steps * x.shape[0] * sum(sizes)
    if values > MAX_DYNAMICS_VALUES:
        raise PlaygroundError(
            422,
            f"{request.steps} sweeps of a batch of {x.shape[0]} over {sum(sizes)} units are "
            f"{values:,} numbers; the limit is {MAX_DYNAMICS_VALUES:,}: use fewer sweeps or a "
            "smaller batch.",
            "steps",
        )
    if request.example >= x.shape[0]:
        raise PlaygroundError(
            422,
            f"example {request.example} is not in the batch of {x.shape[0]} (0 to "
            f"{x.shape[0] - 1}).",
            "example",
        )
    result = services.workers.call(  # it may compile: a heavy task
        dynamics.dynamics_task,
        record.spec(),
        array_leaves(model),
        x,
        y,
        request.steps,
        request.phase,
        lane="heavy",
    )
    names = dynamics.slot_names(len(sizes))
    return {
        "states": [finite_list(s, 6) for s in result["states"]],
        "flips": finite_list(result["flips"], 6),
        "plot": dynamics.overview_figure(result["states"], request.example),
        "edges": [[v if v is None else finite_list(v, 6) for v in row] for row in result["edges"]],
        "slots": sizes,
        "phase": request.phase,
        "steps": request.steps,
        "batch": int(x.shape[0]),
        "example": request.example,
        "input": description,
        "clamped_target": y is not None and request.phase == "train",
        "plots": {
            "slots": [
                dynamics.slot_figure(
                    np.concatenate([start[None, request.example], s[:, request.example]]),
                    name,
                    request.example,
                )
                for s, start, name in zip(result["states"], result["initial"], names, strict=True)
            ],
            "flips": dynamics.flips_figure(result["flips"]),
            "edges": dynamics.edges_figure(result["edges"]),
        },
    }
