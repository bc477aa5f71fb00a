"""A room's names and its secret: the join code people type, the room id, the presenter key.

The key is never stored: the database keeps its SHA-256 (a key has 192 random bits, so a fast
hash is enough), and keys are compared by their hashes in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No I, O, 0 or 1: a code read off a projector is not misread."""
CODE_LENGTH = 6


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normal_code(text: str) -> str | None:
    """``text`` as a code (upper case, spaces and dashes dropped), or None if it cannot be one."""
    code = text.strip().upper().replace(" ", "").replace("-", "")
    if len(code) == CODE_LENGTH and all(c in CODE_ALPHABET for c in code):
        return code
    return None


def new_room_id() -> str:
    return secrets.token_urlsafe(16)


def new_key() -> str:
    return secrets.token_urlsafe(24)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def key_matches(key: str | None, stored_hash: str) -> bool:
    """Whether ``key`` is the one whose hash is stored (constant time)."""
    if not key:
        return False
    return hmac.compare_digest(key_hash(key[:200]), stored_hash)
