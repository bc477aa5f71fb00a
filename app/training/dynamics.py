"""A library network's state over time: T sweeps of ``step`` or ``step_inference``.

``run_dynamics`` (in a worker process: ``dynamics_task``) starts from ``state.init(x, y)``
(phase ``"train"``, ``y`` when the batch comes from a dataset, zeros otherwise) or
``state.init(x)`` (phase ``"inference"``), runs T sweeps under
``jax.lax.scan`` and collects every slot after every sweep:

- ``states[s][t]``: slot ``s`` after sweep ``t + 1``, ``(batch, units)``. In inference the
  output slot is not updated by ``step_inference``; it shows what ``predict`` reads out of the
  state after that sweep (the sweep itself is unchanged by it);
- ``flips[t]``: the fraction of the units of the slots the sweep updates (every row but the
  last) whose value changed in sweep ``t + 1`` (by more than ``1e-6``): how fast it settles;
- ``edges[i][j]``: the mean ``|message|`` that edge ``(i, j)`` of the LayerMap sends after the
  last sweep (receiver ``i``, sender ``j``; ``None`` where there is no module).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from app import plots
from app.training.chunks import model_from_leaves
from library.orchestrators import SequentialOrchestrator

CHANGE_TOLERANCE = 1e-6


def _sweep(orchestrator: SequentialOrchestrator, state: Any, phase: str) -> Any:
    if phase == "train":
        return orchestrator.step(state, None)[0]
    return orchestrator.step_inference(state, None)[0]


@eqx.filter_jit
def _simulate(orchestrator: SequentialOrchestrator, state: Any, steps: int, phase: str):
    """Every slot after each of ``steps`` sweeps, and the final edge magnitudes."""
    updated = [i for i, _ in orchestrator.lmap.row_items(skip_last=True)]

    def shown(state):
        if phase == "inference":
            return orchestrator.predict(state, None)[0]
        return state

    def body(state, _):
        new = _sweep(orchestrator, state, phase)
        changed = [jnp.abs(new[i] - state[i]) > CHANGE_TOLERANCE for i in updated]
        count = sum(c.sum() for c in changed)
        total = sum(c.size for c in changed)
        flips = count / max(total, 1)
        return new, (list(shown(new).states), flips)

    final, (states, flips) = jax.lax.scan(body, state, None, length=steps)
    last = shown(final)
    edges = {
        (i, j): jnp.mean(jnp.abs(module(last[j], None)))
        for (i, j), module in orchestrator.lmap.edge_items()
    }
    return states, flips, edges


def run_dynamics(
    orchestrator: SequentialOrchestrator,
    state: Any,
    x: np.ndarray,
    y: np.ndarray | None,
    steps: int,
    phase: Literal["train", "inference"],
) -> dict[str, Any]:
    """``{"states", "flips", "edges", "slots"}`` as NumPy arrays and lists (see the module)."""
    start = state.init(jnp.asarray(x), None if y is None or phase != "train" else jnp.asarray(y))
    states, flips, edges = _simulate(orchestrator, start, steps, phase)
    num_slots = len(start)
    matrix: list[list[float | None]] = [[None] * num_slots for _ in range(num_slots)]
    for (i, j), value in edges.items():
        matrix[i][j] = float(value)
    return {
        "states": [np.asarray(s).reshape(steps, x.shape[0], -1) for s in states],
        "flips": np.asarray(flips, np.float64),
        "edges": matrix,
        "slots": [int(math.prod(start[i].shape[1:])) for i in range(num_slots)],
        "initial": [np.asarray(start[i]).reshape(x.shape[0], -1) for i in range(num_slots)],
    }


def dynamics_task(
    entry: Any,
    leaves: list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray | None,
    steps: int,
    phase: Literal["train", "inference"],
) -> dict[str, Any]:
    """:func:`run_dynamics` as a worker's task: the network rebuilt from its spec (``entry``,
    a library network's, which has a state template) and its arrays."""
    model = model_from_leaves(entry, leaves)
    return run_dynamics(model, entry.state(), x, y, steps, phase)


