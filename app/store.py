"""Persistence of modules and shared snapshots, and the in-memory cache of built modules.

A module is a pure function of its catalog spec and seed, so any process can rebuild it; only
parameters that differ from the spec (after training, say) are stored, serialised with
``eqx.tree_serialise_leaves``. A share's parameters, and a fork's until it is changed, are a
snapshot stored once per content (``app.database.snapshots``), however many shares and forks
hold it.

Quotas per workspace: at most ``max_shares`` shares and ``max_stored_bytes`` bytes of stored
parameters (its modules' own, their undo history, and each distinct snapshot its shares and
forks hold, counted once); each is checked and the row written in one
``workspace_transaction``, so concurrent requests cannot pass a limit together.
"""

from __future__ import annotations

import io
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
from sqlalchemy import bindparam, delete, func, insert, or_, select, union, update
from sqlalchemy.engine import Connection, Engine

from app.cache import BoundedCache
from app.catalog import CatalogEntry, parse_spec
from app.database import (
    SQLiteReader,
    collect_snapshots,
    lock_snapshot,
    modules,
    notices,
    put_snapshot,
    revisions,
    room_participants,
    room_progress,
    rooms,
    shares,
    snapshot_digest,
    snapshots,
    workspace_transaction,
    workspaces,
)
from app.errors import PlaygroundError


class NothingToUndo(PlaygroundError):
    """409: the module has no earlier revision kept."""

    def __init__(self, module_id: str):
        super().__init__(
            409,
            f"Module {module_id} has no earlier revision to go back to: only edits made here "
            "(a leaf edited) can be undone.",
        )


class ModuleChanged(PlaygroundError):
    """409: the module got a new revision while an edit of the old one was being computed."""

    def __init__(self, module_id: str):
        super().__init__(
            409,
            f"Module {module_id} changed while this edit was being made (another tab, or "
            "training); reload it and edit again.",
        )


@dataclass(frozen=True)
class RevisionNote:
    """One kept earlier revision: its number, what the edit after it did, and when."""

    revision: int
    note: str
    created_at: float


class QuotaExceeded(PlaygroundError):
    """413 (bytes) or 429 (shares): a workspace quota would be passed."""

    def __init__(self, status: int, what: str, limit: int, setting: str):
        super().__init__(
            status,
            f"Your workspace would pass its quota of {what} (limit {limit:,}, {setting}, "
            f"PLAYGROUND_{setting.upper()}). Delete modules or shares you no longer need, or "
            "delete the whole workspace.",
            field=setting,
        )


class WorkspaceFull(PlaygroundError):
    """429: every module of the workspace is saved and the workspace is at its limit."""

    def __init__(self, limit: int):
        super().__init__(
            429,
            f"Your workspace is full: it keeps at most {limit} modules "
            f"(max_modules_per_workspace={limit}) and all of them are saved (shared), so none "
            "can be removed to make room. Delete a module first.",
        )


@dataclass(frozen=True)
class ModuleRecord:
    """One module of a workspace, as stored, without its parameters' bytes: ``trained`` says
    whether it has any (``ModuleStore.load`` reads them when it builds the module)."""

    id: str
    workspace: str
    kind: str
    params: dict
    saved: bool
    created_at: float
    updated_at: float
    revision: int
    trained: bool

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
    trained: bool
    created_at: float
    snapshot: str = ""
    workspace: str = ""

    def spec(self) -> CatalogEntry:
        return parse_spec(self.kind, self.params)


def serialise_leaves(model: Any) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    return buffer.getvalue()


def deserialise_leaves(blob: bytes, like: Any) -> Any:
    return eqx.tree_deserialise_leaves(io.BytesIO(blob), like)


MODULE_ID_LENGTH = 32
"""The longest id a module may have (the column's width)."""


def new_id(nbytes: int = 12) -> str:
    return secrets.token_urlsafe(nbytes)


def tree_nbytes(model: Any) -> int:
    """Bytes of the arrays in ``model``."""
    return sum(int(getattr(leaf, "nbytes", 0)) for leaf in jax.tree_util.tree_leaves(model))


