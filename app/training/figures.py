"""The figures of a job's progress: loss, accuracy, the decision boundary or the fit, and the
diff of the parameters. Plotly figure dicts made with ``app.plots``'s helpers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app import plots

FIGURE_HEIGHT = 360
"""Every figure of a job's progress (loss, accuracy, boundary): the boundary and the loss fit
side by side, with the controls, on a 1280x720 screen."""


def job_figures(job: dict) -> dict:
    """The figures of a job's progress fragment: loss, accuracy, boundary or fit, diff."""
    metrics = job["metrics"]
    figures: dict[str, Any] = {}
    if job["mode"] == "gradient":
        x = metrics.get("step", [])
        if metrics.get("loss"):
            series = {"training loss (batches)": metrics["loss"]}
            if metrics.get("test_loss") and not metrics.get("test_accuracy"):
                series["test loss"] = metrics["test_loss"]
            figures["loss"] = plots.line_figure(
                x, series, "Loss (log scale)", x_title="step", y_title="loss"
            )
            figures["loss"]["layout"]["yaxis"].update(type="log", exponentformat="e")
    else:
        x = metrics.get("epoch", [])
    if metrics.get("accuracy"):
        figures["accuracy"] = plots.line_figure(
            x,
            {"training accuracy": metrics["accuracy"], "test accuracy": metrics["test_accuracy"]},
            "Accuracy" + (" per epoch" if job["mode"] == "local" else ""),
            x_title="step" if job["mode"] == "gradient" else "epoch",
            y_title="accuracy",
        )
        figures["accuracy"]["layout"]["yaxis"]["range"] = [0, 1.02]
        if job["mode"] == "local":
            figures["accuracy"]["layout"]["xaxis"].update(dtick=1, tick0=1)  # whole epochs
    for name, figure in figures.items():  # compact, to sit beside the boundary in a half panel
        layout = figure["layout"]
        rising = name == "accuracy"  # its legend goes where its curves are not
        layout["height"] = FIGURE_HEIGHT
        layout["margin"] = {"l": 64, "r": 16, "t": 56, "b": 56}
        layout["title"]["font"]["size"] = 18
        if layout.get("showlegend"):
            layout["legend"] = {
                "orientation": "v",
                "x": 1,
                "xanchor": "right",
                "y": 0 if rising else 1,
                "yanchor": "bottom" if rising else "top",
                "bgcolor": "rgba(255,255,255,0.8)",
                "font": {"size": 15},
            }
    view = job.get("view")
    if view and view.get("kind") == "boundary":
        figures["view"] = boundary_figure(view)
    elif view and view.get("kind") == "fit":
        figures["view"] = fit_figure(view)
    diff = job.get("diff")
    if diff and diff.get("leaves"):
        rows = [row for row in diff["leaves"] if row["trained"]][:40]
        figures["diff"] = plots.bar_figure(
            [row["path"] or "(root)" for row in rows],
            [row["relative"] if row["relative"] is not None else math.nan for row in rows],
            "How far each trained leaf moved: |change| / |before|",
            value_title="|change| / |before|",
        )
    return figures


MARKERS = ["circle", "x", "diamond", "triangle-up", "square"]


def boundary_figure(view: dict) -> dict:
    """The decision boundary as a heatmap, with the training and test points over it."""
    classes = view["num_classes"]
    title = "Decision boundary: P(class 1)" if classes == 2 else "Decision regions: the class"
    figure = plots.heatmap_figure(view["z"], title=title, x_title="x1", y_title="x2")
    heat = figure["data"][0]
    heat.update(
        x=view["x"],
        y=view["y"],
        zmin=0,
        zmax=1,
        colorscale=[[0, "#93c5fd"], [0.5, "#f8fafc"], [1, "#fca5a5"]],
        hovertemplate="(%{x:.2f}, %{y:.2f}): %{z:.2f}<extra></extra>",
        xgap=0,
        ygap=0,
    )
    heat.pop("texttemplate", None)
    heat.pop("zmid", None)
    heat["colorbar"]["title"] = {"text": "P(1)" if classes == 2 else "class"}
    colours = ["#1d4ed8", "#b91c1c", "#047857", "#7c3aed", "#b45309"]
    for part, hollow in (("train", False), ("test", True)):
        points = np.asarray(view[part]["x"], np.float64).reshape(-1, 2)
        labels = np.asarray(view[part]["label"])
        for c in range(classes):
            chosen = points[labels == c]
            if not len(chosen):
                continue
            figure["data"].append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": f"{part}, class {c}",
                    "x": chosen[:, 0].round(4).tolist(),
                    "y": chosen[:, 1].round(4).tolist(),
                    "marker": {
                        "size": 9 if hollow else 8,
                        "symbol": MARKERS[c % len(MARKERS)] + ("-open" if hollow else ""),
                        "color": colours[c % len(colours)],
                        "line": {
                            "width": 1 if not hollow else 2,
                            "color": "#ffffff" if not hollow else colours[c % len(colours)],
                        },
                    },
                    "hovertemplate": f"{part}, class {c}: (%{{x:.2f}}, %{{y:.2f}})<extra></extra>",
                }
            )
    layout = figure["layout"]
    layout["yaxis"].pop("autorange", None)
    layout["yaxis"].update(scaleanchor="x", scaleratio=1, type="linear", constrain="domain")
    layout["xaxis"].update(type="linear", range=[view["x"][0], view["x"][-1]], constrain="domain")
    layout["yaxis"]["range"] = [view["y"][0], view["y"][-1]]
    layout["height"] = FIGURE_HEIGHT
    layout["margin"] = {"l": 56, "r": 8, "t": 56, "b": 48}
    layout["title"]["font"]["size"] = 18
    heat["colorbar"].update(thickness=12, len=0.9)
    layout["showlegend"] = False  # the caption says which marks are which
    return figure


def fit_figure(view: dict) -> dict:
    """1-D regression: the model's curve over the data."""
    figure = plots.line_figure(
        view["x"], {"model": view["prediction"]}, "The model's fit", x_title="x", y_title="y"
    )
    for part, colour in (("train", "#6b7280"), ("test", "#b45309")):
        figure["data"].append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{part} data",
                "x": view[part]["x"],
                "y": view[part]["y"],
                "marker": {"size": 7, "color": colour},
            }
        )
    layout = figure["layout"]
    layout["showlegend"] = True
    layout["height"] = FIGURE_HEIGHT
    layout["margin"] = {"l": 56, "r": 8, "t": 56, "b": 48}
    layout["legend"] = {
        "orientation": "h",
        "x": 0,
        "y": 1.0,
        "yanchor": "bottom",
        "font": {"size": 14},
    }
    return figure
