"""The run engine: build the function, apply the transformations, compile once, run.

A run is ``f = T_n(...T_1(base))`` where ``base`` is the forward pass ``spec.apply(model, x)``
or a loss expression over ``out`` and ``x``, and ``T_i`` are ``grad``, ``value_and_grad``,
``vmap``, ``jit``, ``jacfwd``, ``jacrev`` in the order given (innermost first). Every transformed
function takes ``(params, x, rest)``: ``params, rest = eqx.partition(model,
library.trainable_filter(model))``; ``grad`` differentiates argument 0 (``wrt="params"``) or 1
(``wrt="input"``), ``vmap`` maps ``x`` over ``vmap_axis`` with the model broadcast
(``in_axes=(None, axis, None)``).

Compile once, share across users
--------------------------------
The whole run is compiled ahead of time (``jax.jit(top).trace(...).lower().compile()``) so that
tracing and compiling are timed apart and the cost analysis is read before anything runs.
``top(arrays, x)`` takes the module's array leaves as an argument and rebuilds the module from
its tree definition inside the trace: the module is never closed over, so one executable serves
every module of the same structure. Executables are cached in a bounded LRU keyed by
:class:`RunKey`: the pipeline, the function (kind and canonical loss text), what is
differentiated, the vmap axis, the input's shape and dtype, and the module's structure (its
tree definition, static fields included, its non-array leaves such as activation functions, and
the shape and dtype of each array leaf). A per-key lock makes two identical requests compile
once.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import library
from app.expressions import Expression, ExpressionError, parse_expression
from app.runs.errors import RunError, explain, jax_message
from app.runs.spec import (
    DIFFERENTIATING,
    SCALAR_ONLY,
    InputSpec,
    RunRequest,
    SweepRequest,
    ValuesError,
    parse_values,
    shape_text,
)
from app.settings import Settings

MAX_TEXT = 200_000
"""Characters of jaxpr or HLO text kept; longer texts are cut and say so."""
TIMING_REPEATS = 5
"""Warm calls timed after a compile (fewer when they are slow)."""
TIMING_BUDGET_S = 0.25
"""Time spent on the extra timing calls after a compile, at most."""
RUN_TIMES_KEPT = 7
"""Recent call times kept per executable; run_ms is their median."""
LOSS_VARIABLES = ("out", "x")

_DTYPE_SHORT = {"float32": "f32", "float64": "f64", "int32": "i32", "bool": "bool"}


def aval_text(value: Any) -> str:
    """Equinox's short form of an array or tracer: ``f32[5,3]``."""
    dtype = np.dtype(value.dtype).name
    short = _DTYPE_SHORT.get(dtype, dtype)
    return f"{short}[{','.join(str(n) for n in value.shape)}]"


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


# ------------------------------------------------------------------------------------------
# The module's structure


@dataclass(frozen=True)
class ModuleStructure:
    """How a module is built from its leaves: what is compiled in, and what is an argument."""

    treedef: Any
    leaves: tuple  # per leaf: ("array", shape, dtype, weak) or ("static", value)
    template: tuple  # the leaves, arrays replaced by None
    array_index: tuple[int, ...]
    hashable: bool
    statics: tuple = field(default=(), compare=False)
    """(path, value) of the static fields and non-array leaves, for "what changed" only."""

    @property
    def key(self) -> tuple:
        if self.hashable:
            return (self.treedef, self.leaves)
        return (self.treedef, self.leaves, id(self))


