"""The run engine: build the function, apply the transformations, compile once, run.

The engine is the worker's side of a run (``app.runs.worker`` keeps one per worker process);
the web process's side is ``app.runs.client``. What it gives back, a :class:`RunOutcome`,
holds NumPy results and a :class:`~app.runs.cache.CompiledInfo` instead of the executable, so
it pickles.

A run is ``f = T_n(...T_1(base))`` where ``base`` is the forward pass ``spec.apply(model, x)``
or a loss expression over ``out`` and ``x``, and ``T_i`` are ``grad``, ``value_and_grad``,
``vmap``, ``jit``, ``jacfwd``, ``jacrev`` in the order given (innermost first). Every transformed
function takes ``(params, x, rest)``: ``params, rest = eqx.partition(model,
library.trainable_filter(model))``; ``grad`` differentiates argument 0 (``wrt="params"``) or 1
(``wrt="input"``), ``vmap`` maps ``x`` over ``vmap_axis`` with the model broadcast
(``in_axes=(None, axis, None)``).

Compile once, share across users
--------------------------------
``top(arrays, x)`` takes the module's array leaves as an argument and rebuilds the module from
its tree definition inside the trace (:mod:`app.runs.structure`): the module is never closed
over, so one executable serves every module of the same structure. Executables are cached
(:mod:`app.runs.cache`) under a :class:`~app.runs.keys.RunKey`: the pipeline, the function
(kind and canonical loss text), what is differentiated, the vmap axis, the input's shape and
dtype, and the module's structure (its tree definition, static fields included, its non-array
leaves such as activation functions, and the shape and dtype of each array leaf). A per-key
lock makes two identical requests compile once (within a worker). The parts:

- ``structure``: a module's structure and its array leaves (:class:`StructureMemo`);
- ``keys``: :class:`RunKey` and what changed between two keys;
- ``cache``: :class:`Compiled` entries and the :class:`CompileCache`;
- ``inputs``: :func:`prepare_input` and the :class:`InputCache`;
- ``pipeline``: :class:`PipelineBuilder`, the transformed function;
- ``compiling``: trace, check the limits, lower, compile, execute;
- ``eager``: the pipeline run op by op, without jit (``eager_ms``);
- ``engine`` (here): :class:`RunEngine`, which ties them together per request.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp

from app.cache import BoundedCache
from app.expressions import Expression, ExpressionError, parse_expression
from app.runs.cache import CompileCache, Compiled, CompiledInfo
from app.runs.compiling import compile_run, execute
from app.runs.eager import eager_skip_reason, measure_eager, without_jit
from app.runs.errors import RunError, jax_message
from app.runs.inputs import InputCache, PreparedInput
from app.runs.keys import KeyRecord, RunKey
from app.runs.limits import MB, check_light, check_trace_size
from app.runs.pipeline import LOSS_VARIABLES, PipelineBuilder, make_top
from app.runs.scopes import ScopeWord
from app.runs.spec import DIFFERENTIATING, InputSpec, RunRequest, SweepRequest, shape_text
from app.runs.structure import ModuleStructure, StructureMemo
from app.settings import Settings
from app.trees import describe_tree
from app.workers import stage

MAX_EXPRESSIONS = 512
"""Parsed loss expressions kept."""
SWEEP_TRANSFORMS = ("value_and_grad", "vmap")
"""What a sweep applies to the loss: ``vmap(value_and_grad(f))``."""


@dataclass
class RunOutcome:
    """What one run gives back, before it is made into JSON or HTML. The worker fills the
    first part (it pickles: NumPy arrays, no executable); the web process the rest."""

    result: Any
    """The result: JAX arrays as the engine computed them; NumPy arrays, or a digest, once
    the worker sends it (``app.runs.worker._split``)."""
    entry: CompiledInfo
    compiled: bool
    input: PreparedInput
    """The input; its ``array`` a NumPy array, or None when the caller did not ask for it."""
    simple_model: bool
    run_ms: float
    key: KeyRecord | None = None
    output: dict | None = None
    """The result as a tree node (``app.trees.describe_tree``), for a run."""
    eager_ms: float | None = None
    """The pipeline without jit, run op by op: its per-call time (app.runs.eager)."""
    eager_skipped: str | None = None
    """Why ``eager_ms`` was not measured, in words."""
    request: Any = None
    expression: Expression | None = None
    compiles: int = 0
    changes: list[str] = field(default_factory=list)
    compared_with: str | None = None
    compile_scope: ScopeWord = "server"
    """``now``: this call compiled; ``workspace``: reused, compiled before by this workspace
    (or room); ``server``: reused, compiled for someone else (app.runs.scopes)."""


class Losses:
    """Loss expressions parsed once (bounded): what the web process validates before a run is
    sent, and what the worker traces."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._parsed: BoundedCache[str, Expression] = BoundedCache(MAX_EXPRESSIONS)

    def parse(self, text: str, field_name: str = "loss") -> Expression:
        return self._parsed.get_or_make(text, lambda: self._parse(text, field_name))

    def _parse(self, text: str, field_name: str) -> Expression:
        try:
            return parse_expression(
                text,
                LOSS_VARIABLES,
                max_length=self.settings.max_expression_length,
                max_nodes=self.settings.max_expression_nodes,
            )
        except ExpressionError as error:
            raise RunError(
                f"The loss {text[:80]!r} cannot be used: {error.message}", field=field_name
            ) from None

    def check_cost(self, spec: Any, request: RunRequest | SweepRequest) -> int:
        """Refuse at once, before the module is even built or loaded, a run whose trace would
        be too big (from the catalog's estimate of the module's leaves); else the estimate
        (leaf operations, see ``app.runs.limits.trace_estimate``)."""
        transforms, loss = run_transforms(request)
        parts = self.parse(loss).parts if loss is not None else 0
        return check_trace_size(spec.estimated_leaves(), parts, transforms, self.settings)


