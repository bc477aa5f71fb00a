"""A pipeline run op by op, as JAX runs it in a script without ``jit``: its per-call time.

The server compiles every run (to check its cost and to share it), but a pipeline without
``jit`` is not what a learner's script would compile: there JAX dispatches one operation at a
time. :func:`measure_eager` calls the same pipeline with ``jit`` left out, un-jitted, and times
it: a warm-up call first (JAX compiles each operation once per shape, as a script's first call
does), then up to ``EAGER_REPEATS`` calls within ``EAGER_BUDGET_S``; the answer's ``eager_ms``
is the median of the recent ones. For a pipeline with ``jit`` the same figure says what the
pipeline costs without it, beside the compiled per-call time.

Bounded: a run is not measured op by op when its module has more than ``EAGER_MAX_LEAVES``
array leaves or the compiler estimates more than ``EAGER_MAX_FLOPS`` (each would take seconds
op by op); the answer says so in ``eager_note``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax

from app.runs.cache import Compiled

EAGER_MAX_LEAVES = 400
EAGER_MAX_FLOPS = 2e8
EAGER_REPEATS = 3
EAGER_BUDGET_S = 0.2
"""Time spent on the timed calls of one request (after the warm-up)."""


def eager_skip_reason(entry: Compiled, array_leaves: int) -> str | None:
    """Why the run is not measured op by op, in words (None: it is)."""
    if array_leaves > EAGER_MAX_LEAVES:
        return (
            f"Not run op by op: the module has {array_leaves:,} arrays (the limit for this "
            f"measurement is {EAGER_MAX_LEAVES}), so one call would take seconds."
        )
    flops = (entry.cost or {}).get("flops")
    if flops is not None and flops > EAGER_MAX_FLOPS:
        return (
            f"Not run op by op: about {flops:.3g} flops per call (the limit for this "
            f"measurement is {EAGER_MAX_FLOPS:.0e}), so one call would take seconds."
        )
    return None


def measure_eager(entry: Compiled, top: Callable, args: tuple) -> float | None:
    """Time ``top(*args)`` un-jitted; record the times on ``entry``; their median (ms)."""
    if len(entry.eager_times) >= EAGER_REPEATS:
        return entry.eager_ms()
    if not entry.eager_times:  # the first call compiles each operation: not counted
        jax.block_until_ready(top(*args))
    spent = 0.0
    for _ in range(EAGER_REPEATS):
        started = time.perf_counter()
        jax.block_until_ready(top(*args))
        took = time.perf_counter() - started
        entry.record_eager(took)
        spent += took
        if spent > EAGER_BUDGET_S:
            break
    return entry.eager_ms()


def without_jit(transforms: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in transforms if name != "jit")


def eager_note(transforms: tuple[str, ...]) -> str:
    """What the eager figure is, in words."""
    if "jit" in transforms:
        return "the same pipeline without jit, run op by op as in a script"
    return "run op by op, as JAX runs it in a script without jit"
