"""A run's outcome as the API's JSON: the output tree, its values, a figure, what JAX did.

Answers are serialised by :class:`FastJSONResponse` (orjson): a gradient of a 512-wide MLP
sends some 18,000 numbers, which the standard library encodes in 10 to 30 ms. Finite arrays go
to orjson as NumPy arrays, which it writes directly (float32 as its shortest text,
``0.33333334``) in well under a millisecond.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pydantic_core
from fastapi.responses import JSONResponse

from app.devices import device_label
from app.plots import array_figure, bar_figure, heatmap_figure, line_figure
from app.runs.code import run_code, run_expression, sweep_code
from app.runs.digest import (
    ResultDigest,
    host_leaves,
    is_single_array,
    leaf_norms,
    nonfinite_warnings,
)
from app.runs.engine import RunOutcome
from app.text import array_summary
from app.trees import json_number, kept_shape


class FastJSONResponse(JSONResponse):
    """JSON through orjson, NumPy arrays included; anything orjson refuses (an integer past 64
    bits, say) goes through ``pydantic_core.to_json``. A NaN or infinity left anywhere becomes
    ``null`` (values themselves carry them as strings)."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(
                content,
                default=_fallback,
                option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
            )
        except TypeError:
            return pydantic_core.to_json(content, inf_nan_mode="null", fallback=_fallback)


def _fallback(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)


FIELDS = ("output", "values", "plot", "code", "jaxpr", "hlo", "warnings")
"""The parts of an answer that ``?include=`` can leave out (all are sent by default)."""
MAX_BAR_LEAVES = 60
MAX_LINE_POINTS = 2000


_ORJSON_DTYPES = frozenset(
    np.dtype(name)
    for name in (
        "float16", "float32", "float64", "int8", "int16", "int32", "int64",
        "uint8", "uint16", "uint32", "uint64", "bool",
    )
)  # fmt: skip
"""The dtypes orjson writes itself (not bfloat16, not complex)."""


def nested_values_many(
    arrays: list[np.ndarray], limit: int, as_arrays: bool = False
) -> list[tuple[Any, bool]]:
    """Each array as nested lists of at most ``limit`` elements (the leading part of every
    axis), and whether that is a cut. NaN and infinities are the strings ``"NaN"``,
    ``"Infinity"``; the float32 arrays are shortened in one batch (a few numpy calls in all).
    With ``as_arrays``, a finite array of a dtype orjson writes stays a contiguous NumPy array
    (a scalar for 0-d), for :class:`FastJSONResponse` alone."""
    parts, cuts, finite, direct = [], [], [], []
    for array in arrays:
        kept = kept_shape(array.shape, limit)
        truncated = kept != tuple(array.shape)
        part = array[tuple(slice(0, n) for n in kept)] if truncated else array
        parts.append(part)
        cuts.append(truncated)
        finite.append(part.dtype.kind != "f" or bool(np.isfinite(part).all()))
        direct.append(as_arrays and finite[-1] and part.dtype in _ORJSON_DTYPES)
    singles = [
        i
        for i, part in enumerate(parts)
        if part.dtype == np.float32 and part.size and not direct[i]
    ]
    shortened: dict[int, np.ndarray] = {}
    if singles:
        flat = short_floats(np.concatenate([parts[i].reshape(-1) for i in singles]))
        start = 0
        for i in singles:
            size = parts[i].size
            shortened[i] = flat[start : start + size].reshape(parts[i].shape)
            start += size
    out = []
    for i, part in enumerate(parts):
        if direct[i]:
            values = part[()] if part.ndim == 0 else np.ascontiguousarray(part)
        elif part.dtype.kind == "f":
            values = (shortened[i] if i in shortened else part.astype(np.float64)).tolist()
            if not finite[i]:
                values = _json_safe(values)
        elif part.dtype.kind == "c":
            values = np.abs(part).astype(np.float64).tolist()
        else:
            values = part.tolist()
        out.append((values, cuts[i]))
    return out


_POWERS = 10.0 ** np.arange(0, 64)
"""Exact powers of ten (10**22 and beyond are the nearest doubles)."""


