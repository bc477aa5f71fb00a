"""library.training: the reference task, no retracing, protocol equivalence, gradients."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import reference_network

from library import (
    Adapter,
    Ferromagnetic,
    FullyConnected,
    OutputLayer,
    RecurrentDiscrete,
    SequentialOrchestrator,
    SequentialState,
    data,
    perceptron_rule,
    training,
)

# One optimiser object for the small tests: the compiled steps are cached per optimiser
# object and per shapes, so sharing both keeps the suite fast.
OPTIMISER = optax.adam(1e-2)
SMALL = 8  # examples per batch in the small tests


@pytest.mark.slow  # convergence: trains until it reaches an accuracy
def test_reference_task_reaches_095_in_three_epochs():
    data_key, model_key, train_key, test_key = jax.random.split(jax.random.key(59), 4)
    proto_key, sample_key = jax.random.split(data_key)
    x, y = data.prototype_task(data_key)  # D=100, K=10, N=1000, p=0.3
    prototypes = data.make_prototypes(proto_key)
    held_out = data.prototype_samples(test_key, prototypes, 1000, 0.3)
    orch = reference_network(model_key)
    seen = []
    trained, accuracies = training.train_orchestrator(
        orch,
        optax.adam(5e-3),
        x,
        y,
        epochs=3,
        batch_size=16,
        key=train_key,
        callback=seen.append,
    )
    assert len(accuracies) == 3
    # Evaluated on the training set, as in the reference (published: 0.968).
    assert accuracies[-1] >= 0.95
    assert training.evaluate(trained, x, y, train_key) == pytest.approx(accuracies[-1], abs=0.01)
    # The same prototypes, new examples.
    assert training.evaluate(trained, *held_out, test_key) >= 0.90
    # Untrained, it is near chance: the accuracy comes from training.
    assert training.evaluate(orch, x, y, train_key) < 0.5
    batches = [p for p in seen if p.kind == "batch"]
    epochs = [p for p in seen if p.kind == "epoch"]
    assert len(batches) == 3 * 63 and batches[0].num_batches == 63
    assert [p.value for p in epochs] == accuracies
    assert epochs[-1].fraction == 1.0


class CountingAdapter(Adapter):
    """A dense adapter that records every time JAX traces it."""

    W: jax.Array
    threshold: jax.Array
    traces: ClassVar[list] = []
    buffer_fields: ClassVar[tuple[str, ...]] = ("threshold",)

    def __call__(self, x, rng=None):
        CountingAdapter.traces.append(1)
        return x @ self.W

    def backward(self, x, y, y_hat, gate=None):
        update = perceptron_rule(x, y, y_hat, self.threshold, gate)
        return eqx.tree_at(lambda m: m.W, jax.tree.map(jnp.zeros_like, self), update)


def small_network(key, counting=False):
    k = jax.random.split(key, 3)
    first = FullyConnected(8, 16, 1.0, 1.0, k[0])
    if counting:
        first = CountingAdapter(first.W, first.threshold)
    return SequentialOrchestrator(
        {
            1: {0: first, 1: RecurrentDiscrete(16, 0.5, 0.5, k[1])},
            2: {1: FullyConnected(16, 3, 1.0, 1.0, k[2]), 2: OutputLayer()},
        }
    )


def small_batch(key, n=SMALL):
    kx, ky = jax.random.split(key)
    x = jax.random.rademacher(kx, (n, 8), dtype=jnp.float32)
    y = data.to_one_vs_all(jax.random.randint(ky, (n,), 0, 3), 3)
    return x, y


def test_repeated_calls_never_retrace():
    CountingAdapter.traces.clear()
    orch = small_network(jax.random.key(0), counting=True)
    state = SequentialState([8, 16, 3])
    optimiser = OPTIMISER
    opt_state = training.init_opt_state(optimiser, orch)
    x, y = small_batch(jax.random.key(1))
    orch, opt_state = training.train_step(
        orch, opt_state, optimiser, state, x, y, jax.random.key(2)
    )
    after_first = len(CountingAdapter.traces)
    assert after_first > 0
    for i in range(3):
        x, y = small_batch(jax.random.key(10 + i))
        orch, opt_state = training.train_step(
            orch, opt_state, optimiser, state, x, y, jax.random.key(i)
        )
    assert len(CountingAdapter.traces) == after_first
    # Another orchestrator of the same structure reuses the compiled step too.
    other = small_network(jax.random.key(5), counting=True)
    training.train_step(other, opt_state, optimiser, state, x, y, jax.random.key(0))
    assert len(CountingAdapter.traces) == after_first
    training.eval_step(orch, state, x, y, jax.random.key(0))
    after_eval = len(CountingAdapter.traces)
    training.eval_step(other, state, x, y, jax.random.key(1))
    assert len(CountingAdapter.traces) == after_eval
    training.infer(orch, state, x, jax.random.key(0))
    after_infer = len(CountingAdapter.traces)
    training.infer(other, state, x, jax.random.key(1))
    assert len(CountingAdapter.traces) == after_infer


def test_train_step_equals_the_plain_protocol():
    orch = small_network(jax.random.key(0))
    state = SequentialState([8, 16, 3])
    optimiser = OPTIMISER
    x, y = small_batch(jax.random.key(1))
    opt_state = optimiser.init(eqx.filter(orch, eqx.is_inexact_array))
    # The protocol of docs/library.md, written out with un-jitted calls.
    s = state.init(x, y)
    rng = jax.random.key(3)
    for _ in range(10):
        s, rng = orch.step(s, rng)
    for _ in range(10):
        s, rng = orch.step_inference(s, rng)
    updates = orch.backward(s, rng)
    params = eqx.filter(orch, eqx.is_inexact_array)
    steps, _ = optimiser.update(eqx.filter(updates, eqx.is_inexact_array), opt_state, params)
    expected = eqx.apply_updates(orch, steps)
    jitted, _ = training.train_step(
        orch, training.init_opt_state(optimiser, orch), optimiser, state, x, y, jax.random.key(3)
    )
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(jitted.lmap[2, 1].W, orch.lmap[2, 1].W)  # it did learn
    # Inference protocol: init(x), 10 step_inference, predict, argmax.
    s = state.init(x)
    for _ in range(10):
        s, _ = orch.step_inference(s, None)
    s, _ = orch.predict(s, None)
    out = training.infer(orch, state, x, jax.random.key(0))
    np.testing.assert_allclose(out, s.readout, rtol=1e-5, atol=1e-5)
    accuracy = np.mean(np.argmax(np.asarray(s.readout), 1) == np.argmax(np.asarray(y), 1))
    assert float(training.eval_step(orch, state, x, y, jax.random.key(0))) == accuracy
    labels = jnp.argmax(y, axis=1)
    assert float(training.eval_step(orch, state, x, labels, jax.random.key(0))) == accuracy


def test_buffers_are_not_trained():
    orch = small_network(jax.random.key(0))
    state = SequentialState([8, 16, 3])
    optimiser = optax.adamw(1e-1, weight_decay=0.5)  # decay would move every trained array
    opt_state = training.init_opt_state(optimiser, orch)
    x, y = small_batch(jax.random.key(1))
    new, _ = training.train_step(orch, opt_state, optimiser, state, x, y, jax.random.key(0))
    for (i, j), module in orch.lmap.edge_items():
        for name in module.buffer_fields:
            np.testing.assert_array_equal(getattr(new.lmap[i, j], name), getattr(module, name))
    assert not np.allclose(new.lmap[1, 1].J, orch.lmap[1, 1].J)


def test_run_dynamics_equals_a_loop():
    orch = small_network(jax.random.key(0))
    x, y = small_batch(jax.random.key(1))
    s0 = SequentialState([8, 16, 3]).init(x, y)
    s, rng = s0, jax.random.key(0)
    for _ in range(4):
        s, rng = orch.step_inference(s, rng)
    scanned, scan_rng = jax.jit(
        lambda o, s, k: training.run_dynamics(o, s, k, 4, filter_messages="forward")
    )(orch, s0, jax.random.key(0))
    np.testing.assert_array_equal(scanned[1], s[1])
    np.testing.assert_array_equal(jax.random.key_data(scan_rng), jax.random.key_data(rng))


def test_infer_state():
    orch = small_network(jax.random.key(0))
    state = training.infer_state(orch, jnp.ones((4, 8)))
    assert state.sizes == ((8,), (16,), (3,))
    backwards_only = SequentialOrchestrator(
        {1: {1: orch.lmap[1, 1], 2: Ferromagnetic(16, 1.0)}, 2: {2: OutputLayer()}}
    )
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        training.infer_state(backwards_only, jnp.ones((4, 5)))
    sizes = training.infer_state(backwards_only, jnp.ones((4, 5)), jnp.ones((4, 16))).sizes
    assert sizes == ((5,), (16,), (16,))


def test_callback_stops_training():
    orch = small_network(jax.random.key(0))
    x, y = small_batch(jax.random.key(1), n=5 * SMALL)
    seen = []

    def stop_at_third_batch(progress):
        seen.append(progress)
        return progress.batch < 3

    trained, accuracies = training.train_orchestrator(
        orch, OPTIMISER, x, y, epochs=5, batch_size=SMALL, key=jax.random.key(0),
        callback=stop_at_third_batch,
    )  # fmt: skip
    assert accuracies == [] and len(seen) == 3
    assert seen[-1] == training.Progress("batch", 1, 5, 3, 5)
    assert seen[-1].fraction == pytest.approx(3 / 25)
    assert not np.allclose(trained.lmap[2, 1].W, orch.lmap[2, 1].W)
    epochs_seen = []

    def stop_after_two_epochs(progress):
        if progress.kind == "epoch":
            epochs_seen.append(progress.value)
            return progress.epoch < 2
        return None

    _, accuracies = training.train_orchestrator(
        orch, OPTIMISER, x, y, epochs=5, batch_size=SMALL, key=jax.random.key(0),
        callback=stop_after_two_epochs,
    )  # fmt: skip
    assert accuracies == epochs_seen and len(accuracies) == 2


@pytest.mark.slow  # convergence: trains until it reaches an accuracy
def test_train_orchestrator_with_integer_labels_and_eval_data():
    key = jax.random.key(0)
    x, y = data.two_gaussians(key, 200, 0.1)
    (x_train, y_train), (x_test, y_test) = data.train_test_split(key, x, y, 0.25)
    k = jax.random.split(key, 3)
    orch = SequentialOrchestrator(
        {
            1: {0: FullyConnected(2, 32, 1.0, 1.0, k[0]), 1: RecurrentDiscrete(32, 0.5, 0.5, k[1])},
            2: {1: FullyConnected(32, 2, 1.0, 1.0, k[2]), 2: OutputLayer()},
        }
    )
    _, accuracies = training.train_orchestrator(
        orch, optax.adam(5e-3), x_train, y_train, epochs=2, batch_size=16, key=key,
        eval_data=(x_test, y_test), shuffle=True,
    )  # fmt: skip
    assert len(accuracies) == 2 and accuracies[-1] > 0.85


def test_argument_errors():
    orch = small_network(jax.random.key(0))
    x, y = small_batch(jax.random.key(1))
    for kwargs in ({"epochs": -1, "batch_size": 2}, {"epochs": 1, "batch_size": 0}):
        with pytest.raises(ValueError, match="epochs|batch_size"):
            training.train_orchestrator(orch, optax.sgd(0.1), x, y, key=jax.random.key(0), **kwargs)
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(5, 3\)"):
        training.train_orchestrator(
            orch, optax.sgd(0.1), x, y[:5], epochs=1, batch_size=2, key=jax.random.key(0)
        )


# Gradient training of plain Equinox modules ------------------------------------------


class ScaledLinear(eqx.Module):
    weight: jax.Array
    scale: jax.Array
    buffer_fields: ClassVar[tuple[str, ...]] = ("scale",)

    def __call__(self, x):
        return (x @ self.weight) * self.scale


def squared_error(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def test_gradient_step_matches_sgd_and_respects_buffers():
    model = ScaledLinear(jnp.ones((2, 1)), jnp.array([2.0]))
    x = jnp.array([[1.0, 2.0], [3.0, -1.0]])
    y = jnp.array([[0.0], [1.0]])
    optimiser = optax.sgd(0.1)
    opt_state = training.init_opt_state(optimiser, model)
    new, _, loss = training.gradient_step(model, opt_state, optimiser, squared_error, x, y)
    # NumPy: pred = 2 * x @ w; loss = mean((pred - y)^2); dL/dw = 2 * x.T @ (2 (pred - y)) / n
    xn, yn, w = np.asarray(x), np.asarray(y), np.ones((2, 1))
    pred = 2 * xn @ w
    assert float(loss) == pytest.approx(np.mean((pred - yn) ** 2))
    grad_w = 2 * xn.T @ (2 * (pred - yn)) / 2
    np.testing.assert_allclose(new.weight, w - 0.1 * grad_w, rtol=1e-6)
    np.testing.assert_array_equal(new.scale, [2.0])  # a buffer: untouched


def test_make_gradient_step_compiles_once_and_learns():
    traces = []

    def loss_fn(model, x, y):
        traces.append(1)
        return training.mse_loss(model, x, y)

    step = training.make_gradient_step(loss_fn)
    model = eqx.nn.MLP(1, 1, 32, 2, key=jax.random.key(0))
    optimiser = optax.adam(1e-2)
    opt_state = training.init_opt_state(optimiser, model)
    x, y = data.sine(jax.random.key(1), 64, 0.0)
    model, opt_state, first = step(model, opt_state, optimiser, x, y)
    count = len(traces)
    for _ in range(150):
        model, opt_state, loss = step(model, opt_state, optimiser, x, y)
    assert len(traces) == count
    assert float(loss) < 0.2 * float(first)


def test_train_model_and_losses():
    key = jax.random.key(0)
    x, y = data.circle(key, 128, 0.05)
    model = eqx.nn.MLP(2, 2, 16, 1, key=key)
    optimiser = optax.adam(3e-2)
    seen = []
    model, losses = training.train_model(
        model, optimiser, training.cross_entropy_loss, x, y,
        epochs=10, batch_size=32, key=key, callback=seen.append,
    )  # fmt: skip
    assert len(losses) == 10 and losses[-1] < 0.5 * losses[0]
    assert sum(p.kind == "epoch" for p in seen) == 10
    accuracy = np.mean(np.argmax(np.asarray(jax.vmap(model)(x)), 1) == np.asarray(y))
    assert accuracy > 0.9
    _, stopped = training.train_model(
        model, optimiser, training.cross_entropy_loss, x, y,
        epochs=10, batch_size=32, key=key, callback=lambda p: False,
    )  # fmt: skip
    assert stopped == []