BUILT_CACHE_ENTRIES = 128
BUILT_CACHE_BYTES = 256 * 2**20
"""Built modules kept in memory: at most this many, holding at most this many bytes of arrays
(least recently used first out), so a crowd of users with big modules cannot fill the
server's memory."""


_RECORD_QUERY = select(
    modules.c.id,
    modules.c.workspace,
    modules.c.kind,
    modules.c.params,
    modules.c.saved,
    modules.c.created_at,
    modules.c.updated_at,
    modules.c.revision,
    or_(modules.c.leaves.is_not(None), modules.c.snapshot.is_not(None)).label("trained"),
)
"""A module's record: every column but the parameters' bytes, and whether it has them."""
_GET_RECORD = _RECORD_QUERY.where(
    modules.c.id == bindparam("module_id"), modules.c.workspace == bindparam("workspace")
)


def _revision_leaves(record: ModuleRecord):
    """The statement reading the parameters of exactly ``record``'s revision (its own, or the
    snapshot it was forked from)."""
    forked = select(snapshots.c.data).where(snapshots.c.digest == modules.c.snapshot)
    return select(func.coalesce(modules.c.leaves, forked.scalar_subquery())).where(
        modules.c.id == record.id,
        modules.c.workspace == record.workspace,
        modules.c.revision == record.revision,
    )


