"""Training: jitted steps for orchestrators (local rules) and for plain Equinox models.

The orchestrator, the model, the optimiser and the loss are ordinary *arguments*
of the jitted functions (arrays are traced, everything else is static and hashed),
so calling a step again with the same optimiser and new parameters never retraces.

The default protocol is the reference one. Per batch: `state.init(x, y)`,
`steps_train` calls of `step`, `steps_inference` calls of `step_inference`, one
`backward` and one optimiser update. For inference: `state.init(x)`,
`steps_inference` calls of `step_inference`, then `predict`; the predicted class is
the argmax of slot `-1`.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array

from .data import to_one_vs_all
from .filters import trainable_filter
from .orchestrators import SequentialOrchestrator
from .states import SequentialState, State

STEPS_TRAIN = 10
STEPS_INFERENCE = 10


def init_opt_state(optimiser: optax.GradientTransformation, model) -> optax.OptState:
    """Initialise `optimiser` on the trained arrays of `model` (see `trainable_filter`)."""
    return optimiser.init(eqx.filter(model, trainable_filter(model)))


def run_dynamics(
    orchestrator: SequentialOrchestrator,
    state: State,
    rng: Array,
    steps: int,
    *,
    filter_messages: Literal["all", "forward", "backward"] = "all",
) -> tuple[State, Array]:
    """Run `steps` sweeps of `orchestrator.step` under `jax.lax.scan`.

    **Arguments:**

    - `orchestrator`, `state`, `rng`: as for `SequentialOrchestrator.step`.
    - `steps`: number of sweeps (a Python int).
    - `filter_messages`: `"all"` for `step`, `"forward"` for `step_inference`.

    **Returns:**

    `(state, rng)` after the last sweep.
    """

    def sweep(carry, _):
        state, rng = carry
        return orchestrator.step(state, rng, filter_messages=filter_messages), None

    (state, rng), _ = jax.lax.scan(sweep, (state, rng), None, length=steps)
    return state, rng


@eqx.filter_jit
def train_step(
    orchestrator: SequentialOrchestrator,
    opt_state: optax.OptState,
    optimiser: optax.GradientTransformation,
    state: State,
    x: Array,
    y: Array,
    rng: Array,
    *,
    steps_train: int = STEPS_TRAIN,
    steps_inference: int = STEPS_INFERENCE,
) -> tuple[SequentialOrchestrator, optax.OptState]:
    """One batch of the reference protocol, compiled.

    **Arguments:**

    - `orchestrator`: the network.
    - `opt_state`: from [`init_opt_state`][] (the optimiser acts on the arrays that
      `trainable_filter` selects).
    - `optimiser`: an Optax `GradientTransformation`.
    - `state`: a state template (its sizes and dtype are used).
    - `x`, `y`: the batch; `y` in `{-1, +1}`, shaped like the output slot.
    - `rng`: PRNG key.
    - `steps_train`: sweeps with all messages after `init(x, y)`.
    - `steps_inference`: sweeps with forward messages only, before `backward`.

    **Returns:**

    `(orchestrator, opt_state)` after one optimiser update with the local updates of
    `backward` as gradients.
    """
    with jax.named_scope("train_step"):
        train_key, inference_key, backward_key = jax.random.split(rng, 3)
        state = state.init(x, y)
        state, _ = run_dynamics(orchestrator, state, train_key, steps_train)
        state, _ = run_dynamics(
            orchestrator, state, inference_key, steps_inference, filter_messages="forward"
        )
        updates = orchestrator.backward(state, backward_key)
        spec = trainable_filter(orchestrator)
        params = eqx.filter(orchestrator, spec)
        updates, opt_state = optimiser.update(eqx.filter(updates, spec), opt_state, params)
        return eqx.apply_updates(orchestrator, updates), opt_state


@eqx.filter_jit
def infer(
    orchestrator: SequentialOrchestrator,
    state: State,
    x: Array,
    rng: Array,
    *,
    steps_inference: int = STEPS_INFERENCE,
) -> Array:
    """Inference, compiled: `init(x)`, `steps_inference` forward sweeps, `predict`.

    **Returns:**

    The output slot, `(batch, *output_size)`.
    """
    with jax.named_scope("infer"):
        dynamics_key, predict_key = jax.random.split(rng)
        state = state.init(x)
        state, _ = run_dynamics(
            orchestrator, state, dynamics_key, steps_inference, filter_messages="forward"
        )
        state, _ = orchestrator.predict(state, predict_key)
        return state.readout


@eqx.filter_jit
def eval_step(
    orchestrator: SequentialOrchestrator,
    state: State,
    x: Array,
    y: Array,
    rng: Array,
    *,
    steps_inference: int = STEPS_INFERENCE,
) -> Array:
    """Accuracy of [`infer`][] on `(x, y)`, compiled.

    `y` is either one-vs-all `(batch, K)` (compared by argmax) or integer labels
    `(batch,)`.

    **Returns:**

    The fraction of examples whose argmax of slot `-1` matches, a scalar array.
    """
    out = infer(orchestrator, state, x, rng, steps_inference=steps_inference)
    labels = y if y.ndim == 1 else jnp.argmax(y, axis=-1)
    return jnp.mean(jnp.argmax(out, axis=-1) == labels)


def infer_state(
    orchestrator: SequentialOrchestrator, x: Array, y: Array | None = None
) -> SequentialState:
    """Build the state template that `orchestrator` needs for inputs like `x`.

    Slot `0` takes `x`'s per-example shape, the last slot `y`'s when given; every
    other slot takes the shape of a message sent to it from a slot already known.

    **Raises:**

    `ValueError` if some slot's size cannot be deduced.
    """
    edges = list(orchestrator.lmap.edge_items())
    num_slots = 1 + max(max(i, j) for (i, j), _ in edges)
    sizes = {0: tuple(x.shape[1:])}
    if y is not None:
        sizes[num_slots - 1] = tuple(y.shape[1:])
    changed = True
    while changed and len(sizes) < num_slots:
        changed = False
        for (i, j), module in edges:
            if i not in sizes and j in sizes:
                example = jax.ShapeDtypeStruct((1, *sizes[j]), jnp.float32)
                sizes[i] = tuple(eqx.filter_eval_shape(module, example).shape[1:])
                changed = True
    missing = [i for i in range(num_slots) if i not in sizes]
    if missing:
        raise ValueError(f"cannot deduce the size of slots {missing}; pass state= explicitly")
    return SequentialState([sizes[i] for i in range(num_slots)])


def _targets(y: Array, state: State) -> Array:
    """Integer labels become one-vs-all targets sized like the output slot."""
    y = jnp.asarray(y)
    if y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer):
        return to_one_vs_all(y, state[-1].shape[-1])
    return y


@dataclasses.dataclass(frozen=True)
class Progress:
    """What a training callback receives.

    **Fields:**

    - `kind`: `"batch"` after each batch, `"epoch"` after each epoch.
    - `epoch`: current epoch, from 1.
    - `epochs`: total epochs.
    - `batch`: batches done in this epoch.
    - `num_batches`: batches per epoch.
    - `value`: at the end of an epoch, the epoch's accuracy (orchestrators) or mean
      loss (gradient training); `None` after a batch.
    """

    kind: Literal["batch", "epoch"]
    epoch: int
    epochs: int
    batch: int
    num_batches: int
    value: float | None = None

    @property
    def fraction(self) -> float:
        """Fraction of the whole run done, in `[0, 1]`."""
        return ((self.epoch - 1) * self.num_batches + self.batch) / (self.epochs * self.num_batches)


Callback = Callable[[Progress], Any]


def _check_run(x: Array, y: Array, epochs: int, batch_size: int) -> int:
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same leading size; got {x.shape} and {y.shape}")
    for name, value, least in (("epochs", epochs, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}; got {value!r}")
    return math.ceil(x.shape[0] / batch_size)


def train_orchestrator(
    orchestrator: SequentialOrchestrator,
    optimiser: optax.GradientTransformation,
    x: Array,
    y: Array,
    *,
    epochs: int,
    batch_size: int,
    key: Array,
    callback: Callback | None = None,
    state: State | None = None,
    steps_train: int = STEPS_TRAIN,
    steps_inference: int = STEPS_INFERENCE,
    opt_state: optax.OptState | None = None,
    eval_data: tuple[Array, Array] | None = None,
    shuffle: bool = False,
) -> tuple[SequentialOrchestrator, list[float]]:
    """Train an orchestrator with the reference protocol.

    The data are cut into `ceil(N / batch_size)` batches with `jnp.array_split`
    (sizes differ by at most one), as in the reference, and each batch goes through
    [`train_step`][]. After every epoch the accuracy is measured with
    [`eval_step`][] on `eval_data`, or on the training set by default.

    **Arguments:**

    - `orchestrator`, `optimiser`: the network and an Optax optimiser.
    - `x`, `y`: training data; `y` one-vs-all in `{-1, +1}`, or integer labels
      (converted to one-vs-all over the output slot).
    - `epochs`, `batch_size`: the schedule.
    - `key`: PRNG key.
    - `callback`: called with a [`Progress`][] after every batch and every epoch;
      returning `False` stops the training.
    - `state`: state template; deduced with [`infer_state`][] when `None`.
    - `steps_train`, `steps_inference`: the protocol's sweeps (10 and 10).
    - `opt_state`: to resume; initialised with [`init_opt_state`][] when `None`.
    - `eval_data`: `(x, y)` for the per-epoch accuracy.
    - `shuffle`: reshuffle the training set every epoch (the reference does not).

    **Returns:**

    `(orchestrator, accuracies)`: the trained network and one accuracy per completed
    epoch.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    num_batches = _check_run(x, y, epochs, batch_size)
    if state is None:
        state = infer_state(orchestrator, x, None if y.ndim == 1 else y)
    y = _targets(y, state)
    eval_x, eval_y = (x, y) if eval_data is None else eval_data
    eval_y = _targets(eval_y, state)
    if opt_state is None:
        opt_state = init_opt_state(optimiser, orchestrator)
    batches = list(
        zip(jnp.array_split(x, num_batches), jnp.array_split(y, num_batches), strict=True)
    )
    accuracies: list[float] = []
    for epoch in range(1, epochs + 1):
        key, shuffle_key, epoch_key, eval_key = jax.random.split(key, 4)
        if shuffle:
            order = jax.random.permutation(shuffle_key, x.shape[0])
            batches = list(
                zip(
                    jnp.array_split(x[order], num_batches),
                    jnp.array_split(y[order], num_batches),
                    strict=True,
                )
            )
        batch_keys = jax.random.split(epoch_key, num_batches)
        for b, (xb, yb) in enumerate(batches):
            orchestrator, opt_state = train_step(
                orchestrator,
                opt_state,
                optimiser,
                state,
                xb,
                yb,
                batch_keys[b],
                steps_train=steps_train,
                steps_inference=steps_inference,
            )
            if callback is not None:
                if callback(Progress("batch", epoch, epochs, b + 1, num_batches)) is False:
                    return orchestrator, accuracies
        accuracy = float(
            eval_step(
                orchestrator, state, eval_x, eval_y, eval_key, steps_inference=steps_inference
            )
        )
        accuracies.append(accuracy)
        if callback is not None:
            progress = Progress("epoch", epoch, epochs, num_batches, num_batches, accuracy)
            if callback(progress) is False:
                break
    return orchestrator, accuracies


