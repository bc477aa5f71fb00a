"""The run panel's state (the form, the presets) and the result as the page shows it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.errors import PlaygroundError, describe_validation_errors
from app.formdata import parse_index
from app.runs.code import run_expression
from app.runs.digest import host_leaves, is_single_array
from app.runs.spec import DEFAULT_LOSS, MAX_TRANSFORMS, TRANSFORMS, RunRequest
from app.text import array_summary, dims_text, number_text

SMALL_ARRAY = 60
"""Arrays up to this many elements show every value in the result tree."""
FULL_VALUES = 400
"""Values listed behind "all values" for one leaf."""
MAX_ROWS = 300
"""Rows of the result tree drawn on the page."""

TRANSFORM_TITLES = {
    "grad": "grad: the gradient of a scalar function",
    "value_and_grad": "value_and_grad: the value and the gradient",
    "vmap": "vmap: map over an axis of the input",
    "jit": "jit: compile with XLA",
    "jacfwd": "jacfwd: the Jacobian, forward mode",
    "jacrev": "jacrev: the Jacobian, reverse mode",
}
INITS = {
    "ones": "ones",
    "zeros": "zeros",
    "normal": "normal (seed)",
    "uniform": "uniform (seed, start to stop)",
    "linspace": "linspace (start to stop)",
    "values": "values (typed or pasted)",
}


STEP_VERBS = ("add", "remove", "up", "down")


def step_action(action: str) -> tuple[str, int | None]:
    """A pipeline button's ``action`` (``add``, ``remove-2``, ``up-0``, ``down-1``; empty for
    none) as ``(verb, index)``; a 422 naming ``action`` for anything else."""
    if action in ("", "add"):
        return action, None
    name, _, index_text = action.partition("-")
    if name not in STEP_VERBS[1:]:
        raise PlaygroundError(
            422,
            f"action: {action[:40]!r} is not a step button (add, remove-N, up-N, down-N).",
            field="action",
        )
    return name, parse_index(index_text, "action")


@dataclass
class RunForm:
    """What the run panel's form shows: the fields as text, so a bad entry is kept."""

    function: str = "loss"
    loss: str = DEFAULT_LOSS
    wrt: str = "params"
    transforms: list[str] = field(default_factory=lambda: ["grad"])
    vmap_axis: str = "0"
    batched: bool = False
    shape: str = ""
    init: str = "ones"
    seed: str = "0"
    start: str = ""
    stop: str = ""
    values: str = ""
    preset: str | None = None

    def input_words(self, example_shape: str = "") -> str:
        """How the form's input is made, in words: ``normal (seed 0), shape 5, 2``."""
        shape = self.shape.strip() or example_shape
        how = input_how(
            self.init,
            self.seed.strip() or "0",
            self.start.strip() or "-1",
            self.stop.strip() or "1",
        )
        return f"{how}, shape {shape}" if shape else f"{how}, a scalar"

    def request(self) -> RunRequest:
        """The API request of this form; ``ValueError`` with the problems in words."""
        data: dict[str, Any] = {
            "function": self.function,
            "loss": self.loss,
            "wrt": self.wrt,
            "transforms": self.transforms,
            "vmap_axis": self.vmap_axis.strip() or "0",
            "batched": self.batched,
            "input": {"init": self.init, "seed": self.seed.strip() or "0"},
        }
        if self.shape.strip():
            data["input"]["shape"] = self.shape
        for name in ("start", "stop"):
            text = getattr(self, name).strip()
            if text:
                data["input"][name] = text
        if self.init == "values":
            data["input"]["values"] = self.values
        try:
            return RunRequest.model_validate(data)
        except ValidationError as error:
            raise ValueError(describe_validation_errors(error.errors())) from None

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]]) -> RunForm:
        fields = {}
        transforms = []
        for key, value in pairs:
            if key == "transforms":
                transforms.append(value[:40])
            else:
                fields.setdefault(key, value)
        return cls(
            function=fields.get("function", "loss")[:20],
            loss=fields.get("loss", DEFAULT_LOSS)[:2000],
            wrt=fields.get("wrt", "params")[:20],
            transforms=transforms[: MAX_TRANSFORMS + 1],
            vmap_axis=fields.get("vmap_axis", "0")[:10],
            batched=fields.get("batched") in ("on", "true", "1"),
            shape=fields.get("shape", "")[:60],
            init=fields.get("init", "ones")[:20],
            seed=fields.get("seed", "0")[:20],
            start=fields.get("start", "")[:40],
            stop=fields.get("stop", "")[:40],
            values=fields.get("values", "")[:200_000],
        )

    def edit(self, action: str) -> None:
        """Apply a pipeline button: ``add``, ``remove-2``, ``up-2``, ``down-2``."""
        steps = self.transforms
        if action == "add" and len(steps) < MAX_TRANSFORMS:
            steps.append("jit" if "jit" not in steps else "vmap")
            return
        name, index = step_action(action)
        if index is None or not 0 <= index < len(steps):
            return
        if name == "remove":
            steps.pop(index)
        elif name == "up" and index > 0:
            steps[index - 1], steps[index] = steps[index], steps[index - 1]
        elif name == "down" and index < len(steps) - 1:
            steps[index + 1], steps[index] = steps[index], steps[index + 1]


