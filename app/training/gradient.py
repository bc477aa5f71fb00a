"""Gradient training of any catalog module with Optax.

A module whose ``__call__`` takes one example is mapped over the batch with ``jax.vmap``; a
library module (``batched_input``) takes the batch as it is. Every step is
``library.training.gradient_step``: compiled with ``eqx.filter_jit``, the model and the optimiser
state are arguments (never closed over), only the arrays of ``library.trainable_filter`` are
updated, and the loss and optimiser objects are cached so that a repeated job compiles nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from app.errors import PlaygroundError
from app.text import shape_text
from app.training import views
from app.training.chunks import ChunkClock, structure_key
from app.training.datasets import Data
from app.training.losses import choose_loss, class_score, loss_value, predicted_class
from app.training.optimizers import init_optimizer
from app.training.plan import ChunkedPlan
from library import trainable_filter
from library.training import gradient_step

RECORD_EVERY = 20
"""A job records its metrics every ``min(RECORD_EVERY, ceil(steps / 100))`` steps."""
VIEW_SECONDS = 0.15
"""The least time between two refreshes of the decision boundary (or fit) of a running job
(the page shows a frame every 0.15 s at most)."""


class Forward:
    """``model, x (N, d) -> outputs (N, k)`` for a catalog entry; hashable by the entry's spec,
    so the compiled steps of equal modules are shared."""

    def __init__(self, entry: Any, batched: bool, example_shape: tuple[int, ...]):
        self.entry = entry
        self.batched = batched
        self.example_shape = tuple(example_shape)
        # the seed only sets initial values (the model is an argument): modules that differ
        # only by seed share their compiled steps
        self._key = (*structure_key(entry), batched, self.example_shape)
        self._hash = hash(self._key)

    def __reduce__(self):
        # rebuilt (and its hash computed again) in the process that unpickles it
        return Forward, (self.entry, self.batched, self.example_shape)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Forward) and self._key == other._key

    def __call__(self, model: Any, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], *self.example_shape))
        if self.batched:
            out = self.entry.apply(model, x)
        else:
            out = jax.vmap(lambda example: self.entry.apply(model, example))(x)
        return out.reshape(out.shape[0], -1)


@dataclass(frozen=True)
class Objective:
    """The training loss ``(model, x, y) -> scalar`` (static in the compiled step)."""

    forward: Forward
    loss: str
    num_classes: int

    def __call__(self, model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return loss_value(self.loss, self.forward(model, x), y, self.num_classes)


@eqx.filter_jit
def _evaluate(model: Any, objective: Objective, x: jax.Array, y: jax.Array, n_train: int):
    """Loss and accuracy on the training rows (the first ``n_train``) and the test rows, in one
    compiled call."""
    out = objective.forward(model, x)
    results = []
    for part in (slice(0, n_train), slice(n_train, None)):
        loss = loss_value(objective.loss, out[part], y[part], objective.num_classes)
        if objective.num_classes:
            accuracy = jnp.mean(predicted_class(objective.loss, out[part]) == y[part])
        else:
            accuracy = jnp.nan
        results.append((loss, accuracy))
    return results


@eqx.filter_jit
def _scores(model: Any, objective: Objective, x: jax.Array) -> jax.Array:
    out = objective.forward(model, x)
    if objective.num_classes:
        return class_score(objective.loss, out, objective.num_classes)
    return out[:, 0]


def _flops(analysis: Any) -> float | None:
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    flops = analysis.get("flops") if isinstance(analysis, dict) else None
    return float(flops) if flops is not None and flops >= 0 else None


def _call_modes(entry: Any) -> list[tuple[bool, tuple[int, ...]]]:
    """``(batched, example shape)`` ways to call the module on a batch, most likely first: a
    library module takes the batch; any other one example, mapped with vmap. An example shape
    with a leading batch axis (a custom module's ``(5, 2)``) is also tried without it."""
    shape = tuple(entry.example_input_shape())
    if getattr(entry, "batched_input", False):
        return [(True, shape[1:])]
    modes = [(False, shape)]
    if len(shape) >= 2:
        modes += [(False, shape[1:]), (True, shape[1:])]
    return modes


def _output_struct(entry: Any, model: Any, batched: bool, example: tuple[int, ...]) -> Any:
    """The abstract output of the module on a batch of 2 examples (nothing is computed)."""
    probe = jax.ShapeDtypeStruct((2, *example), jnp.float32)
    if batched:
        return eqx.filter_eval_shape(entry.apply, model, probe)
    return eqx.filter_eval_shape(
        lambda m, x: jax.vmap(lambda e: entry.apply(m, e))(x), model, probe
    )


def prepare_objective(entry: Any, model: Any, data: Data, requested_loss: str) -> Objective:
    """Check that ``data`` fits the module's input and output; the objective to train it on.

    Raises a 422 naming both shapes when the dataset does not fit, and when the module has
    nothing to train.
    """
    if not str(getattr(entry, "input_dtype", "float32")).startswith("float"):
        raise PlaygroundError(
            422,
            f"{entry.kind} takes {entry.input_dtype} inputs (indices), but datasets hold real "
            "numbers: train a module with float inputs.",
            "dataset",
        )
    if not jax.tree.leaves(eqx.filter(model, trainable_filter(model))):
        raise PlaygroundError(
            422,
            f"{entry.kind} has no trained arrays (its arrays, if any, are buffers): there is "
            "nothing to train.",
            "module",
        )
    modes = _call_modes(entry)
    fitting = [(b, e) for b, e in modes if (math.prod(e) if e else 1) == data.input_dim]
    if not fitting:
        example = modes[0][1]
        raise PlaygroundError(
            422,
            f"the dataset {data.name} has inputs of shape {shape_text(data.input_shape)}, but "
            f"the module takes inputs of shape {shape_text(example)}: build the module with "
            f"{data.input_dim} input(s), or choose another dataset.",
            "dataset",
        )
    problem = None
    for batched, example in fitting:
        try:
            raw = _output_struct(entry, model, batched, example)
        except Exception as error:  # noqa: BLE001 - reported to the user as a 422
            problem = problem or (example, error)
            continue
        break
    else:
        example, error = problem
        raise PlaygroundError(
            422,
            f"the module cannot be called on inputs of shape {shape_text(example)}: "
            f"{type(error).__name__}: {str(error)[:300]}",
            "dataset",
        )
    if not isinstance(raw, jax.ShapeDtypeStruct) or not jnp.issubdtype(raw.dtype, jnp.floating):
        raise PlaygroundError(
            422,
            f"{entry.kind} does not give one float array per example; it cannot be trained "
            "on a dataset.",
            "dataset",
        )
    output_shape = tuple(raw.shape[1:])
    outputs = math.prod(output_shape) if output_shape else 1
    loss = choose_loss(
        requested_loss,
        data.task,
        outputs,
        data.target_dim,
        data.name,
        shape_text(output_shape),
    )
    return Objective(Forward(entry, batched, example), loss, data.num_classes)


class GradientPlan(ChunkedPlan):
    """A gradient training job: the model, the data, the objective and the settings.

    In the web process it holds the module's model (the job's start); it pickles without it,
    and ``advance`` (in a worker) runs a chunk of steps from a job's state
    (:mod:`app.training.plan`).
    """

    mode = "gradient"

    def __init__(
        self,
        model: Any,
        objective: Objective,
        data: Data,
        *,
        optimizer_name: str,
        learning_rate: float,
        weight_decay: float | None,
        steps: int,
        batch_size: int,
        seed: int,
    ):
        self.model = model
        self.objective = objective
        self.data = data
        self.optimizer_name = optimizer_name
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.steps = steps
        self.batch_size = min(batch_size, len(data.x_train))
        self.seed = seed
        self.total = steps
        self.steps_per_epoch = len(data.x_train) / self.batch_size
        self.record_every = max(1, min(RECORD_EVERY, math.ceil(steps / 100)))
        self.metric_names = ["step", "loss", "test_loss", "accuracy", "test_accuracy"]
        shows_boundary = data.input_dim == 2 and data.task == "classification"
        shows_fit = data.input_dim == 1 and data.task == "regression" and data.target_dim == 1
        self.view_kind = "boundary" if shows_boundary else ("fit" if shows_fit else None)
        self._x_all = np.concatenate([data.x_train, data.x_test])
        self._y_all = np.concatenate([data.y_train, data.y_test])
        if shows_boundary:
            self._grid = views.boundary_grid(data)
        elif shows_fit:
            xs = views.fit_grid(data)
            self._grid = (xs, None, xs[:, None])

    @property
    def entry(self) -> Any:
        return self.objective.forward.entry

    @property
    def cost_key(self) -> tuple:
        """Jobs with this key compile the same steps and take about as long per step."""
        d = self.data
        return ("gradient", self.objective, self.optimizer_name, self.batch_size, d.x_train.shape)

    def records(self, steps: int | None = None) -> int:
        """How many times a job of ``steps`` (this one's by default) evaluates the model on
        every row (once per record)."""
        steps = self.steps if steps is None else steps
        every = max(1, min(RECORD_EVERY, math.ceil(steps / 100)))
        return math.ceil(steps / every)

    def flops(self) -> tuple[float, float] | None:
        """``(one step, one evaluation)`` in flops by the compiler's cost analysis of the
        lowered programs (traced once here; the job's calls reuse the traces)."""
        d, batch = self.data, self.batch_size
        opt, opt_state = init_optimizer(
            self.optimizer_name, self.model, self.learning_rate, self.weight_decay
        )
        step = gradient_step.lower(
            self.model, opt_state, opt, self.objective, d.x_train[:batch], d.y_train[:batch]
        )
        evaluation = _evaluate.lower(
            self.model, self.objective, self._x_all, self._y_all, len(d.x_train)
        )
        costs = [_flops(lowered.lowered.cost_analysis()) for lowered in (step, evaluation)]
        if costs[0] is None:
            return None
        return costs[0], costs[1] or 0.0

    def view(self, model: Any) -> dict | None:
        """The numbers of the boundary (2-D classification) or fit (1-D regression) plot."""
        if self.view_kind is None:
            return None
        xs, ys, mesh = self._grid
        scores = np.asarray(_scores(model, self.objective, jnp.asarray(mesh)))
        if self.view_kind == "boundary":
            return views.boundary_view(self.data, xs, ys, scores)
        return views.fit_view(self.data, xs, scores)

    def evaluate(self, model: Any) -> dict[str, float]:
        d = self.data
        (loss, accuracy), (test_loss, test_accuracy) = _evaluate(
            model,
            self.objective,
            jnp.asarray(self._x_all),
            jnp.asarray(self._y_all),
            len(d.x_train),
        )
        out = {"train_loss": float(loss), "test_loss": float(test_loss)}
        if d.task == "classification":
            out.update(accuracy=float(accuracy), test_accuracy=float(test_accuracy))
        return out

    def record(self, clock: ChunkClock, model: Any, step: int, losses: list[float]) -> dict:
        """The record after ``step``: the mean of the batch losses since the last record, and
        the evaluation.

        A loss that is NaN or infinite fails the job (the module keeps its parameters).
        """
        mean_loss = float(np.mean(np.asarray(losses)))
        if not math.isfinite(mean_loss):
            raise PlaygroundError(
                422,
                f"the loss became {mean_loss} by step {step}: the learning rate "
                f"({self.learning_rate:g}) is probably too high. The module keeps its "
                "parameters.",
            )
        scores = clock.timed("evaluate", self.evaluate, model)
        return {
            "step": step,
            "loss": mean_loss,
            "test_loss": scores["test_loss"],
            "accuracy": scores.get("accuracy"),
            "test_accuracy": scores.get("test_accuracy"),
        }

    def start_extra(self) -> dict:
        return {"epoch_rng": None, "position": 0, "losses": []}

    def one_step(
        self, clock: ChunkClock, model: Any, opt: Any, opt_state: Any, state: dict, single: bool
    ) -> tuple[Any, Any]:
        d, batch, n = self.data, self.batch_size, len(self.data.x_train)
        if state["epoch_rng"] is None or state["position"] + batch > n:
            self.new_epoch(state, n)
            state["position"] = 0
        index = self.order(state, n)[state["position"] : state["position"] + batch]
        state["position"] += batch
        model, opt_state, loss = clock.timed(
            "step",
            gradient_step,
            model,
            opt_state,
            opt,
            self.objective,
            d.x_train[index],
            d.y_train[index],
        )
        state["step"] += 1
        step = state["step"]
        state["losses"] = [*state["losses"], float(loss)]
        if single or step % self.record_every == 0 or step == self.steps:
            self.end(clock, model, state)
        return model, opt_state

    def end(self, clock: ChunkClock, model: Any, state: dict) -> None:
        if state["losses"]:  # (also: stopped between two records)
            clock.report.records.append(self.record(clock, model, state["step"], state["losses"]))
            state["losses"] = []
