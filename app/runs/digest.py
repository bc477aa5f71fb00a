"""What an answer shows of a run's result without its values or figure: a few words, not
the arrays.

:func:`digest` runs where the result is (the worker), so an answer that leaves out
``values`` and ``plot`` (``?include=none``) never copies a 4 MB gradient between processes
only to say it holds no NaN; one that leaves out ``warnings`` too never reads it. The helpers
that read a result's arrays live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from jax.tree_util import keystr, tree_flatten_with_path, tree_leaves

from app.text import array_summary


@dataclass(frozen=True)
class ResultDigest:
    """A result as :func:`digest` leaves it."""

    single: bool
    """Whether the result is one array (else a tree of them)."""
    arrays: int
    """How many arrays the result holds."""
    warnings: tuple[str, ...] | None
    """:func:`nonfinite_warnings` of its arrays; None when not checked."""


@dataclass(frozen=True)
class ResultLeaves:
    """A result as :func:`flat` leaves it: its arrays on the host with their keystr paths,
    without the tree around them (an answer shows leaves by path; rebuilding a module-shaped
    gradient in the web process, a module of the user's class, costs more than the answer)."""

    single: bool
    """Whether the result is one array (its one leaf's path is ``""``)."""
    leaves: tuple[tuple[str, np.ndarray], ...]


def flat(result: Any) -> ResultLeaves:
    """``result``'s :class:`ResultLeaves`."""
    return ResultLeaves(is_single_array(result), tuple(host_leaves(result)))


def digest(result: Any, check: bool = True) -> ResultDigest:
    """``result``'s :class:`ResultDigest`; ``check``: look for NaN and infinity (it reads
    every value: a few tenths of a millisecond for a 4 MB gradient)."""
    single = is_single_array(result)
    if not check:
        arrays = 1 if single else sum(is_single_array(leaf) for leaf in tree_leaves(result))
        return ResultDigest(single, arrays, None)
    leaves = host_leaves(result)
    return ResultDigest(single, len(leaves), tuple(nonfinite_warnings(leaves)))


def is_single_array(value: Any) -> bool:
    if isinstance(value, ResultLeaves):
        return value.single
    return hasattr(value, "shape") and hasattr(value, "dtype")


def host_leaves(result: Any) -> list[tuple[str, np.ndarray]]:
    """Every array of ``result`` on the host, with its keystr path (``""`` for an array)."""
    if isinstance(result, ResultLeaves):
        return list(result.leaves)
    if is_single_array(result):
        return [("", np.asarray(result))]
    flat, _ = tree_flatten_with_path(result)
    return [(keystr(path), np.asarray(leaf)) for path, leaf in flat if is_single_array(leaf)]


def leaf_norms(leaves: list[tuple[str, np.ndarray]]) -> list[float]:
    """The 2-norm of every leaf (NaN or infinite when the leaf holds such values)."""
    norms = []
    for _, array in leaves:
        if array.size == 0:
            norms.append(0.0)
        elif array.dtype.kind in "fc":
            norms.append(float(np.linalg.norm(array.reshape(-1))))
        else:
            norms.append(float(np.linalg.norm(array.reshape(-1).astype(np.float64))))
    return norms


def nonfinite_warnings(
    leaves: list[tuple[str, np.ndarray]], norms: list[float] | None = None
) -> list[str]:
    """A warning for every leaf that holds NaN or infinity (found through its norm)."""
    norms = leaf_norms(leaves) if norms is None else norms
    warnings = []
    for (path, array), norm in zip(leaves, norms, strict=True):
        if array.dtype.kind not in "fc" or array.size == 0 or math.isfinite(norm):
            continue
        nan = int(np.isnan(array).sum())
        inf = int(np.isinf(array).sum())
        if nan == 0 and inf == 0:
            continue  # a finite array whose norm overflowed
        where = f"{path}" if path else "The result"
        parts = []
        if nan:
            parts.append(f"{nan} NaN")
        if inf:
            parts.append(f"{inf} infinite")
        warnings.append(
            f"{where} ({array_summary(array)}) has {' and '.join(parts)} of {array.size} "
            "values: a log or sqrt of a negative number, a division by zero or an overflow "
            "somewhere in the function."
        )
    return warnings
