"""Rooms in the database: a room, its participants and how far each got, step by step.

Everything is a row of the one MetaData (``app.database``), so a room survives a restart and
every replica on one PostgreSQL sees the same room; the events stream polls the room's row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Integer, and_, delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from app.cache import BoundedCache
from app.database import room_participants, room_progress, rooms, workspace_transaction
from app.errors import PlaygroundError
from app.rooms.tokens import key_hash, key_matches, new_code, new_key, new_room_id, normal_code
from app.settings import Settings

ROOM_ID_MAX = 32
MAX_COMPILE_ROOMS = 65_536
"""Workspaces whose compile room is remembered (a few dozen bytes each)."""
COMPILE_ROOM_SECONDS = 10.0
"""How long a workspace's compile room is remembered without asking the database again (it
changes at once when this store creates or joins a room; this bounds how long a room deleted
with its workspace, or a change made by another process, goes unnoticed)."""


@dataclass(frozen=True)
class RoomRecord:
    id: str
    code: str
    lesson: str
    step: int
    key_hash: str
    workspace: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class RoomCounts:
    participants: int
    reached: int
    ran: int


_COLUMNS = (
    rooms.c.id,
    rooms.c.code,
    rooms.c.lesson,
    rooms.c.step,
    rooms.c.key_hash,
    rooms.c.workspace,
    rooms.c.created_at,
    rooms.c.updated_at,
)


class RoomStore:
    """Rooms, participants and progress (see the module's docstring)."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self._compile_rooms: BoundedCache[str, tuple[str | None, float, float]] = BoundedCache(
            MAX_COMPILE_ROOMS
        )
        """Workspace -> its compile room, when that room was created and when this was asked
        (every run asks; this store's :meth:`create` and :meth:`join` forget the answer)."""

    @property
    def lifetime(self) -> float:
        return self.settings.room_lifetime_hours * 3600.0

    # Rooms ----------------------------------------------------------------------------------
    def create(self, lesson: str, workspace: str) -> tuple[RoomRecord, str]:
        """A new room on step 1 of ``lesson`` and its presenter key (shown once, never stored).

        429 when this workspace, or the whole server, created too many rooms in the last hour.
        """
        now = time.time()
        self._forget_expired(now)
        key = new_key()
        for _ in range(8):  # a code already taken (one in a billion per room) draws again
            row = {
                "id": new_room_id(),
                "code": new_code(),
                "lesson": lesson,
                "step": 1,
                "key_hash": key_hash(key),
                "workspace": workspace,
                "created_at": now,
                "updated_at": now,
            }
            try:
                # one lock for every creation, so both counts stay exact under concurrent requests
                with workspace_transaction(self.engine, "rooms: creations") as connection:
                    self._check_creations(connection, workspace, now)
                    connection.execute(insert(rooms).values(**row))
            except IntegrityError:
                continue
            self._compile_rooms.pop(workspace)
            return RoomRecord(**row), key
        raise PlaygroundError(503, "No free room code was found; try again.")

    def _check_creations(self, connection, workspace: str, now: float) -> None:
        hour_ago = now - 3600
        mine = connection.execute(
            select(func.count())
            .select_from(rooms)
            .where(rooms.c.workspace == workspace, rooms.c.created_at > hour_ago)
        ).scalar_one()
        everyone = connection.execute(
            select(func.count()).select_from(rooms).where(rooms.c.created_at > hour_ago)
        ).scalar_one()
        limit = self.settings.max_rooms_per_workspace_per_hour
        if mine >= limit:
            raise PlaygroundError(
                429,
                f"You created {mine} rooms in the last hour; the limit is {limit} "
                "(max_rooms_per_workspace_per_hour). Reuse one of them, or wait.",
                field="lesson",
                headers={"Retry-After": "600"},
            )
        if everyone >= self.settings.max_rooms_per_hour:
            raise PlaygroundError(
                429,
                f"This server created {everyone} rooms in the last hour; the limit is "
                f"{self.settings.max_rooms_per_hour} (max_rooms_per_hour). Try again later.",
                field="lesson",
                headers={"Retry-After": "600"},
            )

    def _forget_expired(self, now: float) -> None:
        cutoff = now - self.lifetime
        with self.engine.begin() as connection:
            old = select(rooms.c.id).where(rooms.c.created_at < cutoff)
            connection.execute(delete(room_progress).where(room_progress.c.room.in_(old)))
            connection.execute(delete(room_participants).where(room_participants.c.room.in_(old)))
            connection.execute(delete(rooms).where(rooms.c.created_at < cutoff))

    def get(self, ident: str) -> RoomRecord | None:
        """The live room whose code (6 characters) or id is ``ident``."""
        code = normal_code(ident) if len(ident) <= 12 else None
        if code is not None:
            where = rooms.c.code == code
        elif 0 < len(ident) <= ROOM_ID_MAX:
            where = rooms.c.id == ident
        else:
            return None
        with self.engine.connect() as connection:
            row = connection.execute(select(*_COLUMNS).where(where)).first()
        if row is None or row.created_at < time.time() - self.lifetime:
            return None
        return RoomRecord(*row)

    def step_of(self, room_id: str) -> int | None:
        """The room's current step (the one small query the event streams repeat)."""
        with self.engine.connect() as connection:
            return connection.execute(select(rooms.c.step).where(rooms.c.id == room_id)).scalar()

    def check_presenter(self, room: RoomRecord, key: str | None, what: str) -> None:
        """403 unless ``key`` is the room's presenter key; ``what`` names what only the
        presenter does ("moves the room")."""
        if not key_matches(key, room.key_hash):
            raise PlaygroundError(
                403,
                f"Only the presenter {what}: send the presenter key of this room in the "
                "X-Presenter-Key header.",
                field="header.X-Presenter-Key",
            )

    def move(self, room: RoomRecord, key: str | None, step: int) -> RoomRecord:
        """Move the room to ``step``; 403 unless ``key`` is the presenter's."""
        self.check_presenter(room, key, "moves the room")
        now = time.time()
        with self.engine.begin() as connection:
            connection.execute(
                update(rooms).where(rooms.c.id == room.id).values(step=step, updated_at=now)
            )
        return RoomRecord(**{**room.__dict__, "step": step, "updated_at": now})

    # Participants ---------------------------------------------------------------------------
    def join(self, room: RoomRecord, workspace: str, nickname: str) -> None:
        """Add the workspace to the room (joining again changes only the nickname). The count
        is read and the row written under the room's lock, so the limit holds exactly."""
        key = and_(room_participants.c.room == room.id, room_participants.c.workspace == workspace)
        with workspace_transaction(self.engine, f"room: {room.id}") as connection:
            changed = connection.execute(
                update(room_participants).where(key).values(nickname=nickname)
            ).rowcount
            if changed:
                return
            count = _participants(connection, room.id)
            limit = self.settings.max_room_participants
            if count >= limit:
                raise PlaygroundError(
                    429,
                    f"This room is full: {count} participants, the limit is {limit} "
                    "(max_room_participants).",
                    field="code",
                )
            connection.execute(
                insert(room_participants).values(
                    room=room.id, workspace=workspace, nickname=nickname, joined_at=time.time()
                )
            )
        self._compile_rooms.pop(workspace)

    def participant(self, room: RoomRecord, workspace: str) -> str | None:
        """The workspace's nickname in the room, or None if it has not joined."""
        with self.engine.connect() as connection:
            return connection.execute(
                select(room_participants.c.nickname).where(
                    room_participants.c.room == room.id,
                    room_participants.c.workspace == workspace,
                )
            ).scalar()

    def rooms_of(self, workspace: str, lesson: str) -> list[RoomRecord]:
        """The live rooms of ``lesson`` that the workspace joined, newest first."""
        cutoff = time.time() - self.lifetime
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(*_COLUMNS)
                .join(room_participants, room_participants.c.room == rooms.c.id)
                .where(
                    room_participants.c.workspace == workspace,
                    rooms.c.lesson == lesson,
                    rooms.c.created_at >= cutoff,
                )
                .order_by(room_participants.c.joined_at.desc())
                .limit(8)
            ).all()
        return [RoomRecord(*row) for row in rows]

    def compile_room(self, workspace: str) -> str | None:
        """The id of the live room whose compile scope the workspace's runs use: the room it
        joined or created most recently (any lesson), else None."""
        now = time.time()
        cutoff = now - self.lifetime
        found = self._compile_rooms.get(workspace)
        if (
            found is None
            or now - found[2] > COMPILE_ROOM_SECONDS
            or (found[0] is not None and found[1] < cutoff)
        ):
            found = (*self._find_compile_room(workspace, cutoff), now)
            self._compile_rooms.put(workspace, found)
        return found[0]

    def _find_compile_room(self, workspace: str, cutoff: float) -> tuple[str | None, float]:
        with self.engine.connect() as connection:
            joined = connection.execute(
                select(rooms.c.id, room_participants.c.joined_at, rooms.c.created_at)
                .join(room_participants, room_participants.c.room == rooms.c.id)
                .where(room_participants.c.workspace == workspace, rooms.c.created_at >= cutoff)
                .order_by(room_participants.c.joined_at.desc())
                .limit(1)
            ).first()
            created = connection.execute(
                select(rooms.c.id, rooms.c.created_at, rooms.c.created_at)
                .where(rooms.c.workspace == workspace, rooms.c.created_at >= cutoff)
                .order_by(rooms.c.created_at.desc())
                .limit(1)
            ).first()
        found = [row for row in (joined, created) if row is not None]
        if not found:
            return None, 0.0
        room, _, created_at = max(found, key=lambda row: row[1])
        return room, created_at

    # Progress -------------------------------------------------------------------------------
    def record(
        self, workspace: str, lesson: str, step: int, *, ran: bool = False, job: str | None = None
    ) -> None:
        """Note that the workspace reached (or ran) ``step`` in every room of ``lesson`` it
        joined."""
        for room in self.rooms_of(workspace, lesson):
            self._upsert(room.id, workspace, step, ran, job)

    def _upsert(self, room_id: str, workspace: str, step: int, ran: bool, job: str | None):
        key = and_(
            room_progress.c.room == room_id,
            room_progress.c.workspace == workspace,
            room_progress.c.step == step,
        )
        values: dict = {"updated_at": time.time()}
        if ran:
            values["ran"] = True
        if job is not None:
            values.update(job=job, test_accuracy=None)
        for _ in range(2):
            with self.engine.begin() as connection:
                if connection.execute(update(room_progress).where(key).values(**values)).rowcount:
                    return
            try:
                with self.engine.begin() as connection:
                    connection.execute(
                        insert(room_progress).values(
                            room=room_id,
                            workspace=workspace,
                            step=step,
                            ran=ran,
                            job=job,
                            updated_at=values["updated_at"],
                        )
                    )
                return
            except IntegrityError:  # inserted meanwhile by another request: update it
                continue

    def counts(self, room: RoomRecord, step: int | None = None) -> RoomCounts:
        """How many joined, reached ``step`` (default: the room's) and ran it."""
        step = room.step if step is None else step
        with self.engine.connect() as connection:
            participants = _participants(connection, room.id)
            reached, ran = connection.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(func.cast(room_progress.c.ran, Integer)), 0),
                ).where(room_progress.c.room == room.id, room_progress.c.step == step)
            ).one()
        return RoomCounts(int(participants), int(reached), int(ran))

    def jobs(self, room: RoomRecord, step: int) -> list[tuple[str, str, float | None]]:
        """(workspace, job, test accuracy or None) of every participant who trained ``step``."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(
                    room_progress.c.workspace, room_progress.c.job, room_progress.c.test_accuracy
                ).where(
                    room_progress.c.room == room.id,
                    room_progress.c.step == step,
                    room_progress.c.job.is_not(None),
                )
            ).all()
        return [tuple(row) for row in rows]

    def set_accuracy(self, room: RoomRecord, workspace: str, step: int, accuracy: float) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(room_progress)
                .where(
                    room_progress.c.room == room.id,
                    room_progress.c.workspace == workspace,
                    room_progress.c.step == step,
                )
                .values(test_accuracy=accuracy)
            )


def _participants(connection, room_id: str) -> int:
    return connection.execute(
        select(func.count())
        .select_from(room_participants)
        .where(room_participants.c.room == room_id)
    ).scalar_one()