def input_how(init: str, seed: Any, start: Any, stop: Any) -> str:
    """How an input is filled, in words (one home for the form, the presets and the result)."""
    if init == "normal":
        return f"normal (seed {seed})"
    if init == "uniform":
        return f"uniform from {start} to {stop} (seed {seed})"
    if init == "linspace":
        return f"linspace from {start} to {stop}"
    if init == "values":
        return "the values you typed"
    return init  # ones, zeros


def input_view(prepared: Any) -> dict:
    """The run's input as the result shows it: its shape, how it was made, its values."""
    array = np.asarray(prepared.array)
    start = "-1" if prepared.start is None else number_text(prepared.start, 3)
    stop = "1" if prepared.stop is None else number_text(prepared.stop, 3)
    return {
        "how": input_how(prepared.init, prepared.seed, start, stop),
        "leaf": leaf_view("x", array),
    }


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    lesson: str
    form: RunForm
    code: str
    input: str = ""
    """How the preset's input is made, in words (shown beside its button)."""


def _example_shape(spec: Any) -> tuple[int, ...]:
    return tuple(spec.example_input_shape())


def _batch_shape(spec: Any) -> tuple[int, ...]:
    example = _example_shape(spec)
    if getattr(spec, "batched_input", False):
        return example
    return (5, *example)


def _one_example(spec: Any) -> tuple[int, ...]:
    example = _example_shape(spec)
    if getattr(spec, "batched_input", False) and len(example) >= 2:
        return example[1:]
    return example


def presets(spec: Any, simple_model: bool) -> list[Preset]:
    """The workshop's arc as one-click runs, each with the code it corresponds to."""
    example = dims_text(_example_shape(spec))
    batch = dims_text(_batch_shape(spec))
    one = dims_text(_one_example(spec))
    int_input = getattr(spec, "input_dtype", "float32") != "float32"
    varied = "ones" if int_input else "normal"  # examples that differ, so their gradients do
    items = [
        Preset(
            "grad",
            "grad of the loss",
            "grad returns a tree shaped like the model",
            RunForm(transforms=["grad"], shape=example),
            "",
        ),
        Preset(
            "per-example",
            "per-example gradients",
            "vmap adds an axis: one gradient per example",
            RunForm(transforms=["grad", "vmap"], shape=batch, init=varied),
            "",
        ),
        Preset(
            "jit-vmap-grad",
            "jit(vmap(grad))",
            "jit compiles once; run it again and nothing compiles",
            RunForm(transforms=["grad", "vmap", "jit"], shape=batch, init=varied),
            "",
        ),
    ]
    if not int_input:
        items += [
            Preset(
                "input-grad",
                "input gradient",
                "differentiate with respect to x instead of the model",
                RunForm(transforms=["grad"], wrt="input", shape=example),
                "",
            ),
            Preset(
                "jacobian",
                "Jacobian",
                "jacfwd of the forward pass on one example",
                RunForm(function="forward", transforms=["jacfwd"], wrt="input", shape=one),
                "",
            ),
        ]
    out = []
    for preset in items:
        form = preset.form
        form.preset = preset.name
        code = run_expression(
            function=form.function,
            wrt=form.wrt,
            transforms=form.transforms,
            vmap_axis=0,
            simple_model=simple_model,
        )
        words = form.input_words(example)
        out.append(Preset(preset.name, preset.title, preset.lesson, form, code, words))
    return out


def input_change(before: RunForm | None, after: RunForm, example_shape: str) -> str | None:
    """What a preset changed in the input, in words (None when nothing changed): a preset never
    changes the input silently."""
    if before is None:
        return None
    old, new = before.input_words(example_shape), after.input_words(example_shape)
    return None if old == new else f"This step changed the input x: {old} → {new}."


# ------------------------------------------------------------------------------------------
# The result tree


def cell_grid(array: np.ndarray) -> list[list[str]]:
    """A small array as rows of formatted numbers (a vector is one row)."""
    values = np.asarray(array)
    if values.dtype.kind == "c":
        values = np.abs(values)
    if values.dtype.kind == "b":
        values = values.astype(np.int8)
    values = values.astype(np.float64)
    if values.ndim == 0:
        return [[number_text(float(values), 3)]]
    if values.ndim == 1:
        return [[number_text(v, 3) for v in values.tolist()]]
    rows = values.reshape(-1, values.shape[-1])
    return [[number_text(v, 3) for v in row] for row in rows.tolist()]


