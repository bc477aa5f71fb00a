"""Errors that teach: what went wrong in a run, in plain words, as a 4xx.

The engine raises :class:`RunError` where it can tell the problem itself (a gradient of an
output that is not a scalar, a vmap over an axis the input lacks, an input that does not fit
the module) and :func:`explain` turns whatever else JAX raised while tracing into one.
"""

from __future__ import annotations

import re

from app.errors import PlaygroundError

MAX_JAX_MESSAGE = 600


class RunError(PlaygroundError):
    """A run that cannot be done, explained (422 unless told otherwise)."""

    def __init__(
        self,
        message: str,
        field: str | None = None,
        status_code: int = 422,
        limit: str | None = None,
    ):
        super().__init__(status_code, message, field)
        self.limit = limit
        """The setting a worker found the run over after tracing or compiling, if that is why."""


def jax_message(error: BaseException) -> str:
    """The first useful lines of an exception's message, without JAX's traceback notes."""
    text = str(error).strip()
    text = text.split("\n--------------------")[0]
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    kept: list[str] = []
    for line in lines:
        if line.startswith(("For simplicity, JAX has removed", "The stack trace below")):
            break
        kept.append(line)
        if sum(len(k) for k in kept) > MAX_JAX_MESSAGE:
            break
    message = " ".join(kept) or type(error).__name__
    if len(message) > MAX_JAX_MESSAGE:
        message = message[: MAX_JAX_MESSAGE - 1] + "…"
    return message


_KNOWN = [
    (
        re.compile(r"grad requires real- or complex-valued inputs .* but got (\w+)", re.S),
        "{transform} can only differentiate with respect to float arrays, and the input is "
        "{0}: differentiate with respect to params instead, or give a float32 input",
    ),
    (
        re.compile(r"Gradient only defined for scalar-output functions\. Output had shape: (.*)"),
        "grad needs a function that returns a scalar; this one returns shape {0}. Use the "
        "loss, or reduce the output with mean()",
    ),
    (
        re.compile(
            r"vmap was requested to map its argument along axis (-?\d+).*shape is (\(.*?\))"
        ),
        "vmap cannot map over axis {0} of an array of shape {1}: it has no such axis",
    ),
    (
        re.compile(r"(dot_general requires contracting dimensions to have the same shape.*)"),
        "the shapes do not fit: {0}",
    ),
    (
        re.compile(r"(Incompatible shapes for broadcasting.*)"),
        "the shapes do not fit: {0}",
    ),
]


def explain(error: BaseException, transform_names: str = "grad") -> RunError:
    """A RunError for an exception raised while tracing a run."""
    message = jax_message(error)
    for pattern, template in _KNOWN:
        found = pattern.search(message)
        if found:
            text = template.format(*found.groups(), transform=transform_names)
            return RunError(f"{text[0].upper()}{text[1:]}. (JAX: {message})")
    return RunError(f"The function could not be traced: {message}")
