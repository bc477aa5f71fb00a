"""Rooms: a presenter leads participants through a lesson, step by step.

- :mod:`app.rooms.tokens`: join codes, room ids, presenter keys (stored as hashes).
- :mod:`app.rooms.store`: rooms, participants and their progress in the database.
- :mod:`app.rooms.qr`: the join link as an SVG QR code.
"""

from app.rooms.qr import qr_svg
from app.rooms.store import RoomCounts, RoomRecord, RoomStore
from app.rooms.tokens import CODE_ALPHABET, CODE_LENGTH, normal_code

__all__ = [
    "CODE_ALPHABET",
    "CODE_LENGTH",
    "RoomCounts",
    "RoomRecord",
    "RoomStore",
    "normal_code",
    "qr_svg",
]