def evaluate(
    orchestrator: SequentialOrchestrator,
    x: Array,
    y: Array,
    key: Array,
    *,
    state: State | None = None,
    steps_inference: int = STEPS_INFERENCE,
) -> float:
    """Accuracy of `orchestrator` on `(x, y)` with the reference inference protocol."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if state is None:
        state = infer_state(orchestrator, x)
    return float(eval_step(orchestrator, state, x, y, key, steps_inference=steps_inference))


# Gradient training for plain Equinox modules --------------------------------------


@eqx.filter_jit
def gradient_step(
    model,
    opt_state: optax.OptState,
    optimiser: optax.GradientTransformation,
    loss_fn: Callable[[Any, Array, Array], Array],
    x: Array,
    y: Array,
):
    """One gradient step, compiled.

    The arrays selected by `trainable_filter(model)` are differentiated with
    `eqx.filter_value_and_grad` and updated by `optimiser`; the rest is left alone.
    `loss_fn` is static: pass the same function object each time, or it retraces.

    **Arguments:**

    - `model`: any pytree (an `eqx.Module`).
    - `opt_state`: from [`init_opt_state`][].
    - `optimiser`: an Optax `GradientTransformation`.
    - `loss_fn`: `loss_fn(model, x, y) -> scalar`.
    - `x`, `y`: the batch.

    **Returns:**

    `(model, opt_state, loss)`.
    """
    with jax.named_scope("gradient_step"):
        params, static = eqx.partition(model, trainable_filter(model))

        def loss_of(params, static):
            return loss_fn(eqx.combine(params, static), x, y)

        loss, grads = eqx.filter_value_and_grad(loss_of)(params, static)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, loss


def make_gradient_step(loss_fn: Callable[[Any, Array, Array], Array]):
    """Bind `loss_fn` into [`gradient_step`][].

    **Returns:**

    `step(model, opt_state, optimiser, x, y) -> (model, opt_state, loss)`, compiled
    once per shapes and optimiser.
    """

    def step(model, opt_state, optimiser, x, y):
        return gradient_step(model, opt_state, optimiser, loss_fn, x, y)

    return step


def mse_loss(model, x: Array, y: Array) -> Array:
    """Mean squared error of `jax.vmap(model)(x)` against `y`."""
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def cross_entropy_loss(model, x: Array, y: Array) -> Array:
    """Softmax cross-entropy of the logits `jax.vmap(model)(x)` against integer labels `y`."""
    logits = jax.vmap(model)(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def train_model(
    model,
    optimiser: optax.GradientTransformation,
    loss_fn: Callable[[Any, Array, Array], Array],
    x: Array,
    y: Array,
    *,
    epochs: int,
    batch_size: int,
    key: Array,
    callback: Callback | None = None,
    shuffle: bool = True,
):
    """Train a plain Equinox model by gradient descent on `loss_fn`.

    **Arguments:**

    - `model`, `optimiser`, `loss_fn`: as for [`gradient_step`][].
    - `x`, `y`: training data.
    - `epochs`, `batch_size`, `key`: the schedule and the shuffling key.
    - `callback`: called with a [`Progress`][] after every batch and every epoch
      (`value` = the epoch's mean loss); returning `False` stops.
    - `shuffle`: reshuffle every epoch.

    **Returns:**

    `(model, losses)`: the trained model and the mean loss of every completed epoch.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    num_batches = _check_run(x, y, epochs, batch_size)
    opt_state = init_opt_state(optimiser, model)
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        key, shuffle_key = jax.random.split(key)
        order = jax.random.permutation(shuffle_key, x.shape[0]) if shuffle else None
        xs, ys = (x, y) if order is None else (x[order], y[order])
        batch_losses = []
        for b, (xb, yb) in enumerate(
            zip(jnp.array_split(xs, num_batches), jnp.array_split(ys, num_batches), strict=True)
        ):
            model, opt_state, loss = gradient_step(model, opt_state, optimiser, loss_fn, xb, yb)
            batch_losses.append(loss)
            if callback is not None:
                if callback(Progress("batch", epoch, epochs, b + 1, num_batches)) is False:
                    return model, losses
        losses.append(float(jnp.mean(jnp.stack(batch_losses))))
        if callback is not None:
            progress = Progress("epoch", epoch, epochs, num_batches, num_batches, losses[-1])
            if callback(progress) is False:
                break
    return model, losses
