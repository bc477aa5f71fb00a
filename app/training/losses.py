"""Losses, predictions and accuracy for gradient training, chosen by the task or by the user.

- ``logistic``: one output, two classes: sigmoid binary cross-entropy of the logit;
- ``softmax_cross_entropy``: one output per class, integer labels;
- ``mse``: mean squared error, for regression (or against 0/1 or one-hot targets).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import optax

from app.errors import PlaygroundError

LossName = Literal["auto", "logistic", "softmax_cross_entropy", "mse"]
LOSS_TITLES = {
    "auto": "chosen by the task",
    "logistic": "logistic (sigmoid cross-entropy)",
    "softmax_cross_entropy": "softmax cross-entropy",
    "mse": "mean squared error",
}


def choose_loss(
    requested: str, task: str, outputs: int, targets: int, dataset: str, output_shape: tuple
) -> str:
    """The loss for a module with ``outputs`` outputs on a dataset; 422 when they do not fit.

    ``targets`` is the number of classes (classification) or of target columns (regression).
    """
    shape = f"outputs of shape {output_shape}"
    if task == "regression":
        if requested not in ("auto", "mse"):
            raise PlaygroundError(
                422,
                f"the loss {requested!r} needs class labels, but {dataset} is a regression set; "
                "use 'mse' (or 'auto').",
                "loss",
            )
        if outputs != targets:
            raise PlaygroundError(
                422,
                f"the module gives {shape} ({outputs} values per example), but {dataset} has "
                f"targets of shape ({targets},): build the module with {targets} output(s).",
                "dataset",
            )
        return "mse"
    classes = targets
    fits_logistic = outputs == 1 and classes == 2
    fits_softmax = outputs == classes and classes >= 2
    if requested == "auto":
        if fits_logistic:
            return "logistic"
        if fits_softmax:
            return "softmax_cross_entropy"
    elif requested == "logistic" and fits_logistic:
        return "logistic"
    elif requested == "softmax_cross_entropy" and fits_softmax:
        return "softmax_cross_entropy"
    elif requested == "mse" and (fits_logistic or fits_softmax):
        return "mse"
    if requested == "logistic":
        need = "1 output and 2 classes"
    elif requested == "softmax_cross_entropy":
        need = f"one output per class ({classes})"
    else:
        need = f"1 output (2 classes only) or {classes} outputs (one per class)"
    raise PlaygroundError(
        422,
        f"the module gives {shape} ({outputs} values per example), but {dataset} has "
        f"{classes} classes: the loss {LOSS_TITLES[requested]!r} needs {need}.",
        "dataset",
    )


def loss_value(loss: str, out: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
    """Mean loss of the outputs ``out`` (N, k) against labels or targets ``y``."""
    if loss == "logistic":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(out[:, 0], y.astype(out.dtype)))
    if loss == "softmax_cross_entropy":
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))
    # mse
    if num_classes:
        target = (
            y.astype(out.dtype)[:, None]
            if out.shape[1] == 1
            else jax.nn.one_hot(y, num_classes, dtype=out.dtype)
        )
        return jnp.mean((out - target) ** 2)
    return jnp.mean((out - y) ** 2)


def predicted_class(loss: str, out: jax.Array) -> jax.Array:
    """The class each output row predicts."""
    if out.shape[1] == 1:
        threshold = 0.0 if loss == "logistic" else 0.5
        return (out[:, 0] > threshold).astype(jnp.int32)
    return jnp.argmax(out, axis=1).astype(jnp.int32)


def class_score(loss: str, out: jax.Array, num_classes: int) -> jax.Array:
    """A number in [0, 1] per row for the boundary plot: P(class 1) for two classes, else the
    predicted class divided by ``num_classes - 1``."""
    if num_classes == 2:
        if out.shape[1] == 1:
            return jax.nn.sigmoid(out[:, 0]) if loss == "logistic" else jnp.clip(out[:, 0], 0, 1)
        if loss == "softmax_cross_entropy":
            return jax.nn.softmax(out, axis=1)[:, 1]
        return jnp.clip(out[:, 1] - out[:, 0] + 0.5, 0, 1)
    return predicted_class(loss, out) / max(num_classes - 1, 1)
