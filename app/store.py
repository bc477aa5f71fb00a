"""Persistence of modules and shared snapshots, and the in-memory cache of built modules.

A module is a pure function of its catalog spec and seed, so any process can rebuild it; only
parameters that differ from the spec (after training, say) are stored, serialised with
``eqx.tree_serialise_leaves``.
"""

from __future__ import annotations

import io
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import equinox as eqx
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine

from app.catalog import CatalogEntry, parse_spec
from app.database import modules, notices, shares


@dataclass(frozen=True)
class ModuleRecord:
    """One module of a workspace, as stored."""

    id: str
    workspace: str
    kind: str
    params: dict
    saved: bool
    created_at: float
    updated_at: float
    revision: int
    leaves: bytes | None

    @property
    def trained(self) -> bool:
        return self.leaves is not None

    def spec(self) -> CatalogEntry:
        return parse_spec(self.kind, self.params)


@dataclass(frozen=True)
class ShareRecord:
    """A read-only snapshot: the spec and the parameters."""

    id: str
    kind: str
    params: dict
    leaves: bytes
    title: str
    created_at: float

    def spec(self) -> CatalogEntry:
        return parse_spec(self.kind, self.params)


def serialise_leaves(model: Any) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    return buffer.getvalue()


def deserialise_leaves(blob: bytes, like: Any) -> Any:
    return eqx.tree_deserialise_leaves(io.BytesIO(blob), like)


def new_id(nbytes: int = 12) -> str:
    return secrets.token_urlsafe(nbytes)


class BuiltModuleCache:
    """Built modules kept in memory, keyed by what they were built from."""

    def __init__(self, size: int = 128):
        self._size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: tuple, build) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        model = build()
        with self._lock:
            self._items[key] = model
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return model


class ModuleStore:
    """Modules of every workspace, and shared snapshots."""

    def __init__(self, engine: Engine, max_modules_per_workspace: int):
        self.engine = engine
        self.max_modules_per_workspace = max_modules_per_workspace
        self._built = BuiltModuleCache()

    # Modules -------------------------------------------------------------------------------
    def create(self, workspace: str, spec: CatalogEntry, leaves: bytes | None = None) -> ModuleRecord:
        """Store a new module; the oldest unsaved modules beyond the workspace's limit go."""
        now = time.time()
        row = {
            "id": new_id(),
            "workspace": workspace,
            "kind": spec.kind,
            "params": spec.model_dump(mode="json"),
            "leaves": leaves,
            "saved": False,
            "created_at": now,
            "updated_at": now,
            "revision": 0,
        }
        with self.engine.begin() as connection:
            connection.execute(insert(modules).values(**row))
            self._evict(connection, workspace, keep=row["id"])
        return ModuleRecord(**row)

    def _evict(self, connection, workspace: str, keep: str) -> None:
        count = connection.execute(
            select(func.count()).select_from(modules).where(modules.c.workspace == workspace)
        ).scalar_one()
        excess = count - self.max_modules_per_workspace
        if excess <= 0:
            return
        oldest = connection.execute(
            select(modules.c.id, modules.c.kind)
            .where(modules.c.workspace == workspace, modules.c.saved.is_(False))
            .where(modules.c.id != keep)
            .order_by(modules.c.created_at)
            .limit(excess)
        ).all()
        for module_id, kind in oldest:
            connection.execute(delete(modules).where(modules.c.id == module_id))
            connection.execute(
                insert(notices).values(
                    workspace=workspace,
                    created_at=time.time(),
                    message=(
                        f"Module {module_id} ({kind}) was removed: a workspace keeps at most "
                        f"{self.max_modules_per_workspace} modules, the oldest unsaved go first. "
                        "Save or share a module to keep it."
                    ),
                )
            )

    def get(self, workspace: str, module_id: str) -> ModuleRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(modules).where(modules.c.id == module_id, modules.c.workspace == workspace)
            ).mappings().first()
        return ModuleRecord(**row) if row else None

    def list(self, workspace: str) -> list[ModuleRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(modules).where(modules.c.workspace == workspace).order_by(
                    modules.c.created_at.desc()
                )
            ).mappings().all()
        return [ModuleRecord(**row) for row in rows]

    def count(self, workspace: str) -> int:
        with self.engine.connect() as connection:
            return connection.execute(
                select(func.count()).select_from(modules).where(modules.c.workspace == workspace)
            ).scalar_one()

    def set_leaves(self, record: ModuleRecord, model: Any) -> ModuleRecord:
        """Store ``model``'s parameters as the module's own; returns the new record."""
        blob = serialise_leaves(model)
        now = time.time()
        with self.engine.begin() as connection:
            connection.execute(
                update(modules)
                .where(modules.c.id == record.id, modules.c.workspace == record.workspace)
                .values(leaves=blob, updated_at=now, revision=modules.c.revision + 1)
            )
        updated = self.get(record.workspace, record.id)
        assert updated is not None
        return updated

    def set_saved(self, record: ModuleRecord, saved: bool = True) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(modules).where(modules.c.id == record.id).values(saved=saved)
            )

    def delete(self, record: ModuleRecord) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(modules).where(modules.c.id == record.id))

    def load(self, record: ModuleRecord | ShareRecord) -> Any:
        """The built module of ``record``, with its stored parameters if it has any."""
        revision = getattr(record, "revision", 0)
        key = (type(record).__name__, record.id, revision)

        def build():
            model = record.spec().build()
            if record.leaves is not None:
                model = deserialise_leaves(record.leaves, model)
            return model

        return self._built.get_or_build(key, build)

    def pop_notices(self, workspace: str) -> list[str]:
        with self.engine.begin() as connection:
            rows = connection.execute(
                select(notices.c.id, notices.c.message)
                .where(notices.c.workspace == workspace)
                .order_by(notices.c.id)
            ).all()
            if rows:
                connection.execute(delete(notices).where(notices.c.id.in_([r[0] for r in rows])))
        return [message for _, message in rows]

    # Shares --------------------------------------------------------------------------------
    def share(self, record: ModuleRecord, title: str = "") -> ShareRecord:
        model = self.load(record)
        row = {
            "id": new_id(9),
            "kind": record.kind,
            "params": record.params,
            "leaves": serialise_leaves(model),
            "title": title,
            "created_at": time.time(),
        }
        with self.engine.begin() as connection:
            connection.execute(insert(shares).values(**row))
        self.set_saved(record)
        return ShareRecord(**row)

    def get_share(self, share_id: str) -> ShareRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(shares).where(shares.c.id == share_id)).mappings().first()
        return ShareRecord(**row) if row else None
