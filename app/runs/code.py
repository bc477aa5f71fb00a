"""The Python equivalent of a run, to paste after the module's exported code.

The catalog's ``spec.code()`` leaves the module in ``model``; :func:`run_code` continues from
there and leaves the run's result in ``result`` (a sweep's in ``values`` and ``slopes``). The
numbers are the playground's: the same input, the same function, the same transformations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from app.runs.inputs import PreparedInput
from app.text import shape_text

TRANSFORM_NOTES = {
    "grad": "the gradient",
    "value_and_grad": "the value and the gradient",
    "vmap": "mapped over the examples",
    "jit": "compiled once with XLA",
    "jacfwd": "the Jacobian (forward mode)",
    "jacrev": "the Jacobian (reverse mode)",
}


def _number(value: float, integer: bool) -> str:
    if math.isnan(value):
        return "jnp.nan"
    if math.isinf(value):
        return "jnp.inf" if value > 0 else "-jnp.inf"
    if integer:
        return str(int(value))
    return repr(float(value))


def _nested(flat: Sequence[float], shape: Sequence[int], integer: bool) -> str:
    if not shape:
        return _number(flat[0], integer)
    step = math.prod(shape[1:])
    parts = [_nested(flat[i * step : (i + 1) * step], shape[1:], integer) for i in range(shape[0])]
    return "[" + ", ".join(parts) + "]"


def input_code(prepared: PreparedInput) -> str:
    """The Python expression that makes the run's input."""
    shape = shape_text(prepared.shape)
    integer = prepared.dtype == "int32"
    dtype = ", dtype=jnp.int32" if integer else ""
    key = f"jax.random.PRNGKey({prepared.seed})"
    if prepared.init in ("ones", "zeros"):
        return f"jnp.{prepared.init}({shape}{dtype})"
    if prepared.init == "normal":
        return f"jax.random.normal({key}, {shape})"
    if prepared.init == "uniform":
        if integer:
            return (
                f"jax.random.randint({key}, {shape}, {int(prepared.start)}, {int(prepared.stop)})"
            )
        return (
            f"jax.random.uniform({key}, {shape}, minval={float(prepared.start)!r}, "
            f"maxval={float(prepared.stop)!r})"
        )
    if prepared.init == "linspace":
        count = math.prod(prepared.shape)
        return (
            f"jnp.linspace({float(prepared.start)!r}, {float(prepared.stop)!r}, {count}{dtype})"
            f".reshape({shape})"
        )
    flat = prepared.values or ()
    values_shape = prepared.values_shape or ()
    if len(values_shape) > 1 or tuple(values_shape) == tuple(prepared.shape):
        return f"jnp.array({_nested(flat, prepared.shape, integer)}{dtype})"
    nested = _nested(flat, (len(flat),), integer)
    return f"jnp.array({nested}{dtype}).reshape({shape})"


def forward_code(spec: Any, batched: bool, model: str = "model", x: str = "x") -> str:
    """The forward pass as a Python expression."""
    if not batched:
        return spec.apply_code(model, x)
    one = spec.apply_code(model, "xi")
    if one == f"{model}(xi)":
        return f"jax.vmap({model})({x})"
    return f"jax.vmap(lambda xi: {one})({x})"


def run_code(
    spec: Any,
    *,
    function: str,
    loss: str | None,
    wrt: str,
    transforms: Sequence[str],
    vmap_axis: int,
    batched: bool,
    prepared: PreparedInput,
    simple_model: bool,
) -> str:
    """A script that continues the module's exported code and leaves the run in ``result``."""
    name = "loss" if function == "loss" else "forward"
    first = "model" if simple_model else "params"
    lines = [
        "# The run (paste after the module's code, which leaves it in `model`).",
        "import equinox as eqx",
        "import jax",
        "import jax.numpy as jnp",
        "import library",
        "",
        f"x = {input_code(prepared)}",
    ]
    if not simple_model:
        lines += [
            "",
            "# Only the trained arrays are differentiated: buffers and static fields (such as",
            "# activation functions) stay in `rest`, and `eqx.combine` puts the module together.",
            "params, rest = eqx.partition(model, library.trainable_filter(model))",
        ]
    lines += ["", "", f"def {name}({first}, x):"]
    if not simple_model:
        lines.append("    model = eqx.combine(params, rest)")
    forward = forward_code(spec, batched)
    if function == "loss":
        lines += [f"    out = {forward}", f"    return {loss}"]
    else:
        lines.append(f"    return {forward}")
    lines += ["", ""]
    argnums = ", argnums=1" if wrt == "input" else ""
    what = "x" if wrt == "input" else first
    current = name
    if not transforms:
        lines.append(f"f = {name}")
    for transform in transforms:
        note = TRANSFORM_NOTES[transform]
        if transform in ("grad", "value_and_grad", "jacfwd", "jacrev"):
            text = f"f = jax.{transform}({current}{argnums})"
            note = f"{note} with respect to {what}"
        elif transform == "vmap":
            text = f"f = jax.vmap({current}, in_axes=(None, {vmap_axis}))"
            note = f"map over axis {vmap_axis} of x; the module is shared"
        else:
            text = f"f = jax.jit({current})"
        lines.append(f"{text}  # {note}")
        current = "f"
    lines += [f"result = f({first}, x)", "print(result)"]
    return "\n".join(lines) + "\n"


def run_expression(
    *, function: str, wrt: str, transforms: Sequence[str], vmap_axis: int, simple_model: bool
) -> str:
    """The run as one line: ``jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(model, x)``."""
    text = "loss" if function == "loss" else "forward"
    argnums = ", argnums=1" if wrt == "input" else ""
    for transform in transforms:
        if transform in ("grad", "value_and_grad", "jacfwd", "jacrev"):
            text = f"jax.{transform}({text}{argnums})"
        elif transform == "vmap":
            text = f"jax.vmap({text}, in_axes=(None, {vmap_axis}))"
        else:
            text = f"jax.jit({text})"
    first = "model" if simple_model else "params"
    return f"{text}({first}, x)"


def sweep_code(
    spec: Any, *, loss: str, prepared: PreparedInput, coordinate: int, start, stop, points
) -> str:
    """A script for a sweep: ``values, slopes = jax.vmap(jax.value_and_grad(f))(ts)``."""
    if prepared.shape:
        moved = f"base.reshape(-1).at[{coordinate}].set(t).reshape({shape_text(prepared.shape)})"
    else:
        moved = "t"
    return (
        "\n".join(
            [
                "# The sweep (paste after the module's code, which leaves it in `model`).",
                "import jax",
                "import jax.numpy as jnp",
                "import library",
                "",
                f"base = {input_code(prepared)}",
                "",
                "",
                "def f(t):",
                f"    x = {moved}",
                f"    out = {spec.apply_code('model', 'x')}",
                f"    return {loss}",
                "",
                "",
                f"ts = jnp.linspace({float(start)!r}, {float(stop)!r}, {points})",
                "values, slopes = jax.vmap(jax.value_and_grad(f))(ts)  # f and df/dx along ts",
                "print(values, slopes)",
            ]
        )
        + "\n"
    )
