"""Modules: layers (diagonal entries of a layermap) and adapters (off-diagonal edges).

- `base`: the interface, `AbstractModule` (`__call__`, `backward`), `Layer` (`activation`,
  `reduce`) and `Adapter`, plus the argument checks the modules share.
- `linear`: `Linear`, the seed's own example.
- `recurrent`: `AbstractRecurrent`, `RecurrentDiscrete` and `RecurrentTanh` (a slot coupled to
  itself through `J`).
- `adapters`: `Ferromagnetic` and the dense `FullyConnected` / `FrozenFullyConnected`.
- `output`: `OutputLayer`, the sink of the last slot.
"""

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
