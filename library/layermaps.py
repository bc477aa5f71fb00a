"""LayerMaps: the wiring of a network as a read-only, sparse matrix of modules."""

import dataclasses
import operator
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Literal

import equinox as eqx

from .modules.base import AbstractModule

Subset = Literal["all", "forward", "backward"]
_SUBSETS = ("all", "forward", "backward")


def _as_key(value: object, what: str) -> int:
    if not isinstance(value, bool):
        try:
            key = operator.index(value)
        except TypeError:
            pass
        else:
            if key >= 0:
                return key
    raise TypeError(f"LayerMap {what} must be non-negative ints; got {value!r}")


class ReadOnlyError(TypeError, AttributeError):
    """Raised on any attempt to change a LayerMap: a `TypeError` (and, for
    attributes, an `AttributeError`, as for every frozen Equinox module)."""


class LayerMap(eqx.Module):
    """Square, sparse "matrix" of modules: entry `(i, j)` sends slot `j` to slot `i`.

    Rows receive, columns send. The diagonal `(i, i)` is the layer of slot `i`;
    off-diagonal entries are adapters; `j < i` is a forward edge, `j > i` a backward
    one. Build it with [`LayerMap.from_dict`][].

    The keys are static (part of the treedef); the modules are pytree children. The
    map is read-only: item assignment or deletion raises `TypeError`.
    """

    _layers: dict[int, dict[int, AbstractModule]]

    def __init__(
        self,
        mapping: Mapping[int, Mapping[int, AbstractModule]],
        require_diagonal: bool = True,
    ):
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"LayerMap expects a mapping row -> (column -> module); got {type(mapping)}"
            )
        if not mapping:
            raise ValueError("LayerMap needs at least one row; got an empty mapping")
        layers: dict[int, dict[int, AbstractModule]] = {}
        for raw_row, row in mapping.items():
            i = _as_key(raw_row, "rows")
            if i in layers:
                raise ValueError(f"row {i} appears twice")
            if not isinstance(row, Mapping):
                raise TypeError(f"row {i} must be a mapping column -> module; got {type(row)}")
            if not row:
                raise ValueError(f"row {i} has no entries")
            cols: dict[int, AbstractModule] = {}
            for raw_col, module in row.items():
                j = _as_key(raw_col, "columns")
                if j in cols:
                    raise ValueError(f"entry ({i}, {j}) appears twice")
                if not isinstance(module, AbstractModule):
                    raise TypeError(
                        f"entry ({i}, {j}) must be a library module (AbstractModule); "
                        f"got {type(module).__name__}"
                    )
                cols[j] = module
            layers[i] = dict(sorted(cols.items()))
        layers = dict(sorted(layers.items()))
        if require_diagonal:
            missing = [i for i, row in layers.items() if i not in row]
            if missing:
                raise ValueError(
                    f"every row needs its diagonal entry (i, i); missing for rows {missing}"
                )
        self._layers = layers

    @classmethod
    def from_dict(
        cls,
        mapping: Mapping[int, Mapping[int, AbstractModule]],
        require_diagonal: bool = True,
    ) -> "LayerMap":
        """Build a LayerMap from a dict of dicts `{row: {column: module}}`.

        **Arguments:**

        - `mapping`: rows and columns are non-negative ints; they are sorted.
        - `require_diagonal`: if `True`, every row must hold its entry `(i, i)`.

        **Returns:**

        The LayerMap.

        **Raises:**

        `ValueError` for a missing diagonal (when required) or an empty map or row;
        `TypeError` for keys that are not non-negative ints or values that are not
        library modules.
        """
        return cls(mapping, require_diagonal=require_diagonal)

    # Read access --------------------------------------------------------------

    def __getitem__(self, key: int | tuple[int, int]):
        """`lm[i]`: read-only mapping of row `i`; `lm[i, j]`: the module at `(i, j)`."""
        if isinstance(key, tuple):
            if len(key) != 2:
                raise TypeError(f"LayerMap keys are i or (i, j); got {key!r}")
            i, j = key
            row = self._row(i)
            if j not in row:
                raise KeyError(f"no entry ({i}, {j}); row {i} has columns {tuple(row)}")
            return row[j]
        return MappingProxyType(self._row(key))

    def _row(self, i: int) -> dict[int, AbstractModule]:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"LayerMap keys are ints; got {i!r}")
        try:
            return self._layers[i]
        except KeyError:
            raise KeyError(f"no row {i}; rows are {self.rows()}") from None

    def __setitem__(self, key, value):
        raise ReadOnlyError(f"LayerMap is read-only; cannot assign to {key!r}")

    def __delitem__(self, key):
        raise ReadOnlyError(f"LayerMap is read-only; cannot delete {key!r}")

    def __setattr__(self, name, value):
        try:
            super().__setattr__(name, value)
        except dataclasses.FrozenInstanceError:
            raise ReadOnlyError(f"LayerMap is read-only; cannot set {name!r}") from None

    def __delattr__(self, name):
        raise ReadOnlyError(f"LayerMap is read-only; cannot delete {name!r}")

    def __contains__(self, key: object) -> bool:
        """`(i, j) in lm` tests an entry; `i in lm` tests a row."""
        if isinstance(key, tuple) and len(key) == 2:
            i, j = key
            return i in self._layers and j in self._layers[i]
        return key in self._layers

    def rows(self) -> tuple[int, ...]:
        """Row indices, sorted."""
        return tuple(self._layers)

    def cols_of(self, i: int) -> tuple[int, ...]:
        """Column indices of row `i`, sorted."""
        return tuple(self._row(i))

    def neighbors(self, i: int) -> Mapping[int, AbstractModule]:
        """Read-only mapping column -> module of every entry of row `i` (diagonal included)."""
        return MappingProxyType(self._row(i))

    def edge_items(self) -> Iterator[tuple[tuple[int, int], AbstractModule]]:
        """Iterate over `((i, j), module)` for every entry, row by row, columns sorted."""
        for i, row in self._layers.items():
            for j, module in row.items():
                yield (i, j), module

    def row_items(
        self, skip_last: bool = False, subset: Subset = "all"
    ) -> Iterator[tuple[int, Mapping[int, AbstractModule]]]:
        """Iterate over `(i, row)` with `row` a read-only mapping column -> module.

        **Arguments:**

        - `skip_last`: leave out the last row (the output).
        - `subset`: `"all"`; `"forward"` keeps `j <= i`; `"backward"` keeps `j >= i`.

        **Raises:**

        `ValueError` for an unknown `subset`.
        """
        if subset not in _SUBSETS:
            raise ValueError(f"subset must be one of {_SUBSETS}; got {subset!r}")
        rows = self.rows()
        if skip_last:
            rows = rows[:-1]
        for i in rows:
            row = self._layers[i]
            if subset == "forward":
                row = {j: m for j, m in row.items() if j <= i}
            elif subset == "backward":
                row = {j: m for j, m in row.items() if j >= i}
            yield i, MappingProxyType(row)

    def to_dict(self) -> dict[int, dict[int, AbstractModule]]:
        """Return a plain, mutable copy `{row: {column: module}}`."""
        return {i: dict(row) for i, row in self._layers.items()}
