"""What a run asks for: the pydantic models of the runs API, with bounds and clear messages.

``RunRequest`` is the body of ``POST /api/modules/{id}/run``, ``SweepRequest`` the body of
``POST /api/modules/{id}/sweep``. Limits that come from the settings (elements of the input,
the length of the loss expression) are checked by the engine, before anything is allocated.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.text import shape_text

Transform = Literal["grad", "value_and_grad", "vmap", "jit", "jacfwd", "jacrev"]
TRANSFORMS: tuple[str, ...] = ("grad", "value_and_grad", "vmap", "jit", "jacfwd", "jacrev")
DIFFERENTIATING = frozenset({"grad", "value_and_grad", "jacfwd", "jacrev"})
SCALAR_ONLY = frozenset({"grad", "value_and_grad"})
Init = Literal["ones", "zeros", "normal", "uniform", "linspace", "values"]
InputDtype = Literal["float32", "int32"]

MAX_TRANSFORMS = 6
MAX_NDIM = 6
MAX_AXIS_LENGTH = 1_000_000
MAX_SEED = 2**31 - 1
MAX_ABS_BOUND = 1e6
MAX_SWEEP_POINTS = 1_000
DEFAULT_LOSS = "mean(out)"


def _parse_shape(value: Any) -> Any:
    """Accept ``[5, 2]``, ``"5,2"``, ``"(5, 2)"``, ``"5"``, ``""`` or ``"()"`` (a scalar)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return [value]
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text[:1] in "([" and text[-1:] in ")]":
        text = text[1:-1]
    parts = [part.strip() for part in text.split(",")]
    if parts and parts[-1] == "":
        parts.pop()
    if any(not (part.isascii() and part.isdigit()) for part in parts):
        raise ValueError(
            f"a shape is a list of whole numbers, such as 5,2 or 3 (or empty for a scalar); "
            f"got {value[:40]!r}"
        )
    return [int(part) for part in parts]


AxisLength = Annotated[int, Field(ge=1, le=MAX_AXIS_LENGTH)]
Shape = Annotated[
    list[AxisLength],
    BeforeValidator(_parse_shape),
    Field(max_length=MAX_NDIM, description="The input's shape, e.g. [5, 2]; [] is a scalar."),
]
Bound = Annotated[float, Field(ge=-MAX_ABS_BOUND, le=MAX_ABS_BOUND, allow_inf_nan=False)]


class InputSpec(BaseModel):
    """The input ``x``: its shape and how to fill it."""

    model_config = ConfigDict(extra="forbid")

    shape: Shape | None = Field(
        None,
        description="The input's shape, e.g. [5, 2]; [] is a scalar. Default: the module's "
        "example input shape (or the shape of `values`).",
    )
    init: Init = Field(
        "ones",
        description="ones, zeros, normal (seed), uniform (seed, from start to stop), linspace "
        "(from start to stop over all elements, in order) or values (typed or pasted).",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of normal and uniform inputs.")
    start: Bound | None = Field(
        None, description="linspace/uniform lower end (default -1 for linspace, 0 for uniform)."
    )
    stop: Bound | None = Field(
        None, description="linspace/uniform upper end (default 1 for both; uniform excludes it)."
    )
    values: Any = Field(
        None,
        description="init=values: nested lists of numbers, or text such as '1 2; 3 4' or "
        "'[[1, 2], [3, 4]]' (rows on lines or separated by ';').",
    )
    dtype: InputDtype | None = Field(
        None,
        description="float32 or int32; default: what the module takes (int32 indices "
        "for an embedding).",
    )

    def bounds(self, dtype: str) -> tuple[float, float]:
        """(start, stop) with the defaults of ``init``."""
        if self.init == "linspace":
            return (
                -1.0 if self.start is None else self.start,
                1.0 if self.stop is None else self.stop,
            )
        if dtype == "int32":
            return (0 if self.start is None else self.start, 10 if self.stop is None else self.stop)
        return (0.0 if self.start is None else self.start, 1.0 if self.stop is None else self.stop)


class RunRequest(BaseModel):
    """What to run: a function of the module and its input, and a pipeline of transformations."""

    model_config = ConfigDict(extra="forbid")

    function: Literal["forward", "loss"] = Field(
        "loss",
        description="forward: the module's output for x; loss: the `loss` expression over out "
        "(the output) and x, a scalar to differentiate.",
    )
    loss: str = Field(
        DEFAULT_LOSS,
        max_length=10_000,
        description="The loss, in the playground's expression language over `out` and `x`.",
    )
    wrt: Literal["params", "input"] = Field(
        "params",
        description="What grad/jacfwd/jacrev differentiate: the module's trained arrays "
        "(params; buffers and static fields left out) or the input x.",
    )
    transforms: list[Transform] = Field(
        default_factory=list,
        max_length=MAX_TRANSFORMS,
        description="Transformations applied in order, innermost first: "
        "['grad', 'vmap', 'jit'] is jit(vmap(grad(f))).",
    )
    vmap_axis: int = Field(
        0, ge=-MAX_NDIM, le=MAX_NDIM - 1, description="The input axis vmap maps over."
    )
    batched: bool = Field(
        False,
        description="Apply the module to each row of x (out = jax.vmap(model)(x)) inside the "
        "function, so a loss can average over a batch of single-example layers.",
    )
    input: InputSpec = Field(default_factory=InputSpec)

    @field_validator("transforms", mode="before")
    @classmethod
    def _split_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in re.split(r"[\s,]+", value.strip()) if part]
        return value


