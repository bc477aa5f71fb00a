"""Modules: layers (diagonal entries of a layermap) and adapters (off-diagonal edges)."""

from .adapters import AbstractFullyConnected, Ferromagnetic, FrozenFullyConnected, FullyConnected
from .base import AbstractModule, Adapter, Layer
from .linear import Linear
from .output import OutputLayer
from .recurrent import AbstractRecurrent, RecurrentDiscrete, RecurrentTanh

__all__ = [
    "AbstractFullyConnected",
    "AbstractModule",
    "AbstractRecurrent",
    "Adapter",
    "Ferromagnetic",
    "FrozenFullyConnected",
    "FullyConnected",
    "Layer",
    "Linear",
    "OutputLayer",
    "RecurrentDiscrete",
    "RecurrentTanh",
]
