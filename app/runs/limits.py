"""The limits a run is checked against before it runs: what it costs, not only what it asks.

In the order a run meets them: :func:`check_trace_size` before tracing (a cheap estimate from
the module's structure and the pipeline), :func:`check_output` after tracing,
:func:`check_budget` (flops) after lowering and again after compiling, and
:func:`check_memory` (the compiled program's own memory analysis) before running.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import jax

from app.runs.errors import RunError
from app.settings import Settings
from app.trees import array_summary as aval_text

TRACE_FACTORS = {"grad": 3, "value_and_grad": 3, "jacrev": 3, "jacfwd": 8, "vmap": 1, "jit": 1}
"""How much each transformation multiplies what is traced and compiled. Measured on this
2-core machine with ``eqx.nn.MLP(8, 8, 8, depth=300)``: compiling grad of the loss took about
twice the forward pass, jacrev about as long again as grad, jacfwd with respect to the
parameters about fourteen times the forward pass (its basis spans every parameter)."""
MB = 1_000_000


def trace_factor(transforms: Sequence[str]) -> int:
    """The product of the transformations' factors (1 for the forward pass alone)."""
    return math.prod(TRACE_FACTORS.get(name, 1) for name in transforms)


LIGHT_SHARE = 5
"""Work is light when its trace estimate is at most ``max_traced_leaves / LIGHT_SHARE``."""


def is_light(estimate: int, settings: Settings) -> bool:
    """Whether work of this trace estimate (leaf operations: array leaves, the loss's parts,
    times each transformation's factor) is light: at most a fifth of ``max_traced_leaves``
    (300 by default: the seed, a 4 x 512 MLP's grad). Light work may use the worker and the
    compute slot kept for it; heavy work (deep modules, under grad or jacfwd) never does."""
    return estimate * LIGHT_SHARE <= settings.max_traced_leaves


def check_trace_size(
    leaves: int,
    expression_parts: int,
    transforms: Sequence[str],
    settings: Settings,
    *,
    what: str = "run",
    field: str = "transforms",
) -> int:
    """Refuse, before tracing, a ``what`` whose trace and compile would take minutes; else
    answer the estimate (leaf operations).

    The estimate is the module's array leaves plus the loss's parts, times each transformation's
    factor (:data:`TRACE_FACTORS`): tracing and compiling grow with it (faster than linearly).
    """
    factor = trace_factor(transforms)
    size = (leaves + expression_parts) * factor
    limit = settings.max_traced_leaves
    if size <= limit:
        return size
    loss = f" and the loss's {expression_parts} parts" if expression_parts else ""
    weights = [f"{TRACE_FACTORS[n]} for {n}" for n in transforms if TRACE_FACTORS.get(n, 1) > 1]
    times = f", times {' × '.join(weights)}" if weights else ""
    fits = limit // factor - expression_parts
    advice = (
        f"Use a smaller module (at most {fits:,} leaves fit"
        + (" with these transformations)" if what == "run" else ")")
        if fits > 0
        else "Use fewer transformations or a shorter loss"
    )
    if what == "run" and factor > 1:
        advice += ", fewer transformations (the forward pass alone counts each leaf once)"
    raise RunError(
        f"This {what} would trace and compile about {size:,} leaf operations (the module's "
        f"{leaves:,} array leaves{loss}{times}); the limit is {limit:,} (max_traced_leaves, "
        "PLAYGROUND_MAX_TRACED_LEAVES), because compiling it could hold the server for "
        f"minutes. {advice}, or raise PLAYGROUND_MAX_TRACED_LEAVES on a server of your own",
        field=field,
    )


def check_output(out_info: Any, settings: Settings) -> None:
    """Refuse a result with an array over ``max_array_elements`` (or four times it in all)."""
    limit = settings.max_array_elements
    total = 0
    for leaf in jax.tree_util.tree_leaves(out_info):
        size = math.prod(leaf.shape)
        total += size
        if size > limit:
            raise RunError(
                f"The result would hold an array {aval_text(leaf)} of {size:,} numbers; the "
                f"limit is {limit:,} (max_array_elements, PLAYGROUND_MAX_ARRAY_ELEMENTS). Use a "
                "smaller input or fewer transformations",
                field="transforms",
            )
    if total > 4 * limit:
        raise RunError(
            f"The result would hold {total:,} numbers; the limit is {4 * limit:,} (four times "
            "max_array_elements, PLAYGROUND_MAX_ARRAY_ELEMENTS)",
            field="transforms",
        )


