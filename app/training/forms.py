"""The module page's train and dynamics forms as requests: the fields of a form to a
:class:`TrainRequest` or :class:`DynamicsRequest`, validated as the JSON API validates them,
with errors that name each field as the form labels it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from app.errors import PlaygroundError
from app.training.service import DynamicsRequest, TrainRequest


def _optional(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def train_request_from_form(form: Any, network: bool) -> TrainRequest:
    """The train form's fields as a :class:`TrainRequest` (validated the same way; a 422
    naming each field as the form labels it)."""
    name = form.get("dataset") or None
    dataset: dict[str, Any] | None
    if name and name.startswith("csv:"):
        dataset = {
            "csv_id": name.removeprefix("csv:"),
            "test_fraction": _optional(form.get("test_fraction")) or 0.2,
            "seed": _optional(form.get("data_seed")) or 0,
            "task": form.get("task") or "auto",
        }
    elif name:
        dataset = {
            "name": name,
            "noise": _optional(form.get("noise")),
            "num_examples": _optional(form.get("num_examples")),
            "test_fraction": _optional(form.get("test_fraction")) or 0.2,
            "seed": _optional(form.get("data_seed")) or 0,
        }
    else:
        dataset = None
    body: dict[str, Any] = {
        "dataset": dataset,
        "optimizer": form.get("optimizer") or "adam",
        "learning_rate": _optional(form.get("learning_rate")),
        "batch_size": _optional(form.get("batch_size")),
        "seed": _optional(form.get("seed")) or 0,
        "watch_seconds": _optional(form.get("watch_seconds")) or 0,
    }
    if network:
        body["epochs"] = _optional(form.get("epochs"))
    else:
        body["steps"] = _optional(form.get("steps"))
        body["loss"] = form.get("loss") or "auto"
    return _validated(TrainRequest, body)


def dynamics_request_from_form(form: Any) -> DynamicsRequest:
    """The dynamics form's fields as a :class:`DynamicsRequest` (validated the same way; a
    422 naming each field as the form labels it)."""
    source = form.get("source") or "dataset"
    body: dict[str, Any] = {
        "steps": _optional(form.get("steps")) or 20,
        "phase": form.get("phase") or "inference",
        "example": _optional(form.get("example")) or 0,
    }
    if source == "dataset":
        body["input"] = {
            "dataset": {
                "name": form.get("dataset") or "prototypes",
                "seed": _optional(form.get("data_seed")) or 0,
            },
            "batch": _optional(form.get("batch")) or 8,
        }
    else:
        spec: dict[str, Any] = {"init": form.get("init") or "normal"}
        for key in ("shape", "seed", "start", "stop", "values"):
            if _optional(form.get(key)) is not None:
                spec[key] = form.get(key)
        body["input"] = spec
    return _validated(DynamicsRequest, body)


def _validated(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """``body`` as ``model``; a 422 naming the form's fields when it does not validate."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise PlaygroundError(422, form_errors(error)) from None


FORM_LABELS = {
    "learning_rate": "Learning rate",
    "batch_size": "Batch size",
    "steps": "Steps",
    "epochs": "Epochs",
    "seed": "Seed",
    "watch_seconds": "Watch over (s)",
    "loss": "Loss",
    "optimizer": "Optimizer",
    "dataset.noise": "Noise",
    "dataset.num_examples": "Examples",
    "dataset.test_fraction": "Test fraction",
    "dataset.seed": "Data seed",
    "noise": "Noise",
    "num_examples": "Examples",
    "test_fraction": "Test fraction",
}
"""The train form's labels, so a learner reads the field as the form names it."""


def form_errors(error: ValidationError) -> str:
    """``error`` in words: each field as the form labels it, with its problem."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if not isinstance(p, int))
        label = FORM_LABELS.get(where) or FORM_LABELS.get(where.split(".")[-1])
        named = f"{label} ({where})" if label else where
        parts.append(f"{named}: {item.get('msg')}")
    return "; ".join(parts)
