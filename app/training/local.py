"""Training the library's networks with their local rules (docs/library.md's reference protocol).

Per batch: ``state.init(x, y)``, ``steps_train`` sweeps of ``step``, ``steps_inference`` sweeps
of ``step_inference``, one ``backward`` and one Optax update of the trained arrays
(``library.training.train_step``, compiled once per shapes). After every epoch the accuracy on
the training set (the reference's measure) and on the test set is measured with
``library.training.eval_step``: ``init(x)``, ``steps_inference`` forward sweeps, ``predict``,
argmax of the output slot.

What goes into the slots:

- targets: integer labels become one-vs-all targets in {-1, +1}; the output slot needs one unit
  per class;
- inputs: when the input slot has as many units as the data has features, the features go in
  as they are (real values). When it has more (the reference network's 100 units and a 2-D
  set), each point is encoded as ``sign(x @ R + b)``: ``R`` a fixed random matrix with unit-norm
  columns and ``b`` uniform in [-1, 1], drawn from the dataset's seed, so the slot gets +-1
  features like the prototype task's. Fewer units than features is refused (422).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from app.cache import BoundedCache
from app.errors import PlaygroundError
from app.training import views
from app.training.chunks import SKELETONS_KEPT, ChunkClock, structure_key
from app.training.datasets import Data
from app.training.gradient import _flops
from app.training.optimizers import init_optimizer
from app.training.plan import ChunkedPlan
from app.workers import worker_state
from library.data import to_one_vs_all
from library.orchestrators import SequentialOrchestrator
from library.training import eval_step, infer, infer_state, train_step

_one_vs_all = jax.jit(to_one_vs_all, static_argnums=1)
RECORDS_PER_EPOCH = 10
"""Accuracy is measured at least this many times an epoch (and once before training)."""


def one_vs_all(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer labels as one-vs-all targets in {-1, +1} (``library.data.to_one_vs_all``)."""
    return np.asarray(_one_vs_all(jnp.asarray(labels), num_classes))


class InputEncoder:
    """Puts data points into a network's input slot (see the module's docstring)."""

    def __init__(self, features: int, slot_size: int, seed: int):
        self.features = features
        self.slot_size = slot_size
        self.random_signs = slot_size != features
        if self.random_signs:
            rng = np.random.default_rng(seed)
            matrix = rng.normal(size=(features, slot_size))
            self.matrix = (matrix / np.linalg.norm(matrix, axis=0, keepdims=True)).astype(
                np.float32
            )
            self.offset = rng.uniform(-1, 1, size=slot_size).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if not self.random_signs:
            return x
        return np.where(x @ self.matrix + self.offset >= 0, 1.0, -1.0).astype(np.float32)

    def describe(self) -> str:
        if self.random_signs:
            return (
                f"{self.features} features encoded as {self.slot_size} random +-1 features "
                "sign(x @ R + b)"
            )
        return f"{self.features} features as real values"


def slot_sizes(state: Any) -> list[int]:
    return [int(math.prod(state[i].shape[1:])) for i in range(len(state))]


def check_network_data(state: Any, data: Data, seed: int) -> InputEncoder:
    """The input encoder for ``data``; 422 when the data cannot go into the network's slots."""
    sizes = slot_sizes(state)
    if data.task != "classification":
        raise PlaygroundError(
            422,
            f"library networks learn to classify with one-vs-all targets, but {data.name} is a "
            "regression set: choose a classification dataset.",
            "dataset",
        )
    if sizes[-1] != data.num_classes:
        raise PlaygroundError(
            422,
            f"the network's output slot has shape ({sizes[-1]},), but {data.name} has "
            f"{data.num_classes} classes (one-vs-all targets of shape ({data.num_classes},)): "
            f"build the network with output size {data.num_classes}.",
            "dataset",
        )
    if sizes[0] < data.input_dim:
        raise PlaygroundError(
            422,
            f"the network's input slot has shape ({sizes[0]},), but {data.name} has inputs of "
            f"shape ({data.input_dim},): build the network with input size {data.input_dim} "
            "(or more, for a random +-1 encoding).",
            "dataset",
        )
    return InputEncoder(data.input_dim, sizes[0], seed)


