"""What an edit did to the module's behaviour: the forward output and the gradient, before and
after, on one fixed input."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from app.trees import array_stats, find_node

MAX_PROBE_LEAVES = 2_000
"""Modules with more leaves are not probed (an eager grad through them takes too long)."""
PROBE_LOSS = "mean(out)"
"""The scalar whose gradient is shown: the run panel's default loss."""


def probe_input(spec: Any) -> jax.Array:
    """The fixed input: normal values (seed 0) of the kind's example shape, or ones for
    integer inputs."""
    shape = tuple(spec.example_input_shape())
    dtype = getattr(spec, "input_dtype", "float32")
    if dtype != "float32":
        return jnp.ones(shape, dtype=dtype)
    return jax.random.normal(jax.random.PRNGKey(0), shape, dtype=jnp.float32)


def probe(spec: Any, model: Any, x: jax.Array, path: str) -> dict:
    """``out = apply(model, x)`` and ``grad(mean(out))`` w.r.t. the trained arrays, with the
    gradient at ``path`` (``None`` where the leaf is not trained)."""
    from library import trainable_filter

    params, rest = eqx.partition(model, trainable_filter(model))

    def loss(p):
        return jnp.mean(spec.apply(eqx.combine(p, rest), x))

    out = spec.apply(model, x)
    grads = jax.grad(loss)(params)
    try:
        at_path = find_node(grads, path)
    except KeyError:
        at_path = None
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(grads) if eqx.is_array(leaf)]
    norm = float(np.sqrt(sum(float(jnp.sum(jnp.square(leaf))) for leaf in leaves)))
    return {
        "out": np.asarray(out),
        "grad": None if at_path is None or not eqx.is_array(at_path) else np.asarray(at_path),
        "grad_norm": norm,
    }


def before_after(spec: Any, before: Any, after: Any, path: str) -> dict | None:
    """Both probes and their differences; ``None`` for a module too big to probe."""
    if len(jax.tree_util.tree_leaves(before)) > MAX_PROBE_LEAVES:
        return None
    x = probe_input(spec)
    old, new = probe(spec, before, x, path), probe(spec, after, x, path)
    out_change = float(np.max(np.abs(new["out"].astype(np.float64) - old["out"])))
    grad_change = None
    if old["grad"] is not None and new["grad"] is not None:
        grad_change = float(np.max(np.abs(new["grad"].astype(np.float64) - old["grad"])))
    return {
        "input_shape": list(x.shape),
        "before": old,
        "after": new,
        "out_change": out_change,
        "grad_change": grad_change,
        "out_stats": (array_stats(old["out"]), array_stats(new["out"])),
    }
