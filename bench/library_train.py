"""Benchmark: the reference task trained with library.training vs an un-jitted Python loop.

Run: .venv/bin/python bench/library_train.py

The reference task of docs/library.md: D=100, K=10, N=1000, flip probability 0.3, a hidden
slot of 256, Adam 5e-3, batches of 16, per batch init(x, y), 10 step, 10 step_inference,
backward and one optimiser update; 3 epochs; accuracy on the training set. The same
protocol is then run as a plain Python loop of un-jitted calls on a few batches and
extrapolated per sample; the ratio of the two comes from the same run.
"""

import argparse
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import reference_network  # noqa: E402

from library import (  # noqa: E402
    SequentialState,
    data,
    training,
)

DIM, CLASSES, NUM, FLIP, HIDDEN = 100, 10, 1000, 0.3, 256
LEARNING_RATE, BATCH, EPOCHS = 5e-3, 16, 3


def block(tree):
    jax.block_until_ready(eqx.filter(tree, eqx.is_array))


def python_loop_batch(orch, opt_state, optimiser, state, x, y, rng):
    """The protocol as plain, un-jitted Python calls."""
    s = state.init(x, y)
    for _ in range(training.STEPS_TRAIN):
        s, rng = orch.step(s, rng)
    for _ in range(training.STEPS_INFERENCE):
        s, rng = orch.step_inference(s, rng)
    updates = orch.backward(s, rng)
    params = eqx.filter(orch, eqx.is_inexact_array)
    steps, opt_state = optimiser.update(
        eqx.filter(updates, eqx.is_inexact_array), opt_state, params
    )
    return eqx.apply_updates(orch, steps), opt_state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop-batches", type=int, default=20, help="batches timed un-jitted")
    args = parser.parse_args()

    data_key, model_key, train_key = jax.random.split(jax.random.key(59), 3)
    x, y = data.prototype_task(
        data_key, num_prototypes=CLASSES, dim=DIM, num_examples=NUM, flip_prob=FLIP
    )
    orch = reference_network(model_key, DIM, HIDDEN, CLASSES)
    optimiser = optax.adam(LEARNING_RATE)
    print(f"device: {jax.devices()[0]}  jax {jax.__version__}  equinox {eqx.__version__}")
    print(
        f"reference task: D={DIM} K={CLASSES} N={NUM} p={FLIP} hidden={HIDDEN}, "
        f"Adam {LEARNING_RATE}, batch {BATCH}, {EPOCHS} epochs"
    )

    # Jitted: the first call compiles (both batch sizes of array_split, and the evaluation).
    start = time.perf_counter()
    warm, _ = training.train_orchestrator(
        orch, optimiser, x, y, epochs=1, batch_size=BATCH, key=train_key
    )
    block(warm)
    first_epoch = time.perf_counter() - start
    start = time.perf_counter()
    trained, accuracies = training.train_orchestrator(
        orch, optimiser, x, y, epochs=EPOCHS, batch_size=BATCH, key=train_key
    )
    block(trained)
    jitted_seconds = time.perf_counter() - start
    jitted_rate = EPOCHS * NUM / jitted_seconds
    print(
        f"library.training (jitted): {jitted_rate:,.0f} samples/s "
        f"({EPOCHS} epochs in {jitted_seconds:.2f} s, per-epoch evaluation included; "
        f"first epoch with compilation {first_epoch:.2f} s)"
    )
    print("accuracy per epoch: " + ", ".join(f"{a:.3f}" for a in accuracies))
    print(f"final accuracy: {accuracies[-1]:.3f} (published reference: 0.968)")

    # Un-jitted Python loop on a few batches, after one warm-up batch (op caches).
    state = SequentialState([DIM, HIDDEN, CLASSES])
    opt_state = optimiser.init(eqx.filter(orch, eqx.is_inexact_array))
    loop_orch, rng = orch, train_key
    xb, yb = x[:BATCH], y[:BATCH]
    loop_orch, opt_state = python_loop_batch(loop_orch, opt_state, optimiser, state, xb, yb, rng)
    block(loop_orch)
    start = time.perf_counter()
    for b in range(1, args.loop_batches + 1):
        xb, yb = x[b * BATCH : (b + 1) * BATCH], y[b * BATCH : (b + 1) * BATCH]
        loop_orch, opt_state = python_loop_batch(
            loop_orch, opt_state, optimiser, state, xb, yb, rng
        )
    block(loop_orch)
    loop_seconds = time.perf_counter() - start
    loop_rate = args.loop_batches * BATCH / loop_seconds
    print(
        f"plain Python loop (un-jitted): {loop_rate:,.0f} samples/s "
        f"({args.loop_batches} batches in {loop_seconds:.2f} s; "
        f"{EPOCHS} epochs would take {EPOCHS * NUM / loop_rate:.0f} s)"
    )
    print(f"speed-up of library.training over the Python loop: {jitted_rate / loop_rate:.0f}x")


if __name__ == "__main__":
    main()