class ModuleStore:
    """Modules of every workspace, and shared snapshots."""

    def __init__(
        self,
        engine: Engine,
        max_modules_per_workspace: int,
        max_shares: int | None = None,
        max_stored_bytes: int | None = None,
    ):
        self.engine = engine
        self._reader = SQLiteReader.of(engine)
        compiled = _GET_RECORD.compile(dialect=engine.dialect)
        self._get_record = str(compiled)
        names = compiled.positiontup
        self._record_args = (
            (lambda values: tuple(values[name] for name in names))
            if compiled.positional
            else (lambda values: values)
        )
        self.max_modules_per_workspace = max_modules_per_workspace
        self.max_shares = max_shares
        self.max_stored_bytes = max_stored_bytes
        self._built: BoundedCache[tuple, Any] = BoundedCache(
            BUILT_CACHE_ENTRIES, max_bytes=BUILT_CACHE_BYTES, cost=tree_nbytes
        )
        self._seen: dict[str, float] = {}
        self._seen_lock = threading.Lock()
        self.after_touch: Callable[[], None] | None = None
        """Called after a use is written (the idle-workspace cleaner hooks in here)."""

    def close(self) -> None:
        """Close the connections of its own (the engine's pool is the engine's)."""
        if self._reader is not None:
            self._reader.close()

    def _read_one(self, statement: str, arguments: Any) -> tuple | None:
        connection = self.engine.raw_connection()  # from the engine's pool, rolled back on close
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(statement, arguments)
                return cursor.fetchone()
            finally:
                cursor.close()
        finally:
            connection.close()

    # Workspaces ----------------------------------------------------------------------------
    TOUCH_EVERY_SECONDS = 300

    def touch(self, workspace: str) -> None:
        """Note that ``workspace`` is in use (written at most every few minutes per process)."""
        now = time.time()
        with self._seen_lock:
            if now - self._seen.get(workspace, 0.0) < self.TOUCH_EVERY_SECONDS:
                return
            if len(self._seen) > 100_000:
                self._seen.clear()
            self._seen[workspace] = now
        with self.engine.begin() as connection:
            self._touch(connection, workspace, now)
        if self.after_touch is not None:
            self.after_touch()

    def reads_at_once(self, workspace: str) -> bool:
        """Whether :meth:`find` is one quick read: the database is a local file (SQLite, in
        WAL mode: a read never waits for a writer), and no note of the workspace's use is due
        (a write, which may clean idle workspaces). The event loop may then call it."""
        if self.engine.dialect.name != "sqlite":
            return False
        with self._seen_lock:
            return time.time() - self._seen.get(workspace, 0.0) < self.TOUCH_EVERY_SECONDS

    @staticmethod
    def _touch(connection: Connection, workspace: str, now: float) -> None:
        updated = connection.execute(
            update(workspaces).where(workspaces.c.id == workspace).values(last_seen=now)
        )
        if updated.rowcount == 0:
            connection.execute(insert(workspaces).values(id=workspace, last_seen=now))

    def share_count(self, workspace: str) -> int:
        with self.engine.connect() as connection:
            return connection.execute(
                select(func.count()).select_from(shares).where(shares.c.workspace == workspace)
            ).scalar_one()

    def stored_bytes(self, workspace: str) -> int:
        """Bytes of parameters the workspace holds (each distinct snapshot counted once)."""
        with self.engine.connect() as connection:
            return self._stored_bytes(connection, workspace)

    @staticmethod
    def _stored_bytes(connection: Connection, workspace: str) -> int:
        own = select(func.coalesce(func.sum(func.length(modules.c.leaves)), 0)).where(
            modules.c.workspace == workspace
        )
        history = select(func.coalesce(func.sum(func.length(revisions.c.leaves)), 0)).where(
            revisions.c.workspace == workspace
        )
        held = union(
            select(shares.c.snapshot).where(shares.c.workspace == workspace),
            select(modules.c.snapshot).where(
                modules.c.workspace == workspace, modules.c.snapshot.is_not(None)
            ),
        ).subquery()
        snaps = select(func.coalesce(func.sum(snapshots.c.size), 0)).where(
            snapshots.c.digest.in_(select(held.c[0]))
        )
        return sum(int(connection.execute(q).scalar_one()) for q in (own, history, snaps))

    def _check_bytes(self, connection: Connection, workspace: str, adding: int) -> None:
        limit = self.max_stored_bytes
        if limit is None or adding <= 0:
            return
        if self._stored_bytes(connection, workspace) + adding > limit:
            raise QuotaExceeded(413, "stored bytes", limit, "max_stored_bytes_per_workspace")

    def _holds_snapshot(self, connection: Connection, workspace: str, digest: str) -> bool:
        in_shares = select(shares.c.id).where(
            shares.c.workspace == workspace, shares.c.snapshot == digest
        )
        in_modules = select(modules.c.id).where(
            modules.c.workspace == workspace, modules.c.snapshot == digest
        )
        return any(connection.execute(q.limit(1)).first() for q in (in_shares, in_modules))

    def delete_workspace(self, workspace: str) -> dict[str, int]:
        """Delete the workspace's modules, their history, its notices, its shares, the rooms
        it presents and its part in others' rooms; the snapshots nothing else holds go too.
        Answers how many of each went."""
        with workspace_transaction(self.engine, workspace) as connection:
            counts = self._delete_workspace_rows(connection, workspace, with_shares=True)
        return counts

    def _delete_workspace_rows(
        self, connection: Connection, workspace: str, with_shares: bool
    ) -> dict[str, int]:
        held = [
            row[0]
            for row in connection.execute(
                select(modules.c.snapshot).where(
                    modules.c.workspace == workspace, modules.c.snapshot.is_not(None)
                )
            )
        ]
        ids = [
            row[0]
            for row in connection.execute(
                select(modules.c.id).where(modules.c.workspace == workspace)
            )
        ]
        counts = {"modules": len(ids), "shares": 0, "rooms": 0}
        if with_shares:
            held += [
                row[0]
                for row in connection.execute(
                    select(shares.c.snapshot).where(shares.c.workspace == workspace)
                )
            ]
            counts["shares"] = connection.execute(
                delete(shares).where(shares.c.workspace == workspace)
            ).rowcount
            owned = select(rooms.c.id).where(rooms.c.workspace == workspace)
            for table in (room_participants, room_progress):
                connection.execute(delete(table).where(table.c.room.in_(owned)))
            counts["rooms"] = connection.execute(
                delete(rooms).where(rooms.c.workspace == workspace)
            ).rowcount
        for table in (room_participants, room_progress):
            connection.execute(delete(table).where(table.c.workspace == workspace))
        connection.execute(delete(modules).where(modules.c.workspace == workspace))
        connection.execute(delete(revisions).where(revisions.c.workspace == workspace))
        connection.execute(delete(notices).where(notices.c.workspace == workspace))
        connection.execute(delete(workspaces).where(workspaces.c.id == workspace))
        collect_snapshots(connection, held)
        for module_id in ids:
            self.forget_built(module_id)
        with self._seen_lock:
            self._seen.pop(workspace, None)
        return counts

    def idle_workspaces(self, before: float, limit: int = 100) -> list[str]:
        """Workspaces last used before ``before`` none of whose modules is saved."""
        saved = select(modules.c.id).where(
            modules.c.workspace == workspaces.c.id, modules.c.saved.is_(True)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(workspaces.c.id)
                .where(workspaces.c.last_seen < before, ~saved.exists())
                .order_by(workspaces.c.last_seen)
                .limit(limit)
            ).all()
        return [row[0] for row in rows]

    def clean_idle_workspace(self, workspace: str, before: float) -> bool:
        """Delete an idle unsaved workspace's modules, history, notices and its part in rooms
        (its shares and the rooms it presents stay), if it is still idle and unsaved when its
        lock is held."""
        with workspace_transaction(self.engine, workspace) as connection:
            seen = connection.execute(
                select(workspaces.c.last_seen).where(workspaces.c.id == workspace)
            ).scalar()
            saved = connection.execute(
                select(modules.c.id)
                .where(modules.c.workspace == workspace, modules.c.saved.is_(True))
                .limit(1)
            ).first()
            if seen is None or seen >= before or saved is not None:
                return False
            self._delete_workspace_rows(connection, workspace, with_shares=False)
        return True

    # Modules -------------------------------------------------------------------------------
    def create(
        self, workspace: str, spec: CatalogEntry, leaves: bytes | None = None
    ) -> ModuleRecord:
        """Store a new module. A full workspace first loses its oldest unsaved modules (each
        leaves a notice); one full of saved modules refuses with 429 (:class:`WorkspaceFull`)."""
        return self._insert(workspace, spec.kind, spec.model_dump(mode="json"), leaves)

    def _insert(
        self,
        workspace: str,
        kind: str,
        params: dict,
        leaves: bytes | None,
        snapshot: ShareRecord | None = None,
    ):
        """Insert a module (with its own ``leaves``, or holding ``snapshot``'s parameters)
        under the workspace's lock: the count and the quota are exact."""
        now = time.time()
        row = {
            "id": new_id(),
            "workspace": workspace,
            "kind": kind,
            "params": params,
            "leaves": leaves,
            "snapshot": snapshot.snapshot if snapshot else None,
            "saved": False,
            "created_at": now,
            "updated_at": now,
            "revision": 0,
        }
        with workspace_transaction(self.engine, workspace) as connection:
            self._make_room(connection, workspace)
            if snapshot is not None:
                if not lock_snapshot(connection, snapshot.snapshot):
                    raise PlaygroundError(404, f"The shared snapshot {snapshot.id} was deleted.")
                if not self._holds_snapshot(connection, workspace, snapshot.snapshot):
                    self._check_bytes(connection, workspace, len(snapshot.leaves))
            self._check_bytes(connection, workspace, len(leaves or b""))
            connection.execute(insert(modules).values(**row))
            self._touch(connection, workspace, now)
        del row["leaves"], row["snapshot"]
        return ModuleRecord(**row, trained=leaves is not None or snapshot is not None)

    def _make_room(self, connection, workspace: str) -> None:
        """Evict the oldest unsaved modules so that one more fits under the limit."""
        limit = self.max_modules_per_workspace
        count = connection.execute(
            select(func.count()).select_from(modules).where(modules.c.workspace == workspace)
        ).scalar_one()
        excess = count + 1 - limit
        if excess <= 0:
            return
        oldest = connection.execute(
            select(modules.c.id, modules.c.kind)
            .where(modules.c.workspace == workspace, modules.c.saved.is_(False))
            .order_by(modules.c.created_at, modules.c.id)
            .limit(excess)
        ).all()
        if len(oldest) < excess:
            raise WorkspaceFull(limit)
        held = connection.execute(
            select(modules.c.snapshot).where(modules.c.id.in_([row[0] for row in oldest]))
        ).all()
        for module_id, kind in oldest:
            connection.execute(delete(modules).where(modules.c.id == module_id))
            connection.execute(delete(revisions).where(revisions.c.module_id == module_id))
            self.forget_built(module_id)
            connection.execute(
                insert(notices).values(
                    workspace=workspace,
                    created_at=time.time(),
                    message=(
                        f"Module {module_id} ({kind}) was removed to make room: a workspace keeps "
                        f"at most {limit} modules (max_modules_per_workspace={limit}), and the "
                        "oldest unsaved ones go first. Share a module to keep it."
                    ),
                )
            )
        collect_snapshots(connection, [row[0] for row in held])

    def get(self, workspace: str, module_id: str) -> ModuleRecord | None:
        """The module's record (every run starts here, so its bytes stay in the database).

        Every run reads it, so it goes straight to the database driver with the statement
        compiled once: a third of the time of SQLAlchemy's own execution and result rows (and
        with SQLite, on a connection of :class:`~app.database.SQLiteReader`, outside the pool)."""
        self.touch(workspace)
        arguments = self._record_args({"module_id": module_id, "workspace": workspace})
        if self._reader is not None:
            row = self._reader.one(self._get_record, arguments)
        else:
            row = self._read_one(self._get_record, arguments)
        if row is None:
            return None
        id_, workspace_, kind, params, saved, created, updated, revision, trained = row
        if isinstance(params, str | bytes):  # SQLite's JSON is text; PostgreSQL's driver decodes
            params = json.loads(params)
        return ModuleRecord(
            id_, workspace_, kind, params, bool(saved), created, updated, revision, bool(trained)
        )

    def find(self, workspace: str, module_id: str, field: str | None = None) -> ModuleRecord:
        """The module ``module_id`` of ``workspace``; a 404 for any other (the same answer as
        for a module that does not exist, so ids of other workspaces cannot be probed).
        ``field`` names the input that gave the id when it is not the path's."""
        record = self.get(workspace, module_id) if len(module_id) <= MODULE_ID_LENGTH else None
        if record is None:
            given = f" ({field.replace('.', ' ')})" if field else ""
            raise PlaygroundError(
                404,
                f"No module {module_id[:40]!r}{given} in your workspace. Modules live in the "
                "browser's workspace that built them; a shared link opens a copy of its own.",
                field=field,
            )
        return record

    def list(self, workspace: str) -> list[ModuleRecord]:
        self.touch(workspace)
        with self.engine.connect() as connection:
            rows = connection.execute(
                _RECORD_QUERY.where(modules.c.workspace == workspace).order_by(
                    modules.c.created_at.desc()
                )
            ).all()
        return [ModuleRecord(*row) for row in rows]

    def count(self, workspace: str) -> int:
        with self.engine.connect() as connection:
            return connection.execute(
                select(func.count()).select_from(modules).where(modules.c.workspace == workspace)
            ).scalar_one()

    def set_leaves(self, record: ModuleRecord, model: Any) -> ModuleRecord:
        """Store ``model``'s parameters as the module's own; returns the new record."""
        blob = serialise_leaves(model)
        now = time.time()
        with workspace_transaction(self.engine, record.workspace) as connection:
            old = self._own_and_snapshot(connection, record)
            self._check_bytes(connection, record.workspace, len(blob) - old[0])
            connection.execute(
                update(modules)
                .where(modules.c.id == record.id, modules.c.workspace == record.workspace)
                .values(leaves=blob, snapshot=None, updated_at=now, revision=modules.c.revision + 1)
            )
            collect_snapshots(connection, [old[1]])
        updated = self.get(record.workspace, record.id)
        assert updated is not None
        return updated

    def reset_leaves(self, record: ModuleRecord) -> ModuleRecord:
        """Forget the module's own parameters: it builds from its spec again (its initial
        parameters); the revision is bumped. Returns the new record."""
        with self.engine.begin() as connection:
            old = self._own_and_snapshot(connection, record)
            connection.execute(
                update(modules)
                .where(modules.c.id == record.id, modules.c.workspace == record.workspace)
                .values(
                    leaves=None,
                    snapshot=None,
                    updated_at=time.time(),
                    revision=modules.c.revision + 1,
                )
            )
            collect_snapshots(connection, [old[1]])
        updated = self.get(record.workspace, record.id)
        if updated is None:
            raise PlaygroundError(404, f"Module {record.id} was removed meanwhile.")
        return updated

    def edit(
        self, record: ModuleRecord, model: Any, note: str, keep: int, keep_bytes: int
    ) -> ModuleRecord:
        """Store ``model``'s parameters as the module's next revision, keeping the current ones
        for :meth:`undo`: at most ``keep`` earlier revisions per module, and of those only the
        newest whose parameters add up to ``keep_bytes`` (the newest one always).

        ``record`` must be the module's current revision (409 :class:`ModuleChanged` if another
        edit or training came first), so no edit is ever lost by a race."""
        blob = serialise_leaves(model)
        with workspace_transaction(self.engine, record.workspace) as connection:
            current = connection.execute(_revision_leaves(record)).first()
            if current is None:
                raise ModuleChanged(record.id)
            self._check_bytes(connection, record.workspace, len(blob) + len(current[0] or b""))
            connection.execute(
                insert(revisions).values(
                    module_id=record.id,
                    workspace=record.workspace,
                    revision=record.revision,
                    leaves=current[0],
                    note=note[:300],
                    created_at=time.time(),
                )
            )
            self._update_leaves(connection, record, blob)
            kept = connection.execute(
                select(revisions.c.id, func.coalesce(func.length(revisions.c.leaves), 0))
                .where(revisions.c.module_id == record.id)
                .order_by(revisions.c.id.desc())
            ).all()
            total, old = 0, []
            for position, (row_id, size) in enumerate(kept):
                total += int(size)
                if position > 0 and (position >= keep or total > keep_bytes):
                    old.append(row_id)
            if old:
                connection.execute(delete(revisions).where(revisions.c.id.in_(old)))
        return self._current(record)

    def undo(self, record: ModuleRecord) -> tuple[ModuleRecord, RevisionNote]:
        """Go back to the parameters kept before the last edit, as a new revision number (so
        nothing cached for the undone one is reused); 409 when none is kept."""
        with self.engine.begin() as connection:
            row = connection.execute(
                select(
                    revisions.c.id,
                    revisions.c.revision,
                    revisions.c.leaves,
                    revisions.c.note,
                    revisions.c.created_at,
                )
                .where(
                    revisions.c.module_id == record.id, revisions.c.workspace == record.workspace
                )
                .order_by(revisions.c.id.desc())
                .limit(1)
            ).first()
            if row is None:
                raise NothingToUndo(record.id)
            connection.execute(delete(revisions).where(revisions.c.id == row[0]))
            self._update_leaves(connection, record, row[2], check=False)
        return self._current(record), RevisionNote(row[1], row[3], row[4])

    def history(self, record: ModuleRecord) -> list[RevisionNote]:
        """The earlier revisions kept for Undo, newest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(revisions.c.revision, revisions.c.note, revisions.c.created_at)
                .where(
                    revisions.c.module_id == record.id, revisions.c.workspace == record.workspace
                )
                .order_by(revisions.c.id.desc())
            ).all()
        return [RevisionNote(*row) for row in rows]

    def _update_leaves(self, connection, record: ModuleRecord, blob, check: bool = True) -> None:
        condition = [modules.c.id == record.id, modules.c.workspace == record.workspace]
        if check:
            condition.append(modules.c.revision == record.revision)
        old = self._own_and_snapshot(connection, record)
        result = connection.execute(
            update(modules)
            .where(*condition)
            .values(
                leaves=blob, snapshot=None, updated_at=time.time(), revision=modules.c.revision + 1
            )
        )
        if result.rowcount != 1:
            raise ModuleChanged(record.id)
        collect_snapshots(connection, [old[1]])

    @staticmethod
    def _own_and_snapshot(connection: Connection, record: ModuleRecord) -> tuple[int, str | None]:
        """The bytes of the module's own parameters and the snapshot it holds, as stored now."""
        row = connection.execute(
            select(func.coalesce(func.length(modules.c.leaves), 0), modules.c.snapshot).where(
                modules.c.id == record.id, modules.c.workspace == record.workspace
            )
        ).first()
        return (int(row[0]), row[1]) if row else (0, None)

    def _current(self, record: ModuleRecord) -> ModuleRecord:
        updated = self.get(record.workspace, record.id)
        if updated is None:
            raise ModuleChanged(record.id)
        return updated

    def delete(self, record: ModuleRecord) -> None:
        with self.engine.begin() as connection:
            old = self._own_and_snapshot(connection, record)
            connection.execute(
                delete(modules).where(
                    modules.c.id == record.id, modules.c.workspace == record.workspace
                )
            )
            connection.execute(delete(revisions).where(revisions.c.module_id == record.id))
            collect_snapshots(connection, [old[1]])
        self.forget_built(record.id)

    def load(self, record: ModuleRecord | ShareRecord) -> Any:
        """The built module of ``record``, with its stored parameters if it has any."""
        revision = getattr(record, "revision", 0)
        key = (type(record).__name__, record.id, revision)

        def build():
            model = record.spec().build()
            if isinstance(record, ShareRecord):
                return deserialise_leaves(record.leaves, model)
            if record.trained:
                model = deserialise_leaves(self._leaves(record), model)
            return model

        return self._built.get_or_make(key, build)

    def built(self, record: ModuleRecord | ShareRecord) -> Any | None:
        """The built module of ``record`` if it is in memory (None: not built here lately)."""
        return self._built.get((type(record).__name__, record.id, getattr(record, "revision", 0)))

    def forget_built(self, module_id: str) -> None:
        """Drop the built versions of a module from memory (the next load rebuilds it)."""
        self._built.discard_where(lambda key: key[:2] == ("ModuleRecord", module_id))

    def _leaves(self, record: ModuleRecord) -> bytes:
        """The stored parameters of exactly this revision of ``record``."""
        with self.engine.connect() as connection:
            blob = connection.execute(_revision_leaves(record)).scalar()
        if blob is None:
            raise PlaygroundError(
                409,
                f"Module {record.id} changed or was removed while it was being loaded; "
                "reload the page and try again.",
            )
        return blob

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
        """A snapshot of ``record`` as it is now (spec and parameters); the module is kept
        (marked saved, so it is never evicted)."""
        model = self.load(record)
        leaves = serialise_leaves(model)
        row = {
            "id": new_id(12),
            "workspace": record.workspace,
            "kind": record.kind,
            "params": record.params,
            "title": title,
            "trained": record.trained,
            "created_at": time.time(),
        }
        with workspace_transaction(self.engine, record.workspace) as connection:
            if self.max_shares is not None:
                count = connection.execute(
                    select(func.count())
                    .select_from(shares)
                    .where(shares.c.workspace == record.workspace)
                ).scalar_one()
                if count >= self.max_shares:
                    raise QuotaExceeded(429, "shares", self.max_shares, "max_shares_per_workspace")
            if not self._holds_snapshot(connection, record.workspace, snapshot_digest(leaves)):
                self._check_bytes(connection, record.workspace, len(leaves))
            row["snapshot"] = put_snapshot(connection, leaves)
            connection.execute(insert(shares).values(**row))
            connection.execute(
                update(modules)
                .where(modules.c.id == record.id, modules.c.workspace == record.workspace)
                .values(saved=True)
            )
        return ShareRecord(**row, leaves=leaves)

    def get_share(self, share_id: str) -> ShareRecord | None:
        if not isinstance(share_id, str) or len(share_id) > 32:
            return None
        with self.engine.connect() as connection:
            row = (
                connection.execute(
                    select(shares, snapshots.c.data.label("leaves"))
                    .join(snapshots, snapshots.c.digest == shares.c.snapshot)
                    .where(shares.c.id == share_id)
                )
                .mappings()
                .first()
            )
        return ShareRecord(**row) if row else None

    def fork(self, workspace: str, share: ShareRecord) -> ModuleRecord:
        """A new module of ``workspace`` holding exactly the snapshot's spec and parameters."""
        return self._insert(workspace, share.kind, dict(share.params), None, snapshot=share)
