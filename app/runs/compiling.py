"""Compiling a run ahead of time and calling it: trace, check, lower, compile, execute.

The whole run is compiled ahead of time (``jax.jit(top).trace(...).lower().compile()``) so that
tracing and compiling are timed apart, and the output's size and the compiler's cost analysis
are checked against the limits before anything runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax

from app.expressions import ExpressionError
from app.runs.cache import Compiled
from app.runs.errors import RunError, explain, jax_message
from app.runs.keys import RunKey
from app.runs.limits import check_budget, check_memory, check_output, memory_bytes
from app.settings import Settings
from app.workers import stage

MAX_TEXT = 200_000
"""Characters of jaxpr or HLO text kept; longer texts are cut and say so."""
TIMING_REPEATS = 5
"""Warm calls timed after a compile (fewer when they are slow)."""
TIMING_BUDGET_S = 0.25
"""Time spent on the extra timing calls after a compile, at most."""


def _text(value: str) -> tuple[str, bool]:
    if len(value) <= MAX_TEXT:
        return value, False
    return value[:MAX_TEXT] + f"\n… cut: {len(value) - MAX_TEXT:,} more characters", True


def _cost(analysis: Any) -> dict | None:
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    if not isinstance(analysis, dict):
        return None
    flops = analysis.get("flops")
    moved = analysis.get("bytes accessed")
    if flops is None and moved is None:
        return None
    return {
        "flops": float(flops) if flops is not None and flops >= 0 else None,
        "bytes_accessed": float(moved) if moved is not None and moved >= 0 else None,
    }


def compile_run(
    key: RunKey, top: Callable, args: tuple, settings: Settings, transform_names: str
) -> Compiled:
    """Trace, check, lower and compile ``top``; refuse what is over the limits."""
    with stage("tracing"):
        return _compile_run(key, top, args, settings, transform_names)


def _compile_run(
    key: RunKey, top: Callable, args: tuple, settings: Settings, transform_names: str
) -> Compiled:
    start = time.perf_counter()
    try:
        traced = jax.jit(top).trace(*args)
    except RunError:
        raise
    except ExpressionError as error:
        raise RunError(f"The function could not be traced: {error.message}") from None
    except RecursionError:
        raise RunError("The function could not be traced: it is nested too deeply") from None
    except Exception as error:  # noqa: BLE001 - every tracing failure is the user's to fix
        raise explain(error, transform_names) from None
    check_output(traced.out_info, settings)
    try:
        lowered = traced.lower()
    except Exception as error:  # noqa: BLE001
        raise RunError(f"The function could not be lowered: {jax_message(error)}") from None
    traced_at = time.perf_counter()
    check_budget(_cost(lowered.cost_analysis()), settings)
    try:
        with stage("compiling"):
            executable = lowered.compile()
    except Exception as error:  # noqa: BLE001
        raise RunError(f"The function could not be compiled: {jax_message(error)}") from None
    compiled_at = time.perf_counter()
    cost = _cost(executable.cost_analysis())
    check_budget(cost, settings)
    memory = memory_bytes(executable)
    check_memory(memory, settings)
    jaxpr, jaxpr_cut = _text(str(traced.jaxpr))
    hlo_text = lowered.as_text()
    hlo, hlo_cut = _text(hlo_text)
    return Compiled(
        key=key,
        executable=executable,
        trace_ms=(traced_at - start) * 1e3,
        compile_ms=(compiled_at - traced_at) * 1e3,
        jaxpr=jaxpr,
        jaxpr_truncated=jaxpr_cut,
        hlo=hlo,
        hlo_truncated=hlo_cut,
        cost=cost,
        out_info=traced.out_info,
        memory=memory,
        size_bytes=entry_bytes(executable, len(hlo_text), len(jaxpr) + len(hlo)),
    )


BYTES_PER_HLO_CHARACTER = 240
"""What a compiled entry keeps in memory per character of its HLO text, where the backend does
not report its code size (the CPU): grad of a 100-layer MLP (131,000 characters) kept 31 MiB."""


def entry_bytes(executable: Any, hlo_characters: int, text_characters: int) -> int:
    """An estimate of the memory a cached entry holds: its generated code (as the backend
    reports it, or estimated from the size of the program) and the texts it keeps."""
    try:
        stats = executable.memory_analysis()
        code = int(getattr(stats, "generated_code_size_in_bytes", 0) or 0)
    except Exception:  # noqa: BLE001 - not every backend analyses memory
        code = 0
    if code <= 0:
        code = BYTES_PER_HLO_CHARACTER * hlo_characters
    return code + text_characters


def execute(entry: Compiled, args: tuple, *, timing: bool) -> tuple[Any, float]:
    """Call the executable; with ``timing``, call it a few more times for a median."""
    with stage("running"):
        return _execute(entry, args, timing=timing)


def _execute(entry: Compiled, args: tuple, *, timing: bool) -> tuple[Any, float]:
    try:
        started = time.perf_counter()
        out = entry.executable(*args)
        jax.block_until_ready(out)
        first = time.perf_counter() - started
        entry.record(first)
        if timing:
            spent = first
            for _ in range(TIMING_REPEATS - 1):
                if spent > TIMING_BUDGET_S:
                    break
                started = time.perf_counter()
                jax.block_until_ready(entry.executable(*args))
                took = time.perf_counter() - started
                entry.record(took)
                spent += took
    except RunError:
        raise
    except Exception as error:  # noqa: BLE001 - a failing computation is answered, not a 500
        raise RunError(f"The computation failed: {jax_message(error)}", status_code=422) from None
    return out, entry.run_ms()
