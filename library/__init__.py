"""States, modules, layermaps and orchestrators as Equinox pytrees.

Everything is a pytree, updates are functional, and every component composes with
`jax.jit`, `jax.grad` and `jax.vmap`.
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
