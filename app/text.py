"""Numbers, shapes, dtypes and sizes in words: the one home of the playground's formatters.

Arrays are written in JAX/Equinox's short form everywhere (``f32[2,3]``, ``bf16[4]``, ``i32[]``);
shapes as Python tuples (``(5, 2)``, ``(3,)``); counts with thousands separators (``10,004``);
bytes in decimal units (``1.5 kB``). Templates reach these as filters (``app.templating``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DTYPE_SHORT = {
    "float16": "f16",
    "bfloat16": "bf16",
    "float32": "f32",
    "float64": "f64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "complex64": "c64",
    "complex128": "c128",
    "bool": "bool",
}
"""Each dtype's short name, as JAX prints arrays (``bf16[2,3]``)."""

EMPTY = "–"
"""What a missing count or size reads as."""


def short_dtype(dtype: Any) -> str:
    """``f32`` for float32, ``bf16`` for bfloat16; a dtype without a short name keeps its own."""
    name = np.dtype(dtype).name
    return DTYPE_SHORT.get(name, name)


def array_text(dtype: Any, shape: Sequence[int]) -> str:
    """Equinox's short form of an array of ``dtype`` and ``shape``: ``f32[2,3]``, ``i32[]``."""
    return f"{short_dtype(dtype)}[{','.join(str(n) for n in shape)}]"


def array_summary(array: Any) -> str:
    """The short form of an array: ``f32[2,3]``."""
    return array_text(array.dtype, array.shape)


def shape_text(shape: Sequence[int] | None) -> str:
    """A shape as a Python tuple: ``(5, 2)``, ``(3,)``, ``()``; ``""`` for no shape."""
    if shape is None:
        return ""
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def dims_text(shape: Sequence[int]) -> str:
    """A shape's sizes alone, as a form field shows them: ``5, 2``."""
    return ", ".join(str(n) for n in shape)


def count_text(value: int | float | None) -> str:
    """``10,004``."""
    if value is None:
        return EMPTY
    return f"{int(value):,}"


def bytes_text(value: int | None) -> str:
    """``24 B``, ``1.5 kB``, ``3.2 MB``."""
    if value is None:
        return EMPTY
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1000
    return f"{value} B"


def number_text(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (an integer whole), minus signs as ``−``;
    NaN and infinities spelled out."""
    if value is None:
        return EMPTY
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value).replace("-", "−")
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    if number == 0:
        return "0"
    return f"{number:.{digits}g}".replace("-", "−")


def params_text(params: dict, limit: int = 90) -> str:
    """The scalar params of a module in one line: ``in_dim=2, out_dim=3, seed=0``."""
    parts = []
    for key, value in params.items():
        if isinstance(value, list):
            parts.append(f"{len(value)} {key}")
        elif isinstance(value, dict):
            continue
        else:
            parts.append(f"{key}={value}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