def leaf_view(path: str, array: np.ndarray) -> dict:
    """How a result leaf shows: its short form, its numbers or statistics, all values."""
    size = int(array.size)
    view: dict[str, Any] = {
        "path": path,
        "summary": array_summary(array),
        "size": size,
        "shape": tuple(array.shape),
    }
    finite = array[np.isfinite(array)] if array.dtype.kind in "fc" else array
    view["nonfinite"] = array.dtype.kind in "fc" and finite.size != size
    if size <= SMALL_ARRAY and array.ndim <= 2:
        view["cells"] = cell_grid(array)
    elif size <= SMALL_ARRAY:
        # one matrix per index of the leading axes: ``[0]``, ``[1]``... (vmap's new axis first)
        lead = array.shape[:-2]
        view["blocks"] = [
            ("[" + ", ".join(map(str, index)) + "]", cell_grid(array[index]))
            for index in np.ndindex(*lead)
        ]
    elif finite.size:
        as_float = finite.astype(np.float64)
        view["stats"] = {
            "min": number_text(float(as_float.min()), 3),
            "max": number_text(float(as_float.max()), 3),
            "mean": number_text(float(as_float.mean()), 3),
            "norm": number_text(float(np.sqrt(np.sum(as_float**2))), 3),
        }
    flat = array.reshape(-1)[:FULL_VALUES]
    if array.dtype.kind == "f":
        view["full"] = [repr(float(v)) if math.isfinite(v) else str(v) for v in flat.tolist()]
    else:
        view["full"] = [str(v) for v in flat.tolist()]
    view["full_cut"] = size > FULL_VALUES
    return view


def _walk_nodes(node: dict, depth: int, rows: list, limit: int) -> None:
    if len(rows) >= limit:
        return
    rows.append((node, depth))
    for child in node.get("children") or []:
        _walk_nodes(child, depth + 1, rows, limit)


def result_rows(outcome: Any, output_node: dict, model_node: dict, wrt: str) -> dict:
    """Rows of the result tree; a gradient with respect to the model beside the model's tree."""
    result = outcome.result
    leaves = {path: array for path, array in host_leaves(result)}
    prefix = None
    if wrt == "params" and not is_single_array(result):
        if output_node.get("type") == model_node.get("type"):
            prefix = ""
        else:
            for child in output_node.get("children") or []:
                if child.get("type") == model_node.get("type"):
                    prefix = child["path"]
                    break
    rows = []
    walked: list = []
    if prefix is not None:
        _walk_nodes(model_node, 0, walked, MAX_ROWS)
        for node, depth in walked:
            path = prefix + node["path"]
            array = leaves.get(path)
            rows.append(
                {
                    "depth": depth,
                    "name": node["name"] or "model",
                    "type": node["type"],
                    "model": node["summary"],
                    "model_shape": tuple(node["shape"]) if node.get("shape") is not None else None,
                    "role": node["role"],
                    "leaf": node["leaf"],
                    "out": leaf_view(path, array) if array is not None else None,
                    "note": _no_gradient_note(node) if array is None and node["leaf"] else "",
                }
            )
        extras = (
            [
                leaf_view(path, array)
                for path, array in leaves.items()
                if not path.startswith(prefix)
            ]
            if prefix
            else []
        )
    else:
        _walk_nodes(output_node, 0, walked, MAX_ROWS)
        for node, depth in walked:
            array = leaves.get(node["path"])
            rows.append(
                {
                    "depth": depth,
                    "name": node["name"] or "result",
                    "type": node["type"],
                    "model": None,
                    "role": None,
                    "leaf": node["leaf"],
                    "out": leaf_view(node["path"], array) if array is not None else None,
                    "note": "" if array is not None or not node["leaf"] else node["summary"],
                }
            )
        extras = []
    return {
        "paired": prefix is not None,
        "prefix": prefix,
        "rows": rows,
        "cut": len(walked) >= MAX_ROWS,
        "extras": extras,
        "axis_note": _axis_note(rows, "vmap" in outcome.request.transforms)
        if prefix is not None
        else None,
    }


def _axis_note(rows: list[dict], vmapped: bool) -> str | None:
    """When the gradient's leaves have more axes than the model's (vmap added one): say so with
    the first leaf's two shapes, ``f32[5,2,3]`` beside ``f32[2,3]``."""
    for row in rows:
        out = row["out"]
        if not (row["leaf"] and out):
            continue
        model_shape, out_shape = row.get("model_shape"), out.get("shape")
        if model_shape is None or out_shape is None or len(out_shape) <= len(model_shape):
            return None
        extra = out_shape[: len(out_shape) - len(model_shape)]
        if tuple(out_shape[len(extra) :]) != tuple(model_shape):
            return None
        axes = " × ".join(str(n) for n in extra)
        text = (
            f"The result's leaves have the model's shapes with a new leading axis of {axes}: "
            f"{row['name']} is {out['summary']} here, {row['model']} in the model."
        )
        if vmapped and len(extra) == 1:
            text += f" vmap added that axis: one gradient per example, {extra[0]} in all."
        return text
    return None


def _no_gradient_note(node: dict) -> str:
    role = node.get("role")
    if role == "buffer":
        return "buffer: not trained, no gradient"
    if role == "static":
        return "static: part of the structure, no gradient"
    return "no gradient"


__all__ = [
    "INITS",
    "TRANSFORMS",
    "TRANSFORM_TITLES",
    "RunForm",
    "presets",
    "result_rows",
]