def run_transforms(request: RunRequest | SweepRequest) -> tuple[Sequence[str], str | None]:
    """The transformations a request applies, and its loss text (None for a forward pass)."""
    if isinstance(request, SweepRequest):
        return SWEEP_TRANSFORMS, request.loss
    return request.transforms, request.loss if request.function == "loss" else None


class RunEngine:
    """Compiles and runs requests; one per worker process (``app.runs.worker``)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cache = CompileCache(settings.compile_cache_size, settings.compile_cache_mb * MB)
        self.structures = StructureMemo()
        self.inputs = InputCache()
        self.losses = Losses(settings)

    @property
    def compiles(self) -> int:
        return self.cache.compiles

    def run(
        self,
        spec: Any,
        model: Any,
        request: RunRequest,
        *,
        reset_at: float | None = None,
        eager: bool = True,
        with_input: bool = True,
    ) -> RunOutcome:
        """Compile (or reuse) and run ``request`` on ``model`` built from catalog ``spec``.

        ``reset_at``: an entry compiled before this time is compiled again (a compile scope
        that reset its view, app.runs.scopes); ``eager``: also time the pipeline without jit,
        op by op; ``with_input``: send the input's array back."""
        self.losses.check_cost(spec, request)
        settings = self.settings
        expression = self.losses.parse(request.loss) if request.function == "loss" else None
        prepared = self.inputs.get(
            request.input,
            spec.example_input_shape(),
            getattr(spec, "input_dtype", "float32"),
            settings.max_input_elements,
        )
        known = self.structures.get(model)
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
        check_trace_size(
            len(known.structure.array_index),
            expression.parts if expression is not None else 0,
            transforms,
            settings,
        )
        key = self._key(
            "run",
            spec,
            known.structure,
            prepared,
            function=request.function,
            expression=expression,
            wrt=request.wrt if DIFFERENTIATING & set(transforms) else "-",
            transforms=transforms,
            vmap_axis=request.vmap_axis if "vmap" in transforms else None,
            batched=request.batched,
        )
        args = (known.arrays, prepared.array)
        outcome, entry = self._finish(
            key,
            known.structure,
            builder.build,
            args,
            transform_names=", ".join(transforms) or "the function",
            prepared=prepared,
            simple_model=known.simple,
            reset_at=reset_at,
            with_input=with_input,
        )
        outcome.output = entry.remember("output", lambda: describe_tree(outcome.result))
        if eager:
            self._eager(outcome, entry, known, builder, args)
        return outcome

    def _eager(
        self, outcome: RunOutcome, entry: Compiled, known: Any, builder: PipelineBuilder, args
    ) -> None:
        """Time the pipeline without jit, op by op (bounded: see app.runs.eager)."""
        outcome.eager_skipped = eager_skip_reason(entry, len(known.arrays))
        if outcome.eager_skipped is not None:
            return
        builder.transforms = without_jit(builder.transforms)
        top = make_top(known.structure, builder.build)
        try:
            with stage("running"):
                outcome.eager_ms = measure_eager(entry, top, args)
        except Exception as error:  # noqa: BLE001 - the compiled run succeeded; say why not
            outcome.eager_skipped = f"Not run op by op: {jax_message(error)}"

    def sweep(
        self,
        spec: Any,
        model: Any,
        request: SweepRequest,
        *,
        reset_at: float | None = None,
        with_input: bool = True,
    ) -> RunOutcome:
        """f and df/dx_i along one input coordinate: ``vmap(value_and_grad(f))(ts)``."""
        self.losses.check_cost(spec, request)
        settings = self.settings
        expression = self.losses.parse(request.loss)
        prepared = self.inputs.get(
            request.base_input or InputSpec(init="zeros"),
            _sweep_default_shape(spec, request),
            "float32",
            settings.max_input_elements,
        )
        _check_sweep_input(prepared, request.coordinate)
        known = self.structures.get(model)
        check_trace_size(
            len(known.structure.array_index), expression.parts, SWEEP_TRANSFORMS, settings
        )
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
        ts = jnp.linspace(request.start, request.stop, request.points, dtype=jnp.float32)
        key = self._key(
            "sweep",
            spec,
            known.structure,
            prepared,
            function="loss",
            expression=expression,
            wrt="input",
            transforms=SWEEP_TRANSFORMS,
            vmap_axis=0,
            batched=False,
            sweep_points=request.points,
        )
        outcome, _ = self._finish(
            key,
            known.structure,
            lambda static: builder.sweep(static, prepared.shape),
            (known.arrays, (prepared.array, jnp.int32(request.coordinate), ts)),
            transform_names="grad",
            prepared=prepared,
            simple_model=False,
            reset_at=reset_at,
            with_input=with_input,
        )
        outcome.result = (jax.device_get(ts), *outcome.result)
        return outcome

    @staticmethod
    def _key(
        mode: str,
        spec: Any,
        structure: ModuleStructure,
        prepared: PreparedInput,
        *,
        expression: Expression | None,
        **parts: Any,
    ) -> RunKey:
        return RunKey(
            mode=mode,
            kind=spec.kind,
            apply=spec.apply_code("model", "x"),
            structure=structure.key,
            statics=structure.statics,
            loss=expression.to_python() if expression is not None else None,
            input_shape=prepared.shape,
            input_dtype=prepared.dtype,
            **parts,
        )

    def _finish(
        self,
        key: RunKey,
        structure: ModuleStructure,
        make_pipeline: Callable[[Any], Callable],
        args: tuple,
        *,
        transform_names: str,
        prepared: PreparedInput,
        simple_model: bool,
        reset_at: float | None,
        with_input: bool,
    ) -> tuple[RunOutcome, Compiled]:
        """The ending ``run`` and ``sweep`` share: compile (or reuse), execute."""

        def compile_fn() -> Compiled:
            top = make_top(structure, make_pipeline)
            return compile_run(key, top, args, self.settings, transform_names)

        def stale(entry: Compiled) -> bool:  # the scope reset its view: compile again
            return reset_at is not None and entry.compiled_at < reset_at

        entry, compiled = self.cache.get_or_compile(key, compile_fn, stale)
        check_light(entry.cost, entry.memory, self.settings)
        result, run_ms = execute(entry, args, timing=compiled)
        sent = replace(prepared, array=jax.device_get(prepared.array) if with_input else None)
        outcome = RunOutcome(
            result=result,
            entry=entry.info(),
            compiled=compiled,
            input=sent,
            simple_model=simple_model,
            run_ms=run_ms,
            key=entry.remember("key", key.record),
        )
        return outcome, entry


def _sweep_default_shape(spec: Any, request: SweepRequest) -> tuple[int, ...]:
    """The base input's shape when the request gives none: the module's example input, or
    one example of a batched module."""
    example = tuple(spec.example_input_shape())
    if request.base_input is not None and request.base_input.shape is not None:
        return example
    if len(example) <= 1:
        return example
    if getattr(spec, "batched_input", False) and len(example) == 2:
        return example[1:]
    raise RunError(
        f"A sweep moves one coordinate of a scalar or vector input, but this module "
        f"takes {shape_text(example)}: give base_input a shape such as "
        f"[{example[-1]}] if the module accepts one",
        field="base_input",
    )


def _check_sweep_input(prepared: PreparedInput, coordinate: int) -> None:
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
    if coordinate >= size:
        raise RunError(
            f"coordinate {coordinate} does not exist: the input "
            f"{shape_text(prepared.shape)} has {size} element{'s' if size != 1 else ''} "
            f"(0 to {size - 1})",
            field="coordinate",
        )
