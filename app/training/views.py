"""What a running job shows besides its metrics: the decision boundary of a 2-D classifier (a
grid of scores with the data over it) or the fit of a 1-D regression. Plain numbers, NaN and
infinity as ``None``, so they travel as JSON and are stored with the job."""

from __future__ import annotations

import numpy as np

from app.training.datasets import Data

GRID = 48
"""The decision boundary is computed on a GRID x GRID grid."""
FIT_POINTS = 200
MAX_SHOWN_POINTS = 400
"""Training points drawn over the boundary (a quarter as many test points)."""


def finite_list(array: np.ndarray, decimals: int = 4) -> list:
    """Nested lists of ``array`` rounded to ``decimals``, non-finite values as ``None``."""
    values = np.round(np.asarray(array, np.float64), decimals)
    return np.where(np.isfinite(values), values, None).tolist()


def sample_points(x: np.ndarray, y: np.ndarray, limit: int = MAX_SHOWN_POINTS):
    """At most ``limit`` of the points, evenly spread over the set."""
    if len(x) <= limit:
        return x, y
    index = np.linspace(0, len(x) - 1, limit).astype(int)
    return x[index], y[index]


def boundary_grid(data: Data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xs, ys, points)``: a GRID x GRID grid covering the data (with a margin), its points
    row by row as float32 ``(GRID * GRID, 2)``."""
    points = np.concatenate([data.x_train, data.x_test])
    low, high = points.min(axis=0), points.max(axis=0)
    pad = np.maximum((high - low) * 0.1, 0.1)
    low, high = low - pad, high + pad
    xs, ys = np.linspace(low[0], high[0], GRID), np.linspace(low[1], high[1], GRID)
    mesh = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)
    return xs, ys, mesh


def fit_grid(data: Data) -> np.ndarray:
    xs = np.concatenate([data.x_train, data.x_test])[:, 0]
    return np.linspace(xs.min(), xs.max(), FIT_POINTS).astype(np.float32)


def boundary_view(data: Data, xs: np.ndarray, ys: np.ndarray, scores: np.ndarray) -> dict:
    """The boundary plot's numbers: ``scores`` in [0, 1] on the grid, and the points."""
    px, py = sample_points(data.x_train, data.y_train)
    tx, ty = sample_points(data.x_test, data.y_test, MAX_SHOWN_POINTS // 4)
    return {
        "kind": "boundary",
        "x": finite_list(xs),
        "y": finite_list(ys),
        "z": finite_list(np.asarray(scores).reshape(len(ys), len(xs))),
        "num_classes": data.num_classes,
        "train": {"x": finite_list(px), "label": py.tolist()},
        "test": {"x": finite_list(tx), "label": ty.tolist()},
    }


def fit_view(data: Data, xs: np.ndarray, prediction: np.ndarray) -> dict:
    """The fit plot's numbers: the model's curve over ``xs``, and the points."""
    px, py = sample_points(data.x_train, data.y_train)
    tx, ty = sample_points(data.x_test, data.y_test, MAX_SHOWN_POINTS // 4)
    return {
        "kind": "fit",
        "x": finite_list(xs),
        "prediction": finite_list(prediction, 5),
        "train": {"x": finite_list(px[:, 0]), "y": finite_list(py[:, 0])},
        "test": {"x": finite_list(tx[:, 0]), "y": finite_list(ty[:, 0])},
    }
