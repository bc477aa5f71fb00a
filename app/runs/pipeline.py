"""The function a run compiles: the forward pass or a loss, under the transformations.

:class:`PipelineBuilder` builds ``f(params, x, rest)`` and applies ``grad``, ``value_and_grad``,
``vmap``, ``jit``, ``jacfwd`` and ``jacrev`` in the order given (innermost first), each with the
checks that turn JAX's errors into advice. :func:`make_top` wraps it as ``top(arrays, x)``, which
rebuilds the module from its leaves inside the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import library
from app.expressions import Expression, ExpressionError
from app.runs.errors import RunError, jax_message
from app.runs.spec import SCALAR_ONLY, shape_text
from app.runs.structure import ModuleStructure
from app.text import array_summary as aval_text
from app.text import array_text

LOSS_VARIABLES = ("out", "x")
"""The names a loss expression may use: the module's output and its input."""


def describe_value(value: Any) -> str:
    """A short text of what a function returned: ``f32[5,3]``, a tree, a pair."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return aval_text(value)
    leaves = jax.tree_util.tree_leaves(value)
    if isinstance(value, tuple) and len(value) == 2:
        return f"a pair ({describe_value(value[0])}, {describe_value(value[1])})"
    name = type(value).__name__
    shown = ", ".join(aval_text(leaf) for leaf in leaves[:4] if hasattr(leaf, "shape"))
    more = ", …" if len(leaves) > 4 else ""
    return f"a {name} of {len(leaves)} arrays ({shown}{more})"


def _advice(name: str, stage: str) -> str:
    if stage == "the forward pass":
        return "Use the loss, or reduce the output with mean()"
    if stage == "the loss":
        return "Make the loss one number, e.g. mean(out) or sum((out - 1) ** 2)"
    if stage.startswith("vmap"):
        return (
            f"vmap gives one value per example, so put {name} before vmap in the pipeline "
            f"({name}, then vmap) for per-example gradients"
        )
    return (
        "To differentiate a function whose output is not a scalar use jacfwd or jacrev "
        "(jacfwd after grad gives the Hessian)"
    )


def _stage_label(stage: str) -> str:
    return "" if stage == "the forward pass" else f" ({stage})"


class PipelineBuilder:
    """Builds ``f(params, x, rest)`` and its transformations for one request."""

    def __init__(
        self,
        *,
        apply: Callable[[Any, Any], Any],
        function: str,
        expression: Expression | None,
        wrt: str,
        transforms: Sequence[str],
        vmap_axis: int,
        batched: bool,
        max_jacobian: int,
        kind: str,
        input_shape: tuple[int, ...] | None = None,
    ):
        self.apply = apply
        self.function = function
        self.expression = expression
        self.wrt = wrt
        self.transforms = tuple(transforms)
        self.vmap_axis = vmap_axis
        self.batched = batched
        self.max_jacobian = max_jacobian
        self.kind = kind
        self.input_shape = input_shape

    def _misfit(self, xi: Any, detail: str) -> RunError:
        message = f"The input {aval_text(xi)} does not fit the module ({self.kind}): {detail}"
        full = self.input_shape
        if full is not None and xi.ndim < len(full) and "vmap" in self.transforms:
            message += (
                f". vmap hands the function one slice of the input at a time: the input "
                f"{shape_text(full)} becomes {aval_text(xi)} inside it. To map over examples, "
                f"give the input a batch axis first, e.g. shape {shape_text((5, *full))}"
            )
        return RunError(message, field="input.shape")

    def forward(self, model: Any, x: Any) -> Any:
        def one(xi):
            try:
                return self.apply(model, xi)
            except RunError:
                raise
            except ExpressionError as error:
                raise self._misfit(xi, error.message) from None
            except (TypeError, ValueError, IndexError) as error:
                raise self._misfit(xi, jax_message(error)) from None

        if not self.batched:
            return one(x)
        if x.ndim == 0:
            raise RunError(
                "A batched forward pass maps over the first axis of the input, but "
                "the input is a scalar",
                field="batched",
            )
        return jax.vmap(one)(x)

    def base(self, static: Any) -> Callable:
        """``f(params, x, buffers)``; ``static`` (non-array leaves) is compiled in."""

        def f(params, x, rest):
            model = eqx.combine(params, rest, static)
            out = self.forward(model, x)
            if self.function != "loss":
                return out
            if not (hasattr(out, "shape") and hasattr(out, "dtype")):
                raise RunError(
                    f"The loss needs the module's output as one array, but it is "
                    f"{describe_value(out)}",
                    field="loss",
                )
            try:
                return self.expression.evaluate({"out": out, "x": x})
            except ExpressionError as error:
                raise RunError(
                    f"The loss {self.expression.text!r} cannot be computed on out "
                    f"{aval_text(out)} and x {aval_text(x)}: {error.message}",
                    field="loss",
                ) from None

        return f

    def _scalar_check(self, fn: Callable, name: str, stage: str) -> Callable:
        def checked(*args):
            out = fn(*args)
            if not (hasattr(out, "shape") and out.shape == ()):
                raise RunError(
                    f"{name} needs a function that returns a scalar; this one"
                    f"{_stage_label(stage)} returns {describe_value(out)}. "
                    f"{_advice(name, stage)}",
                    field="transforms",
                )
            if not jnp.issubdtype(out.dtype, jnp.inexact):
                raise RunError(
                    f"{name} needs a function that returns a float; this one returns "
                    f"{aval_text(out)}",
                    field="transforms",
                )
            return out

        return checked

    def _jacobian_check(self, fn: Callable, name: str, argnum: int) -> Callable:
        limit = self.max_jacobian

        def checked(*args):
            out = fn(*args)
            out_size = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(out))
            wrt_leaves = jax.tree_util.tree_leaves(args[argnum])
            in_size = sum(int(np.prod(leaf.shape)) for leaf in wrt_leaves)
            if out_size * in_size > limit:
                what = "the params" if argnum == 0 else "the input"
                raise RunError(
                    f"{name} would build a Jacobian of {out_size * in_size:,} numbers "
                    f"({out_size:,} outputs × {in_size:,} entries of {what}); the limit is "
                    f"{limit:,} (max_array_elements, PLAYGROUND_MAX_ARRAY_ELEMENTS). Use a "
                    "smaller input, a scalar loss with grad, or vmap over examples",
                    field="transforms",
                )
            return out

        return checked

    def check_vmap_axes(self, shape: tuple[int, ...], dtype: str) -> None:
        vmaps = self.transforms.count("vmap")
        if not vmaps:
            return
        ndim = len(shape)
        shown = array_text(dtype, shape)
        if vmaps > ndim:
            times = "once" if vmaps == 1 else f"{vmaps} times"
            has = (
                "is a scalar (no axes)"
                if ndim == 0
                else (f"has {ndim} ax{'is' if ndim == 1 else 'es'}")
            )
            raise RunError(
                f"vmap maps over an axis of the input and is applied {times}, but the input "
                f"{shown} {has}: each vmap takes one axis away. Give the input a batch axis, "
                f"e.g. shape {shape_text((5, *shape))}",
                field="vmap_axis",
            )
        innermost = ndim - vmaps + 1
        if not -innermost <= self.vmap_axis < innermost:
            if vmaps == 1:
                raise RunError(
                    f"vmap cannot map over axis {self.vmap_axis}: the input {shown} has "
                    f"{ndim} ax{'is' if ndim == 1 else 'es'} (0 to {ndim - 1}, or -1 for "
                    "the last)",
                    field="vmap_axis",
                )
            raise RunError(
                f"vmap cannot map over axis {self.vmap_axis} {vmaps} times: the input {shown} "
                f"has {ndim} axes, and the innermost vmap sees only {innermost}",
                field="vmap_axis",
            )

    def sweep(self, static: Any, shape: tuple[int, ...]) -> Callable:
        """``f(params, (base, coordinate, ts), rest)``: the loss and its derivative along
        coordinate ``coordinate`` of the input ``base`` at each ``t`` of ``ts``."""
        base_fn = self._scalar_check(self.base(static), "grad", "the loss")

        def pipeline(params, inputs, rest):
            base, coordinate, ts = inputs

            def f_of_t(t):
                x = base.reshape(-1).at[coordinate].set(t).reshape(shape)
                return base_fn(params, x, rest)

            return jax.vmap(jax.value_and_grad(f_of_t))(ts)

        return pipeline

    def build(self, static: Any) -> Callable:
        argnum = 0 if self.wrt == "params" else 1
        fn = self.base(static)
        stage = "the loss" if self.function == "loss" else "the forward pass"
        for name in self.transforms:
            if name in SCALAR_ONLY:
                make = jax.grad if name == "grad" else jax.value_and_grad
                fn = make(self._scalar_check(fn, name, stage), argnums=argnum)
            elif name in ("jacfwd", "jacrev"):
                make = jax.jacfwd if name == "jacfwd" else jax.jacrev
                fn = make(self._jacobian_check(fn, name, argnum), argnums=argnum)
            elif name == "vmap":
                fn = jax.vmap(fn, in_axes=(None, self.vmap_axis, None))
            elif name == "jit":
                fn = jax.jit(fn)
            if name != "jit":
                stage = f"{name} of {stage}"
        return fn


def make_top(structure: ModuleStructure, make_pipeline: Callable[[Any], Callable]) -> Callable:
    """``top(arrays, x)``: rebuild the module from its leaves, partition it into trained
    arrays, other arrays (buffers) and static leaves, and run ``make_pipeline(static)``."""
    template = structure.template
    index = structure.array_index
    treedef = structure.treedef

    def top(arrays, x):
        leaves = list(template)
        for position, array in zip(index, arrays, strict=True):
            leaves[position] = array
        model = jax.tree_util.tree_unflatten(treedef, leaves)
        params, rest = eqx.partition(model, library.trainable_filter(model))
        buffers, static = eqx.partition(rest, eqx.is_array)
        return make_pipeline(static)(params, x, buffers)

    return top
