"""The Optax optimisers of training jobs, and a job's optimiser state as it travels.

One optimiser object per name, with its hyperparameters (learning rate, weight decay) in its
state, so that compiled steps are reused whatever the learning rate. A job's state keeps the
optimiser state's arrays only (its tree holds the module's own classes, which need not pickle);
:func:`optimizer_state` puts them back in their tree, kept per structure by the worker.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from app.cache import BoundedCache
from app.training.chunks import SKELETONS_KEPT, structure_key
from app.workers import worker_state
from library.training import init_opt_state

OPTIMIZERS = ("sgd", "adam", "adamw")

_optimizers: BoundedCache[str, optax.GradientTransformation] = BoundedCache(len(OPTIMIZERS))


def optimizer(name: str) -> optax.GradientTransformation:
    """The Optax optimiser ``name`` with its hyperparameters in its state (one object per name,
    so compiled steps are reused whatever the learning rate)."""
    factory = {"sgd": optax.sgd, "adam": optax.adam, "adamw": optax.adamw}[name]
    return _optimizers.get_or_make(
        name, lambda: optax.inject_hyperparams(factory)(learning_rate=1e-3)
    )


def init_optimizer(name: str, model: Any, learning_rate: float, weight_decay: float | None):
    """``(optimiser, state)`` on the trained arrays of ``model`` at ``learning_rate``."""
    opt = optimizer(name)
    state = init_opt_state(opt, model)
    state.hyperparams["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
    if name == "adamw" and weight_decay is not None:
        state.hyperparams["weight_decay"] = jnp.asarray(weight_decay, jnp.float32)
    return opt, state


def optimizer_state(
    name: str,
    entry: Any,
    model: Any,
    learning_rate: float,
    weight_decay: float | None,
    leaves: list[np.ndarray] | None,
) -> tuple[optax.GradientTransformation, Any]:
    """``(optimiser, state)`` of a job: a new state (``leaves`` None, its start), or the one
    whose arrays are ``leaves`` (a job's state keeps only the arrays: the state's tree holds
    the module's own classes, which need not pickle). The tree is kept per structure."""
    if leaves is None:
        return init_optimizer(name, model, learning_rate, weight_decay)
    trees = worker_state().setdefault("training.optimizer_trees", BoundedCache(SKELETONS_KEPT))
    treedef = trees.get_or_make(
        (structure_key(entry), name, weight_decay is not None),
        lambda: jax.tree.structure(init_optimizer(name, model, learning_rate, weight_decay)[1]),
    )
    return optimizer(name), jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])
