"""Plotly figures as JSON-able dicts (``{"data": [...], "layout": {...}}``), made for a projector.

The figures are plain dicts in plotly's schema, built without ``plotly.graph_objects`` so that
they stay light (no template is embedded, nothing is validated twice) and cost microseconds.
The page draws them with ``Plotly.react`` (see ``static/playground.js``): embed one as
``<div class="plot" data-figure="{{ figure|tojson|forceescape }}"></div>``.

Every figure has large type, high-contrast colours and a title; none relies on hover to be
read: small matrices carry their values in the cells, and every axis is labelled.

- :func:`array_figure` for any array: a number for a scalar, bars (short) or a line (long)
  for 1-D, a heatmap for 2-D (higher ranks are flattened to 2-D), with a histogram beside.
- :func:`bar_figure`, :func:`line_figure`, :func:`heatmap_figure` for everything else.

Values that are NaN or infinite are drawn as gaps (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

FONT_FAMILY = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
FONT_SIZE = 18
TITLE_SIZE = 20
INK = "#111827"
GRID = "#d1d5db"
ACCENT = "#1d4ed8"
SECOND = "#b45309"
PALETTE = [ACCENT, SECOND, "#047857", "#7c3aed", "#be123c", "#0e7490", "#4d7c0f", "#374151"]
DIVERGING = [
    [0.0, "#1e3a8a"],
    [0.25, "#60a5fa"],
    [0.5, "#f8fafc"],
    [0.75, "#f87171"],
    [1.0, "#7f1d1d"],
]
SEQUENTIAL = "Viridis"

MAX_LINE_POINTS = 2000
"""1-D arrays longer than this are drawn from their first ``MAX_LINE_POINTS`` values."""
MAX_BAR_COUNT = 32
"""1-D arrays up to this length are drawn as bars, longer ones as a line."""
MAX_HEATMAP_SIDE = 200
"""Heatmaps show at most this many rows and columns (the leading ones)."""
MAX_CELL_TEXT = 12
"""Matrices up to this many rows and columns show their values in the cells."""
HISTOGRAM_BINS = 30
MAIN_WIDTH = 0.56
"""The share of the width the main plot takes when a histogram is beside it."""
HISTOGRAM_START = 0.72


def _nan_to_none(values: list) -> list:
    out = []
    for value in values:
        if isinstance(value, list):
            out.append(_nan_to_none(value))
        elif isinstance(value, float) and not math.isfinite(value):
            out.append(None)
        else:
            out.append(value)
    return out


def _finite_list(array: np.ndarray) -> list:
    return _nan_to_none(np.asarray(array, dtype=np.float64).tolist())


def base_layout(title: str, *, height: int = 420, **extra: Any) -> dict:
    """The shared layout: big type, white background, visible grid, no hover-only parts."""
    layout = {
        "title": {"text": title, "font": {"size": TITLE_SIZE, "color": INK}, "x": 0.02},
        "font": {"family": FONT_FAMILY, "size": FONT_SIZE, "color": INK},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "height": height,
        "margin": {"l": 70, "r": 30, "t": 60, "b": 60},
        "showlegend": False,
        "colorway": PALETTE,
        "hoverlabel": {"font": {"size": FONT_SIZE}},
    }
    layout.update(extra)
    return layout


def _axis(title: str = "", **extra: Any) -> dict:
    axis = {
        "title": {"text": title, "font": {"size": FONT_SIZE}},
        "gridcolor": GRID,
        "zerolinecolor": "#6b7280",
        "linecolor": INK,
        "tickfont": {"size": FONT_SIZE - 2},
        "automargin": True,
    }
    axis.update({key: value for key, value in extra.items() if value is not None})
    return axis


def _histogram_trace(values: np.ndarray, xaxis: str = "x2", yaxis: str = "y2") -> dict | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    bins = min(HISTOGRAM_BINS, max(5, math.ceil(math.sqrt(finite.size))))
    counts, edges = np.histogram(finite, bins=bins, range=(low, high))
    centers = (edges[:-1] + edges[1:]) / 2
    return {
        "type": "bar",
        "x": centers.tolist(),
        "y": counts.tolist(),
        "width": float(edges[1] - edges[0]) * 0.92,
        "marker": {"color": SECOND, "line": {"width": 0}},
        "name": "histogram",
        "xaxis": xaxis,
        "yaxis": yaxis,
        "hovertemplate": "%{x:.4g}: %{y} values<extra></extra>",
    }


def _with_histogram(main: list[dict], values: np.ndarray, layout: dict) -> dict:
    """``main`` traces on the left two thirds, the histogram of ``values`` on the right."""
    histogram = _histogram_trace(values)
    if histogram is None:
        return {"data": main, "layout": layout}
    layout["xaxis"]["domain"] = [0.0, MAIN_WIDTH]
    layout["xaxis2"] = _axis("value", domain=[HISTOGRAM_START, 1.0], anchor="y2", nticks=4)
    most = max(histogram["y"]) if histogram["y"] else 1
    # the counts' ticks on the right, away from a heatmap's colour bar
    layout["yaxis2"] = _axis(
        "",
        anchor="x2",
        side="right",
        rangemode="tozero",
        tick0=0,
        dtick=max(1, math.ceil(most / 4)),
    )
    layout["margin"] = {**layout["margin"], "r": 55}
    layout["annotations"] = [
        {
            "text": "histogram",
            "xref": "paper",
            "yref": "paper",
            "x": (HISTOGRAM_START + 1.0) / 2,
            "y": 1.02,
            "xanchor": "center",
            "yanchor": "bottom",
            "showarrow": False,
            "font": {"size": FONT_SIZE - 2},
        }
    ]
    return {"data": [*main, histogram], "layout": layout}


def scalar_figure(value: float, title: str) -> dict:
    """A single number, large."""
    shown = float(value)
    return {
        "data": [
            {
                "type": "indicator",
                "mode": "number",
                "value": shown if math.isfinite(shown) else None,
                "number": {"font": {"size": 64, "color": INK}, "valueformat": ".6g"},
            }
        ],
        "layout": base_layout(title, height=240, margin={"l": 30, "r": 30, "t": 60, "b": 20}),
    }


def array_figure(array: Any, title: str) -> dict:
    """The figure for one array: a number (scalar), bars or a line (1-D), a heatmap (2-D and
    more, flattened to rows by the last axis), each with a histogram of all values beside."""
    values = np.asarray(array)
    if values.dtype.kind == "c":
        values = np.abs(values)
        title = f"{title} (magnitude)"
    values = values.astype(np.float64)
    if values.size == 1:
        return scalar_figure(values.reshape(()), title)
    if values.size == 0:
        layout = base_layout(f"{title}: empty array {list(values.shape)}", height=200)
        return {"data": [], "layout": layout}
    if values.ndim == 1:
        return _vector_figure(values, title)
    note = ""
    if values.ndim > 2:
        rows = math.prod(values.shape[:-1])
        note = f" (shape {list(values.shape)} shown as {rows} × {values.shape[-1]})"
        values_2d = values.reshape(rows, values.shape[-1])
    else:
        values_2d = values
    return _matrix_figure(values_2d, values, title + note)


def _vector_figure(values: np.ndarray, title: str) -> dict:
    count = values.shape[0]
    if count <= MAX_BAR_COUNT:
        trace = {
            "type": "bar",
            "x": list(range(count)),
            "y": _finite_list(values),
            "marker": {"color": ACCENT},
            "hovertemplate": "[%{x}] = %{y:.4g}<extra></extra>",
        }
        if count <= 12:
            trace["text"] = [_format(v) for v in values]
            trace["textposition"] = "outside"
            trace["cliponaxis"] = False
            trace["textfont"] = {"size": FONT_SIZE - 2}
        x_title = "index"
    else:
        shown = values[:MAX_LINE_POINTS]
        if count > MAX_LINE_POINTS:
            title = f"{title} (first {MAX_LINE_POINTS} of {count})"
        trace = {
            "type": "scatter",
            "mode": "lines" if shown.size > 60 else "lines+markers",
            "x": list(range(shown.size)),
            "y": _finite_list(shown),
            "line": {"color": ACCENT, "width": 3},
            "marker": {"size": 7},
            "hovertemplate": "[%{x}] = %{y:.4g}<extra></extra>",
        }
        x_title = "index"
    layout = base_layout(title, xaxis=_axis(x_title), yaxis=_axis("value"))
    return _with_histogram([trace], values, layout)


def _format(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _matrix_figure(matrix: np.ndarray, all_values: np.ndarray, title: str) -> dict:
    rows, cols = matrix.shape
    shown = matrix[:MAX_HEATMAP_SIDE, :MAX_HEATMAP_SIDE]
    if shown.shape != matrix.shape:
        title = f"{title} (first {shown.shape[0]} × {shown.shape[1]} of {rows} × {cols})"
    trace = _heatmap_trace(shown)
    trace["colorbar"]["x"] = MAIN_WIDTH + 0.015
    trace["colorbar"]["xanchor"] = "left"
    height = max(320, min(560, 90 + 38 * shown.shape[0]))
    layout = base_layout(
        title,
        height=height,
        xaxis=_axis("column", dtick=1 if shown.shape[1] <= 20 else None, showgrid=False),
        yaxis=_axis(
            "row", autorange="reversed", dtick=1 if shown.shape[0] <= 20 else None, showgrid=False
        ),
    )
    return _with_histogram([trace], all_values, layout)


def _heatmap_trace(z: np.ndarray, x: Sequence | None = None, y: Sequence | None = None) -> dict:
    finite = z[np.isfinite(z)]
    trace: dict[str, Any] = {
        "type": "heatmap",
        "z": _finite_list(z),
        "colorbar": {"thickness": 18, "tickfont": {"size": FONT_SIZE - 2}, "len": 0.9},
        "hovertemplate": "row %{y}, column %{x}: %{z:.4g}<extra></extra>",
    }
    # Gaps outline the cells of a small matrix; on a long or wide one they would draw stripes.
    trace["xgap"] = trace["ygap"] = 1 if max(z.shape[0], z.shape[1]) <= 40 else 0
    if finite.size and finite.min() < 0 < finite.max():
        trace["colorscale"] = DIVERGING
        trace["zmid"] = 0.0
    else:
        trace["colorscale"] = SEQUENTIAL
    if z.shape[0] <= MAX_CELL_TEXT and z.shape[1] <= MAX_CELL_TEXT:
        trace["texttemplate"] = "%{z:.3g}" if z.shape[1] <= 3 else "%{z:.2f}"
        trace["textfont"] = {"size": FONT_SIZE if z.shape[1] <= 6 else FONT_SIZE - 4}
    if x is not None:
        trace["x"] = list(x)
    if y is not None:
        trace["y"] = list(y)
    return trace


def bar_figure(
    labels: Sequence[Any], values: Sequence[float], title: str, value_title: str = "value"
) -> dict:
    """Bars, one per label (horizontal when there are many or the labels are long);
    ``value_title`` names the value axis."""
    labels = [str(label) for label in labels]
    numbers = _nan_to_none([float(v) for v in values])
    horizontal = len(labels) > 8 or any(len(label) > 10 for label in labels)
    trace: dict[str, Any] = {
        "type": "bar",
        "marker": {"color": ACCENT},
        "text": [_format(v) if v is not None else "n/a" for v in numbers],
        "textposition": "auto",
        "textfont": {"size": FONT_SIZE - 2},
    }
    if horizontal:
        trace.update(
            x=numbers, y=labels, orientation="h", hovertemplate="%{y}: %{x:.4g}<extra></extra>"
        )
        height = max(300, min(900, 90 + 34 * len(labels)))
        layout = base_layout(
            title,
            height=height,
            xaxis=_axis(value_title),
            yaxis=_axis("", autorange="reversed", type="category"),
        )
    else:
        trace.update(x=labels, y=numbers, hovertemplate="%{x}: %{y:.4g}<extra></extra>")
        layout = base_layout(title, xaxis=_axis("", type="category"), yaxis=_axis(value_title))
    return {"data": [trace], "layout": layout}


def line_figure(
    x: Sequence[float],
    ys: dict[str, Sequence[float]],
    title: str,
    *,
    x_title: str = "",
    y_title: str = "",
) -> dict:
    """One line per entry of ``ys`` (its key is the legend label), over ``x``."""
    xs = _nan_to_none([float(v) for v in x])
    data = []
    for index, (name, series) in enumerate(ys.items()):
        data.append(
            {
                "type": "scatter",
                "mode": "lines" if len(xs) > 60 else "lines+markers",
                "name": str(name),
                "x": xs,
                "y": _nan_to_none([float(v) for v in series]),
                "line": {"color": PALETTE[index % len(PALETTE)], "width": 3},
                "marker": {"size": 7},
            }
        )
    layout = base_layout(
        title,
        xaxis=_axis(x_title),
        yaxis=_axis(y_title),
        showlegend=len(data) > 1,
        legend={"font": {"size": FONT_SIZE}, "orientation": "h", "y": -0.2},
    )
    return {"data": data, "layout": layout}


def heatmap_figure(
    z: Any,
    x_labels: Sequence[Any] | None = None,
    y_labels: Sequence[Any] | None = None,
    title: str = "",
    *,
    x_title: str = "",
    y_title: str = "",
) -> dict:
    """A heatmap of the 2-D ``z`` (row 0 at the top), labelled axes, values in small ones."""
    matrix = np.asarray(z, dtype=np.float64)
    if matrix.ndim != 2:
        matrix = matrix.reshape(matrix.shape[0] if matrix.ndim else 1, -1)
    x = [str(v) for v in x_labels] if x_labels is not None else None
    y = [str(v) for v in y_labels] if y_labels is not None else None
    trace = _heatmap_trace(matrix, x, y)
    categorical = {"type": "category"}
    height = max(320, min(720, 110 + 36 * matrix.shape[0]))
    layout = base_layout(
        title,
        height=height,
        xaxis=_axis(x_title, showgrid=False, **(categorical if x else {})),
        yaxis=_axis(y_title, showgrid=False, autorange="reversed", **(categorical if y else {})),
    )
    return {"data": [trace], "layout": layout}