class SweepRequest(BaseModel):
    """f and its derivative along one input coordinate, computed with vmap of grad."""

    model_config = ConfigDict(extra="forbid")

    coordinate: int = Field(
        0, ge=0, le=MAX_AXIS_LENGTH, description="Which element of the input moves (flat index)."
    )
    start: Bound = Field(-3.0, description="Where the coordinate starts.")
    stop: Bound = Field(3.0, description="Where the coordinate stops.")
    points: int = Field(101, ge=2, le=MAX_SWEEP_POINTS, description="How many points.")
    loss: str = Field(
        DEFAULT_LOSS,
        max_length=10_000,
        description="f, a scalar expression over `out` and `x` (default mean(out)).",
    )
    base_input: InputSpec | None = Field(
        None,
        description="The input the other coordinates keep (default zeros of the module's "
        "example shape); a scalar or a vector.",
    )


# ------------------------------------------------------------------------------------------
# Typed or pasted values


class ValuesError(ValueError):
    """Values that are not a rectangular array of numbers, in plain words."""


def parse_values(values: Any, max_elements: int) -> tuple[list[float], tuple[int, ...]]:
    """Flat floats and the shape of ``values`` (nested lists, a number, or pasted text)."""
    if isinstance(values, str):
        values = _parse_text(values, max_elements)
    flat: list[float] = []
    shape = _walk(values, (), flat, max_elements)
    return flat, shape


def _parse_text(text: str, max_elements: int) -> Any:
    text = text.strip()
    if not text:
        raise ValuesError("the values are empty: type numbers, such as 1 2; 3 4")
    if len(text) > 40 * max_elements + 1000:
        raise ValuesError(f"the values text is too long for {max_elements} numbers")
    if text[0] == "[":
        try:
            return json.loads(text)
        except ValueError as error:
            raise ValuesError(f"the values are not valid nested lists: {error}") from None
        except RecursionError:
            raise ValuesError(f"the values are nested more than {MAX_NDIM} levels deep") from None
    rows = [row for row in re.split(r"[;\n]+", text) if row.strip()]
    parsed = []
    for index, row in enumerate(rows):
        numbers = []
        for token in re.split(r"[\s,]+", row.strip()):
            if not token:
                continue
            try:
                numbers.append(float(token))
            except ValueError:
                raise ValuesError(
                    f"row {index + 1} of the values: {token[:20]!r} is not a number"
                ) from None
        parsed.append(numbers)
    if len(parsed) == 1:
        return parsed[0]
    return parsed


def _walk(node: Any, where: tuple[int, ...], flat: list[float], limit: int) -> tuple[int, ...]:
    if isinstance(node, bool) or node is None or isinstance(node, str | dict):
        at = "".join(f"[{i}]" for i in where) or "the values"
        raise ValuesError(f"values{at if where else ''}: {node!r:.30} is not a number")
    if isinstance(node, int | float):
        if len(flat) >= limit:
            raise ValuesError(f"the values have more than {limit} numbers")
        value = float(node)
        if math.isfinite(value) and abs(value) > 3.4e38:
            raise ValuesError(f"the value {value:g} does not fit in float32")
        flat.append(value)
        return ()
    if not isinstance(node, list | tuple):
        raise ValuesError(f"values must be numbers or lists of numbers, not {type(node).__name__}")
    if len(where) >= MAX_NDIM:
        raise ValuesError(f"the values are nested more than {MAX_NDIM} levels deep")
    if not node:
        raise ValuesError("the values contain an empty list")
    shapes = [_walk(item, (*where, i), flat, limit) for i, item in enumerate(node)]
    first = shapes[0]
    for i, shape in enumerate(shapes[1:], start=1):
        if shape != first:
            at = "".join(f"[{j}]" for j in where)
            raise ValuesError(
                f"the values are not rectangular: values{at}[0] has shape {shape_text(first)} but "
                f"values{at}[{i}] has shape {shape_text(shape)}"
            )
    return (len(node), *first)
