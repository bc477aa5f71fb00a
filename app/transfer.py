"""Pytrees between processes: pickling that keeps JAX's functions by name.

A module or a result sent to a worker process (or back) is pickled. Plain pickling fails on
the functions an Equinox module holds as static fields: ``jax.nn.relu`` is a ``custom_jvp``
object whose wrapped function is not importable under its own name. :func:`dumps` sends every
such function as a reference to the public name it has (``jax.nn.relu``, ``jnp.tanh``, the
catalog's activations, the expression language's functions), and :func:`loads` puts back the
very same object, so a module rebuilt in another process hashes like the original (its compiled
runs are found under the same key). A class made at run time (a custom module's,
``app.catalog.custom``) travels as the recipe in its ``__transfer__`` attribute, ``(function,
arguments)`` that make it again. JAX arrays travel as NumPy arrays; :func:`pack` keeps the
large ones beside the pickle, so that the worker pool's own pickling copies them once.
"""

from __future__ import annotations

import importlib
import io
import pickle
import threading
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

NAMED_MODULES = (
    "jax.nn",
    "jax.numpy",
    "jax.lax",
    "jax.scipy.special",
    "equinox",
    "equinox.nn",
    "equinox.nn._mlp",
    "app.catalog.base",
)
"""The modules whose functions are sent by name (``equinox.nn._mlp``: the MLP's default final
activation, ``lambda x: x``, is its module-level ``_identity``)."""

_names: dict[int, tuple[str, str]] = {}
_names_lock = threading.Lock()


def _table() -> dict[int, tuple[str, str]]:
    with _names_lock:
        if not _names:
            for module_name in NAMED_MODULES:
                module = importlib.import_module(module_name)
                for name in dir(module):
                    if name.startswith("__"):
                        continue
                    value = getattr(module, name, None)
                    if callable(value) and not isinstance(value, type):
                        _names.setdefault(id(value), (module_name, name))
    return _names


def _named(module_name: str, name: str) -> Any:
    return getattr(importlib.import_module(module_name), name)


def _array(value: np.ndarray) -> jax.Array:
    return jax.numpy.asarray(value)


OUT_OF_BAND_BYTES = 65_536
"""NumPy arrays at least this large travel beside the pickle in :func:`pack`, not inside it."""


class _Pickler(pickle.Pickler):
    def __init__(
        self,
        file: io.BytesIO,
        table: dict[int, tuple[str, str]],
        arrays: list[np.ndarray] | None = None,
    ):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._table = table
        self._arrays = arrays

    def persistent_id(self, obj: Any) -> int | None:
        if self._arrays is not None and type(obj) is np.ndarray and obj.nbytes >= OUT_OF_BAND_BYTES:
            self._arrays.append(obj)
            return len(self._arrays) - 1
        return None

    def reducer_override(self, obj: Any) -> Any:
        found = self._table.get(id(obj))
        if found is not None:
            return _named, found
        if isinstance(obj, type) and "__transfer__" in vars(obj):
            return obj.__transfer__
        if isinstance(obj, jax.Array):
            return _array, (np.asarray(obj),)
        return NotImplemented


def dumps(value: Any) -> bytes:
    """``value`` pickled, JAX's functions by name and JAX arrays as NumPy arrays."""
    buffer = io.BytesIO()
    _Pickler(buffer, _table()).dump(value)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    """What :func:`dumps` pickled."""
    return pickle.loads(data)


@dataclass(frozen=True)
class Packed:
    """A value as :func:`pack` made it: the pickle of everything but its large NumPy arrays,
    and those arrays, which the worker pool's own pickling copies once each (a 4 x 512 MLP's
    gradient, 3 MB, costs half the time this way as pickled twice)."""

    data: bytes
    arrays: tuple[np.ndarray, ...]
    """The large arrays: as they are, or (``plain``) their bytes, pickle's out-of-band buffers."""
    plain: bool = False
    """Plain pickling (protocol 5) rather than :func:`dumps`'s."""


def pack(value: Any) -> Packed:
    """``value`` (NumPy arrays, no JAX array) for another process, its large NumPy arrays kept
    apart: pickled plainly, the arrays as protocol 5's out-of-band buffers (pickle's own C
    code, four times as fast as :func:`dumps`'s Python hooks on a run's outcome); by
    :func:`dumps`'s rules when plain pickling cannot (a function JAX holds, a class made at run
    time)."""
    buffers: list[np.ndarray] = []

    def keep_apart(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if raw.nbytes < OUT_OF_BAND_BYTES:
            return True  # inside the pickle
        buffers.append(np.frombuffer(raw, dtype=np.uint8))
        return False

    try:
        data = pickle.dumps(value, protocol=5, buffer_callback=keep_apart)
        return Packed(data, tuple(buffers), plain=True)
    except Exception:  # noqa: BLE001 - what plain pickling cannot do, dumps's rules can
        buffer, arrays = io.BytesIO(), []
        _Pickler(buffer, _table(), arrays).dump(value)
        return Packed(buffer.getvalue(), tuple(arrays))


def packed_bytes(packed: Packed) -> int:
    """The bytes ``packed`` holds: its pickle and its arrays."""
    return len(packed.data) + sum(array.nbytes for array in packed.arrays)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, arrays: tuple[np.ndarray, ...]):
        super().__init__(file)
        self._arrays = arrays

    def persistent_load(self, pid: Any) -> np.ndarray:
        return self._arrays[pid]


def unpack(packed: Packed) -> Any:
    """What :func:`pack` packed."""
    if packed.plain:
        return pickle.loads(packed.data, buffers=packed.arrays)
    return _Unpickler(io.BytesIO(packed.data), packed.arrays).load()
