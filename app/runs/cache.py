"""Compiled runs and their cache: a bounded LRU where each key compiles once."""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from app.cache import BoundedCache
from app.runs.keys import RunKey

RUN_TIMES_KEPT = 7
"""Recent call times kept per executable; run_ms is their median."""


@dataclass
class CompiledInfo:
    """What the answers show of a compiled run (``app.runs.results``), without its executable:
    it pickles, so a worker sends it to the web process with each outcome."""

    trace_ms: float
    compile_ms: float
    jaxpr: str
    jaxpr_truncated: bool
    hlo: str
    hlo_truncated: bool
    cost: dict | None
    memory: dict[str, int] | None = None
    """The compiled program's memory by XLA's analysis (temporaries, result, arguments)."""
    size_bytes: int = 0
    """What this entry holds in memory, estimated: its cost in the cache's byte budget."""
    compiled_at: float = field(default_factory=time.time)


@dataclass(kw_only=True)
class Compiled(CompiledInfo):
    """One compiled run, shared by every request with its key."""

    key: RunKey
    executable: Any
    out_info: Any = None
    run_times: deque = field(default_factory=lambda: deque(maxlen=RUN_TIMES_KEPT))
    lock: threading.Lock = field(default_factory=threading.Lock)
    memo: dict = field(default_factory=dict)
    """What answers derive from the key alone (the output's tree node), made once."""
    eager_times: deque = field(default_factory=lambda: deque(maxlen=RUN_TIMES_KEPT))
    """Recent per-call times of the same pipeline run op by op, without jit (eager)."""

    def remember(self, name: str, make: Callable[[], Any]) -> Any:
        found = self.memo.get(name)
        if found is None:
            found = self.memo[name] = make()
        return found

    def info(self) -> CompiledInfo:
        """What the answers show of this entry (made once)."""
        return self.remember(
            "info",
            lambda: CompiledInfo(
                **{part.name: getattr(self, part.name) for part in fields(CompiledInfo)}
            ),
        )

    def record(self, seconds: float) -> None:
        with self.lock:
            self.run_times.append(seconds)

    def run_ms(self) -> float:
        with self.lock:
            times = list(self.run_times)
        return statistics.median(times) * 1e3 if times else 0.0

    def record_eager(self, seconds: float) -> None:
        with self.lock:
            self.eager_times.append(seconds)

    def eager_ms(self) -> float | None:
        with self.lock:
            times = list(self.eager_times)
        return statistics.median(times) * 1e3 if times else None


class CompileCache:
    """A bounded LRU of compiled runs (``app.cache``); a per-key lock so that a key compiles
    once.

    Bounded in entries (``size``) and in bytes (``max_bytes``, each entry costing its
    ``size_bytes``): the least recently used go first; the newest entry always stays."""

    def __init__(self, size: int, max_bytes: int | None = None):
        self.size = max(1, size)
        self.max_bytes = max_bytes
        self._entries: BoundedCache[RunKey, Compiled] = BoundedCache(
            self.size, max_bytes=max_bytes, cost=_size_bytes
        )
        self._locks: dict[RunKey, threading.Lock] = {}
        self._lock = threading.Lock()
        self.compiles = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The bytes the held entries cost."""
        return self._entries.nbytes

    @property
    def hits(self) -> int:
        return self._entries.hits

    def get(self, key: RunKey) -> Compiled | None:
        return self._entries.get(key)

    def get_or_compile(
        self,
        key: RunKey,
        compile_fn: Callable[[], Compiled],
        stale: Callable[[Compiled], bool] | None = None,
    ) -> tuple[Compiled, bool]:
        """The entry of ``key`` and whether this call compiled it. ``stale(entry)``: compile
        again even though an entry exists (a scope that reset its view, see app.runs.scopes)."""
        entry = self.get(key)
        if entry is not None and not (stale and stale(entry)):
            return entry, False
        with self._lock:
            key_lock = self._locks.setdefault(key, threading.Lock())
        with key_lock:
            entry = self.get(key)
            if entry is not None and not (stale and stale(entry)):
                return entry, False
            try:
                entry = compile_fn()
            finally:
                with self._lock:
                    self._locks.pop(key, None)
            self._entries.put(key, entry)  # replaces a stale entry compiled again
            with self._lock:
                self.compiles += 1
        return entry, True


def _size_bytes(entry: Compiled) -> int:
    return entry.size_bytes