def module_structure(model: Any) -> tuple[ModuleStructure, list]:
    """The structure of ``model`` and its array leaves (the compiled function's argument)."""
    leaves, treedef = jax.tree_util.tree_flatten(model)
    descriptions = []
    template = []
    index = []
    arrays = []
    hashable = True
    for position, leaf in enumerate(leaves):
        if eqx.is_array(leaf):
            descriptions.append(
                (
                    "array",
                    tuple(leaf.shape),
                    np.dtype(leaf.dtype).name,
                    bool(getattr(leaf, "weak_type", False)),
                )
            )
            template.append(None)
            index.append(position)
            arrays.append(leaf)
        else:
            try:
                hash(leaf)
            except TypeError:
                hashable = False
                descriptions.append(("static", f"<unhashable {type(leaf).__name__}>"))
            else:
                descriptions.append(("static", leaf))
            template.append(leaf)
    structure = ModuleStructure(
        treedef=treedef,
        leaves=tuple(descriptions),
        template=tuple(template),
        array_index=tuple(index),
        hashable=hashable,
        statics=static_parts(model),
    )
    return structure, arrays


MAX_STATIC_PARTS = 64
"""Static parts remembered per module for "what changed" (a 5000-layer MLP has 20,000)."""


def static_parts(model: Any) -> tuple[tuple[str, str], ...]:
    """``(path, value)`` of the first static dataclass fields and non-array leaves of
    ``model`` (``(".activation", "relu")``, ``(".k", "2.0")``), depth first."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [("", model)]
    while stack and len(found) < MAX_STATIC_PARTS:
        path, node = stack.pop()
        if isinstance(node, eqx.Module) and dataclasses.is_dataclass(node):
            children = []
            for item in dataclasses.fields(node):
                if not hasattr(node, item.name):
                    continue
                value = getattr(node, item.name)
                if item.metadata.get("static", False):
                    found.append((f"{path}.{item.name}", _leaf_name(value)))
                else:
                    children.append((f"{path}.{item.name}", value))
            stack.extend(reversed(children))
        elif isinstance(node, list | tuple):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(node)]))
        elif isinstance(node, dict):
            stack.extend(reversed([(f"{path}[{k!r}]", v) for k, v in node.items()]))
        elif node is not None and not eqx.is_array(node) and not isinstance(node, jax.Array):
            found.append((path, _leaf_name(node)))
    return tuple(found[:MAX_STATIC_PARTS])


class StructureMemo:
    """``module_structure`` of recently seen module objects (the store keeps built modules).

    An entry holds the module's arrays, so it goes as soon as the module itself is collected
    (a weak reference's callback): the memo never keeps a module's memory alive.
    """

    def __init__(self, size: int = 256):
        self._size = size
        self._items: OrderedDict[int, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def _forget(self, key: int, ref: weakref.ref) -> None:
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[0] is ref:
                del self._items[key]

    def get(self, model: Any) -> tuple[ModuleStructure, list, bool]:
        """The structure, the array leaves, and whether every leaf is a trained array."""
        key = id(model)
        with self._lock:
            item = self._items.get(key)
            if item is not None and item[0]() is model:
                self._items.move_to_end(key)
                return item[1], item[2], item[3]
        structure, arrays = module_structure(model)
        simple = all(item[0] == "array" for item in structure.leaves) and _all_trained(model)
        try:
            ref = weakref.ref(model, lambda dead: self._forget(key, dead))
        except TypeError:
            return structure, arrays, simple
        with self._lock:
            self._items[key] = (ref, structure, arrays, simple)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return structure, arrays, simple


# ------------------------------------------------------------------------------------------
# The cache key


@dataclass(frozen=True)
class RunKey:
    """Everything a compiled run depends on."""

    mode: str  # "run" or "sweep"
    kind: str
    apply: str  # the catalog's forward pass, as Python text
    structure: tuple
    function: str
    loss: str | None
    wrt: str
    transforms: tuple[str, ...]
    vmap_axis: int | None
    batched: bool
    input_shape: tuple[int, ...]
    input_dtype: str
    extra: tuple = ()
    statics: tuple = field(default=(), compare=False, hash=False)

    def parts(self) -> dict[str, Any]:
        """The key's parts with the names the page shows when one changes."""
        treedef, leaves = self.structure[0], self.structure[1]
        statics = tuple(item for item in leaves if item[0] == "static")
        shapes = tuple(item[1:3] for item in leaves if item[0] == "array")
        return {
            "mode": self.mode,
            "module kind": self.kind,
            "forward pass": self.apply,
            "module structure (static fields)": (treedef, statics, self.structure[2:]),
            "parameter shapes": shapes,
            "function": self.function if self.function != "loss" else f"loss {self.loss}",
            "differentiate w.r.t.": self.wrt,
            "transforms": self.transforms,
            "vmap axis": self.vmap_axis,
            "batched forward": self.batched,
            "input shape": self.input_shape,
            "input dtype": self.input_dtype,
            "sweep points": self.extra,
        }


def _part_text(name: str, value: Any) -> str:
    if name == "input shape":
        return shape_text(value)
    if name == "transforms":
        return ", ".join(value) if value else "none"
    if name == "parameter shapes":
        return ", ".join(f"{np.dtype(d).name[0]}{''.join(str(s))}" for s, d in value[:4])
    return str(value)


def key_changes(old: RunKey | None, new: RunKey) -> list[str]:
    """What differs between two keys, in words: ``input shape (5, 2) -> (6, 2)``."""
    if old is None:
        return []
    changes = []
    old_parts, new_parts = old.parts(), new.parts()
    for name, value in new_parts.items():
        before = old_parts[name]
        if before == value:
            continue
        if name in ("vmap axis", "differentiate w.r.t.") and "-" in (before, value):
            continue
        if name == "vmap axis" and None in (before, value):
            continue
        if name == "module structure (static fields)":
            changes.append(name + _static_change(old.statics, new.statics))
        elif name == "parameter shapes":
            changes.append(
                f"parameter shapes ({len(before)} arrays -> {len(value)} arrays)"
                if len(before) != len(value)
                else "parameter shapes"
            )
        elif name in ("forward pass", "mode"):
            changes.append(name)
        else:
            changes.append(f"{name} {_part_text(name, before)} -> {_part_text(name, value)}")
    return changes


def _static_change(before: tuple, after: tuple) -> str:
    """``: .activation relu -> tanh`` for the static parts whose value changed."""
    old = dict(before)
    changed = [
        f"{path} {old[path]} -> {value}"
        for path, value in after
        if path in old and old[path] != value
    ]
    if not changed:
        return ""
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return ": " + ", ".join(changed[:3]) + more


def _leaf_name(value: Any) -> str:
    name = getattr(value, "__name__", None) or getattr(
        getattr(value, "fun", None), "__name__", None
    )
    if isinstance(name, str):
        return name
    return repr(value)[:40]


# ------------------------------------------------------------------------------------------
# Compiled entries and their cache


@dataclass
class Compiled:
    """One compiled run, shared by every request with its key."""

    key: RunKey
    executable: Any
    trace_ms: float
    compile_ms: float
    jaxpr: str
    jaxpr_truncated: bool
    hlo: str
    hlo_truncated: bool
    cost: dict | None
    out_info: Any
    run_times: deque = field(default_factory=lambda: deque(maxlen=RUN_TIMES_KEPT))
    lock: threading.Lock = field(default_factory=threading.Lock)
    memo: dict = field(default_factory=dict)
    """What answers derive from the key alone (the output's tree node), made once."""

    def remember(self, name: str, make: Callable[[], Any]) -> Any:
        found = self.memo.get(name)
        if found is None:
            found = self.memo[name] = make()
        return found

    def record(self, seconds: float) -> None:
        with self.lock:
            self.run_times.append(seconds)

    def run_ms(self) -> float:
        with self.lock:
            times = list(self.run_times)
        return statistics.median(times) * 1e3 if times else 0.0


class CompileCache:
    """A bounded LRU of compiled runs; a per-key lock so that a key compiles once."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self._entries: OrderedDict[RunKey, Compiled] = OrderedDict()
        self._locks: dict[RunKey, threading.Lock] = {}
        self._lock = threading.Lock()
        self.compiles = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: RunKey) -> Compiled | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return entry

    def get_or_compile(
        self, key: RunKey, compile_fn: Callable[[], Compiled]
    ) -> tuple[Compiled, bool]:
        entry = self.get(key)
        if entry is not None:
            return entry, False
        with self._lock:
            key_lock = self._locks.setdefault(key, threading.Lock())
        with key_lock:
            entry = self.get(key)
            if entry is not None:
                return entry, False
            try:
                entry = compile_fn()
            finally:
                with self._lock:
                    self._locks.pop(key, None)
            with self._lock:
                self._entries[key] = entry
                self.compiles += 1
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return entry, True


# ------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class PreparedInput:
    array: jax.Array
    shape: tuple[int, ...]
    dtype: str
    init: str
    seed: int
    start: float | None
    stop: float | None
    values: tuple[float, ...] | None  # flat, for init=values
    values_shape: tuple[int, ...] | None


def prepare_input(
    spec: InputSpec, default_shape: Sequence[int], default_dtype: str, max_elements: int
) -> PreparedInput:
    """The input array, its size checked against ``max_input_elements`` before allocating."""
    dtype = spec.dtype or default_dtype
    values = values_shape = None
    if spec.init == "values":
        if spec.values is None:
            raise RunError(
                "init is 'values' but no values were given: type numbers such as 1 2; 3 4",
                field="input.values",
            )
        try:
            flat, values_shape = parse_values(spec.values, max_elements)
        except ValuesError as error:
            raise RunError(f"The input values: {error}", field="input.values") from None
        values = tuple(flat)
        shape = tuple(spec.shape) if spec.shape is not None else values_shape
        if math.prod(shape) != len(flat) or (
            len(values_shape) > 1 and tuple(values_shape) != tuple(shape)
        ):
            raise RunError(
                f"The input values have shape {shape_text(values_shape)} ({len(flat)} numbers) "
                f"but the input shape is {shape_text(shape)}: give values of that shape, or a "
                "flat list of as many numbers",
                field="input.values",
            )
        if dtype == "int32" and any(v != int(v) for v in flat if math.isfinite(v)):
            raise RunError(
                "The input is int32 (indices) but the values are not whole numbers",
                field="input.values",
            )
        if dtype == "int32" and not all(math.isfinite(v) for v in flat):
            raise RunError(
                "The input is int32 (indices): NaN and infinity are not allowed",
                field="input.values",
            )
    else:
        shape = tuple(spec.shape) if spec.shape is not None else tuple(default_shape)
    elements = math.prod(shape)
    if elements > max_elements:
        raise RunError(
            f"The input {shape_text(shape)} has {elements} elements; the limit is "
            f"{max_elements} (max_input_elements, PLAYGROUND_MAX_INPUT_ELEMENTS).",
            field="input.shape",
        )
    if dtype == "int32" and spec.init == "normal":
        raise RunError(
            "A normal input is made of floats, but this input is int32 (indices): "
            "use uniform (random whole numbers from start to stop), linspace, ones, "
            "zeros or values",
            field="input.init",
        )
    start, stop = spec.bounds(dtype)
    if spec.init in ("uniform",) and not start < stop:
        raise RunError(
            f"uniform needs start < stop; got start={start:g}, stop={stop:g}", field="input.start"
        )
    prepared = PreparedInput(
        array=None,
        shape=shape,
        dtype=dtype,
        init=spec.init,
        seed=spec.seed,  # type: ignore[arg-type]
        start=start if spec.init in ("uniform", "linspace") else None,
        stop=stop if spec.init in ("uniform", "linspace") else None,
        values=values,
        values_shape=values_shape,
    )
    return _with_array(prepared)


def _with_array(p: PreparedInput) -> PreparedInput:
    dtype = jnp.dtype(p.dtype)
    if p.init == "ones":
        array = jnp.ones(p.shape, dtype=dtype)
    elif p.init == "zeros":
        array = jnp.zeros(p.shape, dtype=dtype)
    elif p.init == "normal":
        array = jax.random.normal(jax.random.PRNGKey(p.seed), p.shape, dtype=dtype)
    elif p.init == "uniform":
        key = jax.random.PRNGKey(p.seed)
        if p.dtype == "int32":
            array = jax.random.randint(key, p.shape, int(p.start), int(p.stop), dtype=dtype)
        else:
            array = jax.random.uniform(key, p.shape, dtype=dtype, minval=p.start, maxval=p.stop)
    elif p.init == "linspace":
        array = jnp.linspace(p.start, p.stop, math.prod(p.shape), dtype=dtype).reshape(p.shape)
    else:
        array = jnp.array(np.asarray(p.values, dtype=np.float64), dtype=dtype).reshape(p.shape)
    return PreparedInput(**{**p.__dict__, "array": array})


class InputCache:
    """Inputs made from the same spec are the same array: keep the recent ones."""

    def __init__(self, size: int = 64):
        self._size = size
        self._items: OrderedDict[tuple, PreparedInput] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: InputSpec, default_shape, default_dtype, max_elements) -> PreparedInput:
        if spec.init == "values":
            return prepare_input(spec, default_shape, default_dtype, max_elements)
        key = (
            None if spec.shape is None else tuple(spec.shape),  # [] (a scalar) is a shape too
            spec.init,
            spec.seed,
            spec.start,
            spec.stop,
            spec.dtype,
            tuple(default_shape),
            default_dtype,
        )
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        prepared = prepare_input(spec, default_shape, default_dtype, max_elements)
        with self._lock:
            self._items[key] = prepared
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return prepared


# ------------------------------------------------------------------------------------------
# Building the function


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
        shown = f"{_DTYPE_SHORT.get(dtype, dtype)}[{','.join(map(str, shape))}]"
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
        executable = lowered.compile()
    except Exception as error:  # noqa: BLE001
        raise RunError(f"The function could not be compiled: {jax_message(error)}") from None
    compiled_at = time.perf_counter()
    cost = _cost(executable.cost_analysis())
    check_budget(cost, settings)
    jaxpr, jaxpr_cut = _text(str(traced.jaxpr))
    hlo, hlo_cut = _text(lowered.as_text())
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
    )


def check_output(out_info: Any, settings: Settings) -> None:
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
    if not cost or cost.get("flops") is None:
        return
    if cost["flops"] > settings.max_run_flops:
        raise RunError(
            f"This run would take about {cost['flops']:.3g} floating-point operations (the "
            f"compiler's estimate); the limit is {settings.max_run_flops:.3g} per run "
            "(max_run_flops, PLAYGROUND_MAX_RUN_FLOPS). Use a smaller input or module",
            field="input.shape",
        )


def execute(entry: Compiled, args: tuple, *, timing: bool) -> tuple[Any, float]:
    """Call the executable; with ``timing``, call it a few more times for a median."""
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


# ------------------------------------------------------------------------------------------
# The engine


@dataclass
class RunOutcome:
    """What one run gives back, before it is made into JSON or HTML."""

    result: Any
    entry: Compiled
    compiled: bool
    compiles: int
    changes: list[str]
    compared_with: str | None
    input: PreparedInput
    request: Any
    expression: Expression | None
    simple_model: bool
    run_ms: float


class RunEngine:
    """Compiles and runs requests; one per app (``services.extras['runs']``)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cache = CompileCache(settings.compile_cache_size)
        self.structures = StructureMemo()
        self.inputs = InputCache()
        self._previous: OrderedDict[tuple, RunKey] = OrderedDict()
        self._previous_lock = threading.Lock()
        self._expressions: OrderedDict[str, Expression] = OrderedDict()

    @property
    def compiles(self) -> int:
        return self.cache.compiles

    # -- previous runs, for "what changed"
    def _remember(self, scopes: Sequence[tuple], key: RunKey) -> tuple[RunKey | None, str | None]:
        with self._previous_lock:
            before, compared = None, None
            for scope in scopes:
                found = self._previous.get(scope)
                if found is not None and found.mode == key.mode:
                    before = found
                    compared = scope[0]
                    break
            for scope in scopes:
                self._previous[scope] = key
                self._previous.move_to_end(scope)
            while len(self._previous) > 4096:
                self._previous.popitem(last=False)
        return before, compared

    def parse_loss(self, text: str, field_name: str = "loss") -> Expression:
        with self._previous_lock:
            found = self._expressions.get(text)
            if found is not None:
                return found
        try:
            expression = parse_expression(
                text,
                LOSS_VARIABLES,
                max_length=self.settings.max_expression_length,
                max_nodes=self.settings.max_expression_nodes,
            )
        except ExpressionError as error:
            raise RunError(
                f"The loss {text[:80]!r} cannot be used: {error.message}", field=field_name
            ) from None
        with self._previous_lock:
            self._expressions[text] = expression
            while len(self._expressions) > 512:
                self._expressions.popitem(last=False)
        return expression

    def run(
        self, spec: Any, model: Any, request: RunRequest, *, scopes: Sequence[tuple] = ()
    ) -> RunOutcome:
        """Compile (or reuse) and run ``request`` on ``model`` built from catalog ``spec``."""
        settings = self.settings
        expression = self.parse_loss(request.loss) if request.function == "loss" else None
        prepared = self.inputs.get(
            request.input,
            spec.example_input_shape(),
            getattr(spec, "input_dtype", "float32"),
            settings.max_input_elements,
        )
        structure, arrays, simple = self.structures.get(model)
        transforms = tuple(request.transforms)
        builder = PipelineBuilder(
            apply=spec.apply,
            function=request.function,
            expression=expression,
            wrt=request.wrt,
            transforms=transforms,
            vmap_axis=request.vmap_axis,
            batched=request.batched,
            max_jacobian=settings.max_array_elements,
            kind=spec.kind,
            input_shape=prepared.shape,
        )
        if (
            request.wrt == "input"
            and prepared.dtype != "float32"
            and (DIFFERENTIATING & set(transforms))
        ):
            raise RunError(
                f"The input is {prepared.dtype} (indices), and gradients are only defined for "
                "float inputs: differentiate w.r.t. params instead",
                field="wrt",
            )
        builder.check_vmap_axes(prepared.shape, prepared.dtype)
        key = RunKey(
            mode="run",
            kind=spec.kind,
            apply=spec.apply_code("model", "x"),
            structure=structure.key,
            statics=structure.statics,
            function=request.function,
            loss=expression.to_python() if expression is not None else None,
            wrt=request.wrt if DIFFERENTIATING & set(transforms) else "-",
            transforms=transforms,
            vmap_axis=request.vmap_axis if "vmap" in transforms else None,
            batched=request.batched,
            input_shape=prepared.shape,
            input_dtype=prepared.dtype,
        )
        args = (arrays, prepared.array)

        def compile_fn() -> Compiled:
            top = make_top(structure, builder.build)
            names = ", ".join(transforms) or "the function"
            return compile_run(key, top, args, settings, names)

        entry, compiled = self.cache.get_or_compile(key, compile_fn)
        result, run_ms = execute(entry, args, timing=compiled)
        before, compared = self._remember(scopes, key)
        return RunOutcome(
            result=result,
            entry=entry,
            compiled=compiled,
            compiles=self.cache.compiles,
            changes=key_changes(before, key),
            compared_with=compared,
            input=prepared,
            request=request,
            expression=expression,
            simple_model=simple,
            run_ms=run_ms,
        )

    def sweep(
        self, spec: Any, model: Any, request: SweepRequest, *, scopes: Sequence[tuple] = ()
    ) -> RunOutcome:
        """f and df/dx_i along one input coordinate: ``vmap(value_and_grad(f))(ts)``."""
        settings = self.settings
        expression = self.parse_loss(request.loss)
        example = tuple(spec.example_input_shape())
        base_spec = request.base_input or InputSpec(init="zeros")
        if request.base_input is None or request.base_input.shape is None:
            if len(example) <= 1:
                default_shape = example
            elif getattr(spec, "batched_input", False) and len(example) == 2:
                default_shape = example[1:]
            else:
                raise RunError(
                    f"A sweep moves one coordinate of a scalar or vector input, but this module "
                    f"takes {shape_text(example)}: give base_input a shape such as "
                    f"[{example[-1]}] if the module accepts one",
                    field="base_input",
                )
        else:
            default_shape = example
        prepared = self.inputs.get(base_spec, default_shape, "float32", settings.max_input_elements)
        if len(prepared.shape) > 1:
            raise RunError(
                f"A sweep needs a scalar or vector input; the base input is "
                f"{shape_text(prepared.shape)}",
                field="base_input.shape",
            )
        if prepared.dtype != "float32":
            raise RunError(
                "A sweep moves a float coordinate; this input is int32", field="base_input.dtype"
            )
        size = math.prod(prepared.shape)
        if request.coordinate >= size:
            raise RunError(
                f"coordinate {request.coordinate} does not exist: the input "
                f"{shape_text(prepared.shape)} has {size} element{'s' if size != 1 else ''} "
                f"(0 to {size - 1})",
                field="coordinate",
            )
        structure, arrays, _ = self.structures.get(model)
        builder = PipelineBuilder(
            apply=spec.apply,
            function="loss",
            expression=expression,
            wrt="input",
            transforms=("value_and_grad",),
            vmap_axis=0,
            batched=False,
            max_jacobian=settings.max_array_elements,
            kind=spec.kind,
        )
        shape = prepared.shape

        def make_pipeline(static):
            base_fn = builder._scalar_check(builder.base(static), "grad", "the loss")

            def pipeline(params, inputs, rest):
                base, coordinate, ts = inputs

                def f_of_t(t):
                    x = base.reshape(-1).at[coordinate].set(t).reshape(shape)
                    return base_fn(params, x, rest)

                return jax.vmap(jax.value_and_grad(f_of_t))(ts)

            return pipeline

        ts = jnp.linspace(request.start, request.stop, request.points, dtype=jnp.float32)
        key = RunKey(
            mode="sweep",
            kind=spec.kind,
            apply=spec.apply_code("model", "x"),
            structure=structure.key,
            statics=structure.statics,
            function="loss",
            loss=expression.to_python(),
            wrt="input",
            transforms=("value_and_grad", "vmap"),
            vmap_axis=0,
            batched=False,
            input_shape=prepared.shape,
            input_dtype="float32",
            extra=(request.points,),
        )
        args = (arrays, (prepared.array, jnp.int32(request.coordinate), ts))

        def compile_fn() -> Compiled:
            return compile_run(key, make_top(structure, make_pipeline), args, settings, "grad")

        entry, compiled = self.cache.get_or_compile(key, compile_fn)
        result, run_ms = execute(entry, args, timing=compiled)
        before, compared = self._remember(scopes, key)
        return RunOutcome(
            result=(ts, *result),
            entry=entry,
            compiled=compiled,
            compiles=self.cache.compiles,
            changes=key_changes(before, key),
            compared_with=compared,
            input=prepared,
            request=request,
            expression=expression,
            simple_model=False,
            run_ms=run_ms,
        )


def _all_trained(model: Any) -> bool:
    spec = library.trainable_filter(model)
    return all(flag is True for flag in jax.tree_util.tree_leaves(spec))
