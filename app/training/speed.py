"""This machine's speed, measured once per worker process, and what a training step costs by
it: the seconds of a step never timed are estimated from them, so that a job that cannot fit
in ``max_job_seconds`` is refused before it starts.

A compiled step takes at least what a compiled call costs, plus what passing its arrays in
and out costs (the model's and the optimiser state's), plus its flops (the compiler's count)
at the speed of a float32 matrix product. Each is measured as the best of a few tries, and
the estimate counts the machine ``SPEED_MARGIN`` times faster still, so that a measure taken
while the machine was busy never refuses a job that fits. Once a job's steps are timed, the
measured time replaces the estimate (:mod:`app.training.jobs`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp

from app.workers import worker_state

SPEED_MARGIN = 2.0
"""The estimate counts the machine this many times faster than measured."""
PRODUCT_SIZE = 256
"""The matrix product timed: (256, 256) @ (256, 256) in float32, 33.6 Mflop."""
ARRAYS_TIMED = 64
"""A compiled call of this many small arrays in and out is timed for the cost of an array."""
TRIES = 20
"""Calls timed for each measure (its quickest counts: a busy machine slows some, not all)."""


@dataclass(frozen=True)
class MachineSpeed:
    """A worker's measured speed: flops per second of a matrix product, the seconds of a
    compiled call that computes nothing, and those of one more array through such a call."""

    flops_per_second: float
    call_seconds: float
    array_seconds: float

    def step_seconds(self, flops: float, arrays: int) -> float:
        """The least a compiled step of ``flops`` over ``arrays`` arrays is expected to take
        here (the margin included)."""
        seconds = self.call_seconds + arrays * self.array_seconds + flops / self.flops_per_second
        return seconds / SPEED_MARGIN


@dataclass(frozen=True)
class StepCost:
    """One step of a job as a worker traced it: its flops, those of one evaluation on every
    row, the arrays it takes and gives back, and that worker's speed."""

    flops: float
    evaluation_flops: float
    arrays: int
    speed: MachineSpeed

    def seconds(self) -> float:
        """The least one step is expected to take (see :meth:`MachineSpeed.step_seconds`)."""
        return self.speed.step_seconds(self.flops, self.arrays)


def _best(fn, *args) -> float:
    """The quickest of ``TRIES`` calls of the compiled ``fn`` (compiled first), in seconds."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(TRIES):
        began = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - began)
    return max(min(times), 1e-9)


def _add_one(arrays: list) -> list:
    return [a + 1 for a in arrays]


def measure_speed() -> MachineSpeed:
    """This worker's speed (measured on first use, then kept for the process's life)."""
    state = worker_state()
    speed = state.get("training.speed")
    if speed is None:
        a = jnp.ones((PRODUCT_SIZE, PRODUCT_SIZE), jnp.float32)
        product = _best(jax.jit(jnp.matmul), a, a)
        call = _best(eqx.filter_jit(jnp.negative), jnp.zeros(()))
        many = _best(eqx.filter_jit(_add_one), [jnp.zeros(()) for _ in range(ARRAYS_TIMED)])
        speed = state["training.speed"] = MachineSpeed(
            flops_per_second=2 * PRODUCT_SIZE**3 / product,
            call_seconds=call,
            array_seconds=max(0.0, many - call) / ARRAYS_TIMED,
        )
    return speed
