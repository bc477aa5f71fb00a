"""What a workspace (or a room) sees about compiling: "compiled now", "reused: you compiled it
before", "reused: compiled earlier on this server".

The compiled functions themselves are shared by everyone (:mod:`app.runs.cache`): one
executable serves every module of the same structure. What is *scoped* is the story told about
them, kept in the web process under each run's :class:`~app.runs.keys.KeyRecord`. A scope is
a string: ``workspace:<id>``, or ``room:<id>`` for everyone following a room (:func:`scope_of`).
For each scope, :class:`CompileScopes` remembers which keys it compiled itself. A run's
``compile_scope`` is

- ``"now"``: this call compiled it;
- ``"workspace"``: reused; this scope compiled it before;
- ``"server"``: reused; it was compiled for someone else.

Reset (a presenter before the jit demo, or anyone for their own workspace) forgets what the
scope compiled, and from then on the scope's first run of each key compiles it again for real
(the worker replaces its entry compiled before the reset time,
:meth:`CompileScopes.reset_time`), so "the first click compiles, the second does not" holds in
front of the room even when a learner clicked first.

Bounded: at most ``MAX_SCOPES`` scopes (least recently used dropped) and ``MAX_KEYS_PER_SCOPE``
keys in each.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

from app.cache import BoundedCache

MAX_SCOPES = 4096
MAX_KEYS_PER_SCOPE = 256
ScopeWord = Literal["now", "workspace", "server"]


def scope_of(workspace: str, room: str | None = None) -> str:
    """The compile scope of a request: the room the workspace follows, else the workspace."""
    return f"room:{room}" if room else f"workspace:{workspace}"


class _Scope:
    __slots__ = ("compiled", "reset_at")

    def __init__(self, max_keys: int) -> None:
        self.compiled: BoundedCache[object, float] = BoundedCache(max_keys)
        self.reset_at: float | None = None


class CompileScopes:
    """Which keys each scope compiled itself, and when it last reset its view."""

    def __init__(self, max_scopes: int = MAX_SCOPES, max_keys: int = MAX_KEYS_PER_SCOPE):
        self.max_scopes = max_scopes
        self.max_keys = max_keys
        self._scopes: BoundedCache[str, _Scope] = BoundedCache(max_scopes)
        self._lock = threading.Lock()

    def _get(self, scope: str) -> _Scope:
        return self._scopes.get_or_make(scope, lambda: _Scope(self.max_keys))

    def reset_time(self, scope: str | None) -> float | None:
        """When ``scope`` last reset its view (None: never). A run of the scope sends it to
        the worker, which compiles again an entry compiled before it (``RunEngine.run``'s
        ``reset_at``); an entry this scope compiled since is newer and is reused."""
        if scope is None:
            return None
        with self._lock:
            found = self._scopes.get(scope)
            return None if found is None else found.reset_at

    def record(self, scope: str | None, key: object, compiled: bool) -> ScopeWord:
        """The word for this run, and remember a compile."""
        if compiled:
            if scope is not None:
                with self._lock:
                    self._get(scope).compiled.put(key, time.time())
            return "now"
        if scope is None:
            return "server"
        with self._lock:
            found = self._scopes.get(scope)
            return "workspace" if found is not None and key in found.compiled else "server"

    def reset(self, scope: str) -> None:
        """Forget what ``scope`` compiled; its next run of each key compiles again."""
        with self._lock:
            entry = self._get(scope)
            entry.compiled.clear()
            entry.reset_at = time.time()