def slot_names(num_slots: int) -> list[str]:
    names = []
    for i in range(num_slots):
        role = "input" if i == 0 else ("output" if i == num_slots - 1 else "hidden")
        names.append(f"slot {i} ({role})")
    return names


def slot_figure(values: np.ndarray, name: str, example: int) -> dict:
    """Heatmap of one slot over time for one example: rows are sweeps (0: the initial state),
    columns units."""
    steps, units = values.shape[0] - 1, values.shape[1]
    figure = plots.heatmap_figure(
        values,
        title=f"{name}, example {example}: state after each sweep (0: initial)",
        x_title="unit",
        y_title="sweep",
    )
    trace = figure["data"][0]
    trace["y"] = list(range(0, steps + 1))
    trace["hovertemplate"] = "sweep %{y}, unit %{x}: %{z:.3g}<extra></extra>"
    trace.pop("texttemplate", None)
    figure["layout"]["height"] = max(260, min(460, 120 + 14 * steps))
    figure["layout"]["yaxis"]["autorange"] = "reversed"
    figure["layout"]["xaxis"]["range"] = [-0.5, units - 0.5]
    return figure


def overview_figure(states: list[np.ndarray], example: int) -> dict:
    """All slots side by side for one example (sweep by unit), slots separated by lines."""
    blocks = [s[:, example, :] for s in states]
    z = np.concatenate(blocks, axis=1)
    figure = plots.heatmap_figure(
        z,
        title=f"Every slot over time, example {example} (slots left to right)",
        x_title="unit (slot 0, then slot 1, ...)",
        y_title="sweep",
    )
    trace = figure["data"][0]
    trace["y"] = list(range(1, z.shape[0] + 1))
    trace.pop("texttemplate", None)
    shapes, annotations, offset = [], [], 0
    for index, block in enumerate(blocks):
        if index:
            shapes.append(
                {
                    "type": "line",
                    "x0": offset - 0.5,
                    "x1": offset - 0.5,
                    "yref": "paper",
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": "#111827", "width": 3},
                }
            )
        annotations.append(
            {
                "text": f"slot {index}",
                "x": offset + block.shape[1] / 2 - 0.5,
                "yref": "paper",
                "y": 1.0,
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 16},
            }
        )
        offset += block.shape[1]
    layout = figure["layout"]
    layout.update(shapes=shapes, annotations=annotations)
    layout["height"] = max(300, min(520, 140 + 14 * z.shape[0]))
    layout["margin"] = {"l": 70, "r": 30, "t": 90, "b": 60}
    return figure


def flips_figure(flips: np.ndarray) -> dict:
    steps = list(range(1, len(flips) + 1))
    figure = plots.line_figure(
        steps,
        {"changed": flips.tolist()},
        "Fraction of units that changed in each sweep",
        x_title="sweep",
        y_title="fraction changed",
    )
    figure["layout"]["yaxis"]["rangemode"] = "tozero"
    figure["layout"]["height"] = 340
    return figure


def edges_figure(matrix: list[list[float | None]]) -> dict:
    """The LayerMap as its receiver-by-sender matrix, coloured by mean |message|."""
    n = len(matrix)
    z = np.array([[np.nan if v is None else v for v in row] for row in matrix], np.float64)
    figure = plots.heatmap_figure(
        z,
        x_labels=[f"from {j}" for j in range(n)],
        y_labels=[f"to {i}" for i in range(n)],
        title="LayerMap: mean |message| per edge",
        x_title="sender slot",
        y_title="receiver slot",
    )
    trace = figure["data"][0]
    trace["colorscale"] = plots.SEQUENTIAL
    trace.pop("zmid", None)
    trace["hovertemplate"] = "%{y} %{x}: mean |message| %{z:.4g}<extra></extra>"
    trace["texttemplate"] = "%{z:.3g}"
    figure["layout"]["height"] = max(320, 120 + 70 * n)
    return figure
