"""The database: SQLite under the data directory by default, PostgreSQL when configured.

The same SQLAlchemy code serves both. Every table of the playground is in the one
:data:`metadata` below, created together by :func:`create_database_engine`. Every write is
committed before the request answers, and SQLite runs in WAL mode with full synchronisation, so
a killed process loses nothing.

Parameters that are snapshots (a share's, a fork's) are stored once per content: the table
``snapshots`` holds the serialised bytes by their SHA-256, and shares and forked modules name
the digest. ``workspace_transaction`` is the write transaction in which a workspace's counts
are checked and changed: on PostgreSQL it holds a lock on the workspace (an advisory lock for
the transaction), on SQLite it takes the database's write lock at its start (``BEGIN
IMMEDIATE``), so check-then-insert is exact under concurrent requests.
"""

from __future__ import annotations

import hashlib
import queue
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    exists,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()

modules = Table(
    "modules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("leaves", LargeBinary, nullable=True),
    Column("snapshot", String(64), nullable=True, index=True),
    Column("saved", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False, default=time.time),
    Column("updated_at", Float, nullable=False, default=time.time),
    Column("revision", Integer, nullable=False, default=0),
    Index("ix_modules_workspace", "workspace", "created_at"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False, default=time.time),
)
"""Serialised parameters by the SHA-256 of their bytes: one row however many shares and forks
hold them."""

shares = Table(
    "shares",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace", String(64), nullable=False, default="", index=True),
    Column("kind", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("snapshot", String(64), nullable=False, index=True),
    Column("title", Text, nullable=False, default=""),
    Column("trained", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False, default=time.time),
)

revisions = Table(
    "revisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("module_id", String(32), nullable=False),
    Column("workspace", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("leaves", LargeBinary, nullable=True),
    Column("note", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False, default=time.time),
    Index("ix_revisions_module", "module_id", "id"),
)
"""Earlier parameters of edited modules, newest last, for Undo: each row holds a module's
parameters as they were at ``revision`` (``leaves`` null: as built from its spec) and ``note``
says what the edit after it did."""

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("last_seen", Float, nullable=False, default=time.time),
)
"""When each workspace was last used (written at most every few minutes per process)."""

notices = Table(
    "notices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workspace", String(64), nullable=False, index=True),
    Column("message", Text, nullable=False),
    Column("created_at", Float, nullable=False, default=time.time),
)

rooms = Table(
    "rooms",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("code", String(8), nullable=False, unique=True),
    Column("lesson", String(64), nullable=False),
    Column("step", Integer, nullable=False, default=1),
    Column("key_hash", String(64), nullable=False),
    Column("workspace", String(64), nullable=False, index=True),
    Column("created_at", Float, nullable=False, default=time.time),
    Column("updated_at", Float, nullable=False, default=time.time),
)

room_participants = Table(
    "room_participants",
    metadata,
    Column("room", String(32), primary_key=True),
    Column("workspace", String(64), primary_key=True),
    Column("nickname", String(64), nullable=False, default=""),
    Column("joined_at", Float, nullable=False, default=time.time),
    Index("ix_room_participants_workspace", "workspace"),
)