def check_budget(cost: dict | None, settings: Settings) -> None:
    """Refuse a run whose estimated flops are over ``max_run_flops``."""
    if not cost or cost.get("flops") is None:
        return
    if cost["flops"] > settings.max_run_flops:
        raise RunError(
            f"This run would take about {cost['flops']:.3g} floating-point operations (the "
            f"compiler's estimate); the limit is {settings.max_run_flops:.3g} per run "
            "(max_run_flops, PLAYGROUND_MAX_RUN_FLOPS). Use a smaller input or module",
            field="input.shape",
            limit="max_run_flops",
        )


LIGHT_SHARE_OF_COST = 5
"""A compiled run over a fifth of ``max_run_flops`` or of ``worker_memory_mb`` is not light
work (:func:`check_light`)."""
_light_lane: ContextVar[bool] = ContextVar("light_lane", default=False)


class NotLight(Exception):  # noqa: N818 - not an error: the run goes to the heavy lane
    """A run sent to the light lane whose compiled program turned out not to be light (its
    caller sends it again in the heavy lane, where it may take seconds)."""


@contextmanager
def light_lane(light: bool):
    """Within it, :func:`check_light` refuses what is not light work (a task of the light
    lane runs in it)."""
    token = _light_lane.set(light)
    try:
        yield
    finally:
        _light_lane.reset(token)


def check_light(cost: dict | None, memory: dict[str, int] | None, settings: Settings) -> None:
    """In :func:`light_lane`, raise :class:`NotLight` for a compiled run over a fifth of
    ``max_run_flops`` (4e9 by default) or of ``worker_memory_mb`` (its arguments, result and
    temporaries: 400 MB), before it runs: its trace was small, but what it computes is not
    (``max(sort(outer(x, x)))`` of 20,000 numbers: three operations, 1.6 GB)."""
    if not _light_lane.get():
        return
    flops = (cost or {}).get("flops") or 0
    total = sum((memory or {}).values())
    light_flops = settings.max_run_flops / LIGHT_SHARE_OF_COST
    light_bytes = settings.worker_memory_mb * MB / LIGHT_SHARE_OF_COST
    if flops > light_flops or total > light_bytes:
        raise NotLight(f"{flops:.3g} flops, {total / MB:,.0f} MB")


def memory_bytes(executable: Any) -> dict[str, int] | None:
    """The compiled program's memory by XLA's analysis: ``temporaries``, ``result`` and
    ``arguments`` in bytes (``None`` where the backend does not say)."""
    try:
        stats = executable.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend analyses memory
        return None
    if isinstance(stats, list | tuple):
        stats = stats[0] if stats else None
    if stats is None:
        return None
    parts = {
        "temporaries": getattr(stats, "temp_size_in_bytes", 0),
        "result": getattr(stats, "output_size_in_bytes", 0),
        "arguments": getattr(stats, "argument_size_in_bytes", 0),
    }
    return {name: max(0, int(value or 0)) for name, value in parts.items()}


def check_memory(memory: dict[str, int] | None, settings: Settings) -> None:
    """Refuse a compiled run whose memory is over ``worker_memory_mb``, before it runs."""
    if not memory:
        return
    total = sum(memory.values())
    limit = settings.worker_memory_mb
    if total <= limit * MB:
        return
    parts = ", ".join(f"{name} {value / MB:,.1f} MB" for name, value in memory.items())
    raise RunError(
        f"Stopped after compiling, before running: this run would need about "
        f"{total / MB:,.0f} MB of memory ({parts}: the compiler's memory analysis); the limit "
        f"is {limit:,} MB (worker_memory_mb, "
        "PLAYGROUND_WORKER_MEMORY_MB). Use a smaller input, or a loss with smaller "
        "intermediate arrays",
        field="input.shape",
        limit="worker_memory_mb",
    )
