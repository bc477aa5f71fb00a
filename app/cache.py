"""The one bounded cache of the playground: least recently used out first, thread-safe.

Every in-memory cache of ``app/`` is a :class:`BoundedCache`, so they all follow one policy:

- at most ``max_entries`` entries;
- optionally at most ``max_bytes``, measured per value by ``cost`` (the newest entry is always
  kept, even alone over the budget, so a cache never refuses to hold what was just made);
- optionally weak keys (``weak_keys=True``): the key is an object (a model), held by a weak
  reference, so the cache never keeps a model alive; its entry goes when the model goes (an
  object that takes no weak reference is simply not kept).

Values are made outside the lock (:meth:`get_or_make`), so one slow build never blocks the
readers of other keys; when two threads make one key at once, both get the first stored.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()


class BoundedCache(Generic[K, V]):
    """A least-recently-used map bounded in entries and, with ``cost``, in bytes."""

    def __init__(
        self,
        max_entries: int,
        *,
        max_bytes: int | None = None,
        cost: Callable[[V], int] | None = None,
        weak_keys: bool = False,
    ):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        if max_bytes is not None and cost is None:
            raise ValueError("a byte budget needs a cost function")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._cost = cost
        self._weak = weak_keys
        # key (or id(key) for weak keys) -> (value, cost, weak reference or None)
        self._items: OrderedDict[Hashable, tuple[V, int, Any]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    # Reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        with self._lock:
            return self._find(key) is not None

    @property
    def nbytes(self) -> int:
        """The cost of every value held (0 without a cost function)."""
        return self._bytes

    def keys(self) -> list[Any]:
        """The keys, least recently used first (for weak keys: the live objects)."""
        with self._lock:
            if not self._weak:
                return list(self._items)
            return [ref() for _, _, ref in self._items.values() if ref() is not None]

    def values(self) -> Iterator[V]:
        with self._lock:
            return iter([value for value, _, _ in self._items.values()])

    def get(self, key: K, default: Any = None) -> V | Any:
        """The value for ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            slot = self._find(key)
            if slot is None:
                self.misses += 1
                return default
            self.hits += 1
            self._items.move_to_end(slot)
            return self._items[slot][0]

    # Writing -----------------------------------------------------------------------------
    def put(self, key: K, value: V) -> V:
        """Hold ``value`` for ``key`` (replacing any), then evict down to the bounds."""
        return self._insert(key, value, replace=True)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value for ``key``; made by ``make()`` (outside the lock) when missing. When two
        threads make the same key at once, both get the value stored first."""
        found = self.get(key, _MISSING)
        if found is not _MISSING:
            return found
        return self._insert(key, make(), replace=False)

    def _insert(self, key: K, value: V, replace: bool) -> V:
        cost = int(self._cost(value)) if self._cost is not None else 0
        try:
            slot, ref = self._slot(key)
        except TypeError:  # an object without weak references is not kept
            return value
        with self._lock:
            if self._find(key) is not None:
                if not replace:
                    self._items.move_to_end(slot)
                    return self._items[slot][0]
                self._bytes -= self._items.pop(slot)[1]
            elif slot in self._items:  # a dead weak key's entry, not yet forgotten
                self._bytes -= self._items.pop(slot)[1]
            self._items[slot] = (value, cost, ref)
            self._bytes += cost
            self._evict()
        return value

    def pop(self, key: K, default: Any = None) -> V | Any:
        with self._lock:
            slot = self._find(key)
            if slot is None:
                return default
            value, cost, _ = self._items.pop(slot)
            self._bytes -= cost
            return value

    def discard_where(self, predicate: Callable[[Any], bool]) -> int:
        """Drop every entry whose key satisfies ``predicate``; how many went."""
        with self._lock:
            doomed = [
                slot
                for slot, (_, _, ref) in self._items.items()
                if predicate(ref() if ref is not None else slot)
            ]
            for slot in doomed:
                self._bytes -= self._items.pop(slot)[1]
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    # Inside --------------------------------------------------------------------------------
    def _find(self, key: K) -> Hashable | None:
        """The slot holding ``key`` (under the lock), or None."""
        if not self._weak:
            return key if key in self._items else None
        slot = id(key)
        item = self._items.get(slot)
        if item is None or item[2]() is not key:
            return None
        return slot

    def _slot(self, key: K) -> tuple[Hashable, Any]:
        if not self._weak:
            return key, None
        slot = id(key)
        return slot, weakref.ref(key, lambda dead, slot=slot: self._forget(slot, dead))

    def _forget(self, slot: int, dead: weakref.ref) -> None:
        """A weak key died: drop its entry (unless the slot now holds a newer object)."""
        with self._lock:
            item = self._items.get(slot)
            if item is not None and item[2] is dead:
                self._bytes -= self._items.pop(slot)[1]

    def _evict(self) -> None:
        while len(self._items) > 1 and (
            len(self._items) > self.max_entries
            or (self.max_bytes is not None and self._bytes > self.max_bytes)
        ):
            _, (_, cost, _) = self._items.popitem(last=False)
            self._bytes -= cost
            self.evictions += 1
