"""The database: SQLite under the data directory by default, PostgreSQL when configured.

The same SQLAlchemy code serves both. Every write is committed before the request answers,
and SQLite runs in WAL mode with full synchronisation, so a killed process loses nothing.
"""

from __future__ import annotations

import time

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
    event,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

modules = Table(
    "modules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("leaves", LargeBinary, nullable=True),
    Column("saved", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False, default=time.time),
    Column("updated_at", Float, nullable=False, default=time.time),
    Column("revision", Integer, nullable=False, default=0),
    Index("ix_modules_workspace", "workspace", "created_at"),
)

shares = Table(
    "shares",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("leaves", LargeBinary, nullable=False),
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


def _enable_sqlite_durability(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_database_engine(url: str) -> Engine:
    """An engine for ``url`` with every table created."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _enable_sqlite_durability)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    metadata.create_all(engine)
    return engine