def state_template(entry: Any, model: Any, data: Data) -> Any:
    """The network's state template: the entry's own, else one inferred from a data point."""
    return entry.state() if hasattr(entry, "state") else infer_state(model, data.x_train[:1])


class LocalPlan(ChunkedPlan):
    """A local-rule training job for a ``SequentialOrchestrator``.

    Like ``GradientPlan``: it holds the network in the web process, pickles without it (and
    without the state template, which the worker rebuilds), and :meth:`advance` runs a chunk
    of batches in a worker.
    """

    mode = "local"
    unit = "batches"
    length_field = "epochs"

    def __init__(
        self,
        model: SequentialOrchestrator,
        entry: Any,
        state: Any,
        data: Data,
        encoder: InputEncoder,
        *,
        optimizer_name: str,
        learning_rate: float,
        weight_decay: float | None,
        epochs: int,
        batch_size: int,
        seed: int,
        steps_train: int,
        steps_inference: int,
    ):
        self.model = model
        self.entry = entry
        self.state = state
        self.data = data
        self.encoder = encoder
        self.optimizer_name = optimizer_name
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = min(batch_size, len(data.x_train))
        self.seed = seed
        self.steps_train = steps_train
        self.steps_inference = steps_inference
        self.batches_per_epoch = len(data.x_train) // self.batch_size
        self.total = epochs * self.batches_per_epoch
        self.steps_per_epoch = self.batches_per_epoch
        self.record_every = max(1, self.batches_per_epoch // RECORDS_PER_EPOCH)
        """Accuracy is measured every ``record_every`` batches: 10 times an epoch or more."""
        self.metric_names = ["epoch", "loss", "accuracy", "test_accuracy"]
        k = data.num_classes
        self.x_train = encoder(data.x_train)
        self.x_test = encoder(data.x_test)
        self.y_train = one_vs_all(data.y_train, k)
        self.y_test = one_vs_all(data.y_test, k)
        self.view_kind = "boundary" if data.input_dim == 2 else None
        if self.view_kind:
            xs, ys, mesh = views.boundary_grid(data)
            self._grid = (xs, ys, encoder(mesh))

    def __getstate__(self) -> dict:
        out = super().__getstate__()
        out["state"] = None  # the state template: rebuilt (once per structure) by the worker
        return out

    def advice(self, fits: int) -> str:
        """Advice in epochs (what a request gives); fewer sweeps when not even one fits."""
        if fits <= 0:
            return super().advice(fits)
        if fits < self.batches_per_epoch:
            return "Use fewer sweeps, a smaller batch or a smaller module"
        return (
            f"Use at most {fits // self.batches_per_epoch:,} epochs, a smaller batch or a "
            "smaller module"
        )

    @property
    def cost_key(self) -> tuple:
        """Jobs with this key compile the same steps and take about as long per batch."""
        return (
            "local",
            structure_key(self.entry),
            self.optimizer_name,
            self.batch_size,
            self.x_train.shape,
            self.steps_train,
            self.steps_inference,
        )

    def _template(self, model: Any) -> Any:
        if self.state is None:
            templates = worker_state().setdefault(
                "training.templates", BoundedCache(SKELETONS_KEPT)
            )
            key = (structure_key(self.entry), self.data.x_train.shape[1:])
            self.state = templates.get_or_make(
                key, lambda: state_template(self.entry, model, self.data)
            )
        return self.state

    def flops(self) -> tuple[float, float] | None:
        """``(one batch, one accuracy measure on every row)`` in flops, by the compiler's cost
        analysis. A sweep runs in a loop that the analysis counts once, so each is lowered
        without sweeps and with one, and the sweeps are added up."""
        opt, opt_state = init_optimizer(
            self.optimizer_name, self.model, self.learning_rate, self.weight_decay
        )
        b, key = self.batch_size, jax.random.PRNGKey(0)
        x, y = self.x_train[:b], self.y_train[:b]
        template = self._template(self.model)

        def batch(train: int, inference: int) -> float | None:
            lowered = train_step.lower(
                self.model, opt_state, opt, template, x, y, key,
                steps_train=train, steps_inference=inference,
            )  # fmt: skip
            return _flops(lowered.lowered.cost_analysis())

        def measure(inference: int) -> float | None:
            lowered = eval_step.lower(
                self.model, template, self.x_train, self.y_train, key,
                steps_inference=inference,
            )  # fmt: skip
            return _flops(lowered.lowered.cost_analysis())

        base, train, inference = batch(0, 0), batch(1, 0), batch(0, 1)
        if base is None or train is None or inference is None:
            return None
        step = base + self.steps_train * max(0.0, train - base)
        step += self.steps_inference * max(0.0, inference - base)
        e0, e1 = measure(0), measure(1)
        evaluation = 0.0
        if e0 is not None and e1 is not None:
            rows = len(self.x_train) + len(self.x_test)
            per_row = (e0 + self.steps_inference * max(0.0, e1 - e0)) / len(self.x_train)
            evaluation = per_row * rows
        return step, evaluation

    def records(self, steps: int | None = None) -> int:
        """Accuracy measures (on the training and the test rows) of a job of ``steps``."""
        steps = self.total if steps is None else steps
        return 1 + steps // self.record_every + steps // max(1, self.batches_per_epoch)

    def view(self, model: Any) -> dict | None:
        if self.view_kind is None:
            return None
        xs, ys, mesh = self._grid
        out = infer(
            model,
            self._template(model),
            jnp.asarray(mesh),
            jax.random.PRNGKey(0),
            steps_inference=self.steps_inference,
        )
        predicted = np.asarray(jnp.argmax(out, axis=-1))
        return views.boundary_view(self.data, xs, ys, predicted / max(self.data.num_classes - 1, 1))

    def accuracy(self, model: Any, x: np.ndarray, y: np.ndarray) -> float:
        value = eval_step(
            model,
            self._template(model),
            jnp.asarray(x),
            jnp.asarray(y),
            jax.random.PRNGKey(0),
            steps_inference=self.steps_inference,
        )
        return float(value)

    def record(self, clock: ChunkClock, model: Any, step: int) -> dict:
        """The training and test accuracy after ``step`` batches (epoch = step / batches)."""
        return {
            "epoch": step / self.batches_per_epoch,
            "accuracy": clock.timed("evaluate", self.accuracy, model, self.x_train, self.y_train),
            "test_accuracy": clock.timed(
                "evaluate test", self.accuracy, model, self.x_test, self.y_test
            ),
        }

    def start_extra(self) -> dict:
        return {
            "key": np.asarray(jax.random.PRNGKey(self.seed)),
            "epoch_rng": None,
            "batch_keys": None,
            "recorded": None,
        }

    def begin(self, clock: ChunkClock, model: Any, state: dict) -> None:
        if state["recorded"] is None:  # the accuracy before training
            clock.report.records.append(self.record(clock, model, 0))
            state["recorded"] = 0

    def one_step(
        self, clock: ChunkClock, model: Any, opt: Any, opt_state: Any, state: dict, single: bool
    ) -> tuple[Any, Any]:
        """One batch; a new epoch begins with a new order and new keys."""
        b, batch = state["step"] % self.batches_per_epoch, self.batch_size
        rows = len(self.x_train)
        if b == 0:
            self.new_epoch(state, rows)
            key, epoch_key = jax.random.split(jnp.asarray(state["key"]))
            state["key"] = np.asarray(key)
            state["batch_keys"] = np.asarray(jax.random.split(epoch_key, self.batches_per_epoch))
        index = self.order(state, rows)[b * batch : (b + 1) * batch]
        model, opt_state = clock.timed(
            "step",
            train_step,
            model,
            opt_state,
            opt,
            self._template(model),
            self.x_train[index],
            self.y_train[index],
            jnp.asarray(state["batch_keys"][b]),
            steps_train=self.steps_train,
            steps_inference=self.steps_inference,
        )
        state["step"] += 1
        last = b == self.batches_per_epoch - 1
        if single or last or state["step"] % self.record_every == 0:
            self.end(clock, model, state)
        return model, opt_state

    def end(self, clock: ChunkClock, model: Any, state: dict) -> None:
        if state["step"] != state["recorded"]:  # (also: stopped between two records)
            clock.report.records.append(self.record(clock, model, state["step"]))
            state["recorded"] = state["step"]
