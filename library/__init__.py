"""States, modules, layermaps and orchestrators as Equinox pytrees.

Everything is a pytree, updates are functional, and every component composes with
`jax.jit`, `jax.grad` and `jax.vmap`. The reference is `docs/library.md`.

- `states`: `State` and `SequentialState`, one buffer per slot (0 the input, -1 the output).
- `modules`: `AbstractModule`, `Layer`, `Adapter` and the concrete layers and adapters (a
  package: `base`, `linear`, `recurrent`, `adapters`, `output`).
- `rules`: `perceptron_rule`, the local learning rule.
- `layermaps`: `LayerMap`, the wiring as a read-only sparse matrix of modules.
- `orchestrators`: `SequentialOrchestrator` (`step`, `step_inference`, `predict`, `backward`).
- `filters`: `trainable_filter`, the arrays that are trained (`buffer_fields` are not).
- `training`: the reference protocol compiled (`train_step`, `eval_step`,
  `train_orchestrator`) and gradient training of plain Equinox models.
- `data`: seeded toy datasets (the prototype task, 2-D sets, `sine`) and `DATASETS`.

It imports nothing from the web layer (`app/`); a test walks the imports to keep it so.
"""

from . import data, training
from .filters import trainable_filter
from .layermaps import LayerMap
from .modules import (
    AbstractFullyConnected,
    AbstractModule,
    AbstractRecurrent,
    Adapter,
    Ferromagnetic,
    FrozenFullyConnected,
    FullyConnected,
    Layer,
    Linear,
    OutputLayer,
    RecurrentDiscrete,
    RecurrentTanh,
)
from .orchestrators import SequentialOrchestrator
from .rules import perceptron_rule
from .states import SequentialState, State

__all__ = [
    "AbstractFullyConnected",
    "AbstractModule",
    "AbstractRecurrent",
    "Adapter",
    "Ferromagnetic",
    "FrozenFullyConnected",
    "FullyConnected",
    "Layer",
    "LayerMap",
    "Linear",
    "OutputLayer",
    "RecurrentDiscrete",
    "RecurrentTanh",
    "SequentialOrchestrator",
    "SequentialState",
    "State",
    "data",
    "perceptron_rule",
    "trainable_filter",
    "training",
]