def short_floats(array: np.ndarray) -> np.ndarray:
    """float64 values whose repr has at most 9 significant digits (8 where that suffices) and
    reads back as the same float32: ``0.33333334`` for float32 ``1/3``, not
    ``0.3333333432674408``. The JSON is shorter and faster to write; float64 arrays are
    returned as they are."""
    if array.dtype != np.float32 or array.size == 0:
        return array.astype(np.float64)
    wide = array.astype(np.float64)
    magnitude = np.abs(wide)
    usable = np.isfinite(wide) & (magnitude > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = np.floor(np.log10(np.where(usable, magnitude, 1.0))).astype(np.int64)
        best = wide
        for significant in (9, 8):
            places = significant - 1 - exponent
            scale = _POWERS[np.clip(np.abs(places), 0, _POWERS.size - 1)]
            rounded = np.where(
                places >= 0, np.round(wide * scale) / scale, np.round(wide / scale) * scale
            )
            same = usable & (rounded.astype(np.float32) == array)
            best = np.where(same, rounded, best)
    return best


def _json_safe(values: Any) -> Any:
    if isinstance(values, list):
        return [_json_safe(v) for v in values]
    return json_number(values)


def _norm(array: np.ndarray, axis=None) -> Any:
    values = np.abs(array) if array.dtype.kind == "c" else array
    return np.sqrt(np.sum(np.square(values.astype(np.float64)), axis=axis))


def result_figure(
    result: Any, leaves: list[tuple[str, np.ndarray]], per_example: bool, norms: list[float]
) -> dict:
    """Line for 1-D, heatmap for 2-D (and more), a number for a scalar, bars of each leaf's
    norm for a tree (a heatmap of leaf × example after vmap)."""
    if is_single_array(result):
        array = leaves[0][1]
        if array.ndim == 1 and array.size > 1:
            shown = array[:MAX_LINE_POINTS]
            cut = f" (first {MAX_LINE_POINTS})" if array.size > MAX_LINE_POINTS else ""
            values = (np.abs(shown) if shown.dtype.kind == "c" else shown).astype(np.float64)
            return line_figure(
                list(range(shown.shape[0])),
                {"output": values.tolist()},
                f"Output {array_summary(array)}{cut}",
                x_title="index",
                y_title="value",
            )
        return array_figure(array, f"Output {array_summary(array)}")
    if not leaves:
        return line_figure([], {}, "The result holds no arrays")
    shown = leaves[:MAX_BAR_LEAVES]
    more = f" (first {MAX_BAR_LEAVES} of {len(leaves)})" if len(leaves) > MAX_BAR_LEAVES else ""
    labels = [path or "(root)" for path, _ in shown]
    batch = {array.shape[0] for _, array in shown if array.ndim}
    if per_example and len(batch) == 1 and all(array.ndim for _, array in shown):
        count = batch.pop()
        norms = [_norm(array.reshape(count, -1), axis=1)[:50] for _, array in shown]
        return heatmap_figure(
            np.stack(norms),
            x_labels=list(range(min(count, 50))),
            y_labels=labels,
            title=f"Norm of each leaf per example: vmap added an axis of {count}{more}",
            x_title="example",
        )

    heights = list(norms[: len(shown)])
    note = ""
    for index, ((_, array), norm) in enumerate(zip(shown, heights, strict=True)):
        if not math.isfinite(norm) and array.dtype.kind in "fc":
            finite = array[np.isfinite(array)]
            heights[index] = float(np.linalg.norm(finite)) if finite.size else 0.0
            note = " (NaN and infinity left out)"
    return bar_figure(
        labels, heights, f"Norm of each leaf of the result{more}{note}", value_title="2-norm"
    )


QUICK_ELEMENTS = 4096
"""A run's answer is made in the event loop (no thread hand-over) when its result holds at most
this many numbers: a few tenths of a millisecond of work at most."""


def quick_to_answer(outcome: RunOutcome) -> bool:
    """Whether :func:`run_payload` of ``outcome`` is quick enough to make in the event loop:
    a digest, or a result of at most :data:`QUICK_ELEMENTS` numbers."""
    if isinstance(outcome.result, ResultDigest):
        return True
    return sum(array.size for _, array in host_leaves(outcome.result)) <= QUICK_ELEMENTS


def run_payload(
    outcome: RunOutcome, spec: Any, settings: Any, include: frozenset[str] | None = None
) -> dict:
    """The JSON answer of ``POST /api/modules/{id}/run``."""
    include = frozenset(FIELDS) if include is None else include
    request = outcome.request
    entry = outcome.entry
    result = outcome.result
    truncated = False
    values: Any = None
    if isinstance(result, ResultDigest):  # the worker kept the arrays: neither values nor plot
        include = include - {"values", "plot"}
        single, arrays, warnings = result.single, result.arrays, list(result.warnings or ())
    else:
        leaves = host_leaves(result)
        single, arrays = is_single_array(result), len(leaves)
        norms = leaf_norms(leaves)
        warnings = nonfinite_warnings(leaves, norms)
    if "values" in include:
        limit = settings.leaf_values_limit
        converted = nested_values_many([array for _, array in leaves], limit, as_arrays=True)
        if single:
            values, truncated = converted[0]
        else:
            values = {path: found for (path, _), (found, _) in zip(leaves, converted, strict=True)}
            truncated = any(cut for _, cut in converted)
    transforms = list(request.transforms)
    if request.wrt == "params" and not single and not arrays and transforms:
        warnings.append("This module has no trained parameters, so the gradient is empty.")
    if "warnings" not in include:
        warnings = None
    loss_text = outcome.expression.to_python() if outcome.expression is not None else None
    payload: dict[str, Any] = {
        "output": outcome.output if "output" in include else None,
        "values": values,
        "truncated": truncated,
        "timings": {
            "trace_ms": round(entry.trace_ms, 3) if outcome.compiled else 0.0,
            "compile_ms": round(entry.compile_ms, 3) if outcome.compiled else 0.0,
            "run_ms": round(outcome.run_ms, 4),
        },
        "compiled": outcome.compiled,
        "compile_scope": outcome.compile_scope,
        "eager_ms": None if outcome.eager_ms is None else round(outcome.eager_ms, 4),
        "eager_note": outcome.eager_skipped,
        "compiles": outcome.compiles,
        "jaxpr": entry.jaxpr if "jaxpr" in include else None,
        "hlo": entry.hlo if "hlo" in include else None,
        "cost": entry.cost,
        "device": device_label(),
        "code": None,
        "plot": None,
        "warnings": warnings,
        "cache_key_changes": outcome.changes,
        "compared_with": outcome.compared_with,
        "first_compile": {
            "trace_ms": round(entry.trace_ms, 3),
            "compile_ms": round(entry.compile_ms, 3),
        },
        "jaxpr_truncated": entry.jaxpr_truncated,
        "hlo_truncated": entry.hlo_truncated,
        "function": run_expression(
            function=request.function,
            wrt=request.wrt,
            transforms=transforms,
            vmap_axis=request.vmap_axis,
            simple_model=outcome.simple_model,
        ),
        "input": {
            "shape": list(outcome.input.shape),
            "dtype": outcome.input.dtype,
            "init": outcome.input.init,
        },
    }
    if "code" in include:
        payload["code"] = run_code(
            spec,
            function=request.function,
            loss=loss_text,
            wrt=request.wrt,
            transforms=transforms,
            vmap_axis=request.vmap_axis,
            batched=request.batched,
            prepared=outcome.input,
            simple_model=outcome.simple_model,
        )
    if "plot" in include:
        payload["plot"] = result_figure(result, leaves, "vmap" in transforms, norms)
    return payload


def sweep_payload(outcome: RunOutcome, spec: Any, include: frozenset[str] | None = None) -> dict:
    """The JSON answer of ``POST /api/modules/{id}/sweep``."""
    include = frozenset(FIELDS) if include is None else include
    request = outcome.request
    entry = outcome.entry
    ts, values, slopes = (np.asarray(a, dtype=np.float64) for a in outcome.result)
    label = f"x[{request.coordinate}]" if outcome.input.shape else "x"
    leaves = [("f", values), ("df", slopes)]
    payload = {
        "coordinate": request.coordinate,
        "x": ts.tolist(),
        "f": _json_safe(values.tolist()),
        "df": _json_safe(slopes.tolist()),
        "timings": {
            "trace_ms": round(entry.trace_ms, 3) if outcome.compiled else 0.0,
            "compile_ms": round(entry.compile_ms, 3) if outcome.compiled else 0.0,
            "run_ms": round(outcome.run_ms, 4),
        },
        "compiled": outcome.compiled,
        "compiles": outcome.compiles,
        "cost": entry.cost,
        "device": device_label(),
        "warnings": nonfinite_warnings(leaves) if "warnings" in include else None,
        "cache_key_changes": outcome.changes,
        "jaxpr": entry.jaxpr if "jaxpr" in include else None,
        "hlo": entry.hlo if "hlo" in include else None,
        "code": None,
        "plot": None,
        "base_input": {"shape": list(outcome.input.shape), "init": outcome.input.init},
    }
    if "code" in include:
        payload["code"] = sweep_code(
            spec,
            loss=outcome.expression.to_python(),
            prepared=outcome.input,
            coordinate=request.coordinate,
            start=request.start,
            stop=request.stop,
            points=request.points,
        )
    if "plot" in include:
        payload["plot"] = line_figure(
            ts.tolist(),
            {"f": values.tolist(), f"df/d{label}": slopes.tolist()},
            f"f = {request.loss} and its derivative along {label}",
            x_title=label,
            y_title="value",
        )
    return payload