room_progress = Table(
    "room_progress",
    metadata,
    Column("room", String(32), primary_key=True),
    Column("workspace", String(64), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("ran", Boolean, nullable=False, default=False),
    Column("job", String(32), nullable=True),
    Column("test_accuracy", Float, nullable=True),
    Column("updated_at", Float, nullable=False, default=time.time),
)

csv_datasets = Table(
    "csv_datasets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("filename", Text, nullable=False, default=""),
    Column("columns", JSON, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False, default=time.time),
    Index("ix_csv_datasets_workspace", "workspace", "created_at"),
)
"""Uploaded CSV datasets (``app.training.storage``)."""

training_jobs = Table(
    "training_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("module_id", String(32), nullable=False),
    Column("record", Text, nullable=False),
    Column("updated_at", Float, nullable=False, default=time.time),
    Index("ix_training_jobs_workspace", "workspace", "updated_at"),
)
"""The record of every training job (``app.training.storage``)."""


def _enable_sqlite_durability(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class SQLiteReader:
    """SQLite connections of their own, outside SQLAlchemy's pool, for the one read every run
    makes (a module's record): a checkout from the pool and its return cost more than the read.
    Each read is its own transaction (autocommit), so it sees every committed write; there are
    as many connections as reads happened at once, kept for the next reads."""

    def __init__(self, path: str):
        self.path = path
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._closed = False

    @classmethod
    def of(cls, engine: Engine) -> SQLiteReader | None:
        """A reader of ``engine``'s database file (None for PostgreSQL or a database in
        memory, which another connection would not see)."""
        path = engine.url.database
        if engine.dialect.name != "sqlite" or not path or path == ":memory:":
            return None
        return cls(path)

    def one(self, statement: str, arguments: tuple) -> tuple | None:
        """The first row of ``statement`` (SQLite's own SQL, ``?`` parameters), or None."""
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA busy_timeout=10000")
        try:
            return connection.execute(statement, arguments).fetchone()
        finally:
            if self._closed:
                connection.close()
            else:
                self._idle.put(connection)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def create_database_engine(url: str) -> Engine:
    """An engine for ``url`` with every table created."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _enable_sqlite_durability)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    metadata.create_all(engine)
    _store_snapshots_by_content(engine)
    return engine


def _store_snapshots_by_content(engine: Engine) -> None:
    """Bring a database made before snapshots were content-addressed up to date: shares'
    parameters move into ``snapshots`` (one row per content) and ``shares.leaves`` goes;
    modules get their ``snapshot`` column. Does nothing on an up-to-date database."""
    columns = {
        table: {column["name"] for column in inspect(engine).get_columns(table)}
        for table in ("modules", "shares")
    }
    if "snapshot" in columns["modules"] and "leaves" not in columns["shares"]:
        return
    with engine.begin() as connection:
        if "snapshot" not in columns["modules"]:
            connection.execute(text("ALTER TABLE modules ADD COLUMN snapshot VARCHAR(64)"))
        if "leaves" in columns["shares"]:
            for name, kind in (("snapshot", "VARCHAR(64)"), ("workspace", "VARCHAR(64)")):
                if name not in columns["shares"]:
                    connection.execute(text(f"ALTER TABLE shares ADD COLUMN {name} {kind}"))
            rows = connection.execute(text("SELECT id, leaves FROM shares")).all()
            for share_id, leaves in rows:
                digest = put_snapshot(connection, bytes(leaves))
                connection.execute(
                    text("UPDATE shares SET snapshot = :d, workspace = '' WHERE id = :i"),
                    {"d": digest, "i": share_id},
                )
            connection.execute(text("ALTER TABLE shares DROP COLUMN leaves"))
        for index, table, column in (
            ("ix_modules_snapshot", "modules", "snapshot"),
            ("ix_shares_snapshot", "shares", "snapshot"),
            ("ix_shares_workspace", "shares", "workspace"),
        ):
            connection.execute(text(f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({column})"))


@contextmanager
def workspace_transaction(engine: Engine, workspace: str) -> Iterator[Connection]:
    """A write transaction holding ``workspace``'s lock: counts read in it stay true until it
    commits (PostgreSQL: an advisory lock on the workspace; SQLite: the write lock, taken at
    ``BEGIN IMMEDIATE`` and waited for up to the busy timeout)."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            key = int.from_bytes(
                hashlib.sha256(workspace.encode()).digest()[:8], "big", signed=True
            )
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


def snapshot_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_snapshot(connection: Connection, data: bytes) -> str:
    """Store ``data`` once (a row per distinct content) and answer its digest; the row is locked
    for this transaction on PostgreSQL, so it cannot be collected before the reference to it
    commits."""
    digest = snapshot_digest(data)
    values = {"digest": digest, "data": data, "size": len(data), "created_at": time.time()}
    dialect_insert = sqlite_insert if connection.dialect.name == "sqlite" else postgresql_insert
    connection.execute(dialect_insert(snapshots).values(**values).on_conflict_do_nothing())
    lock_snapshot(connection, digest)
    return digest


def lock_snapshot(connection: Connection, digest: str) -> bool:
    """Whether the snapshot ``digest`` exists, holding it (PostgreSQL) until the transaction
    ends so that :func:`collect_snapshots` waits for this reference."""
    found = connection.execute(
        select(snapshots.c.digest).where(snapshots.c.digest == digest).with_for_update(read=True)
    ).first()
    return found is not None


def collect_snapshots(connection: Connection, digests) -> None:
    """Delete those of ``digests`` that no share and no module names any more."""
    digests = sorted({d for d in digests if d})
    if not digests:
        return
    # lock them first (a reference being added holds them shared), then look again
    connection.execute(
        select(snapshots.c.digest).where(snapshots.c.digest.in_(digests)).with_for_update()
    ).all()
    connection.execute(
        delete(snapshots).where(
            snapshots.c.digest.in_(digests),
            ~exists().where(shares.c.snapshot == snapshots.c.digest),
            ~exists().where(modules.c.snapshot == snapshots.c.digest),
        )
    )


def snapshot_size(connection: Connection, digest: str) -> int:
    size = connection.execute(
        select(func.coalesce(snapshots.c.size, 0)).where(snapshots.c.digest == digest)
    ).scalar()
    return int(size or 0)
