"""Server-sent events: one event's text, and the streaming answer that carries them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse


def sse_event(name: str, payload: dict) -> str:
    """One event: ``event: name`` and its JSON ``data`` (NaN refused, as JSON has none)."""
    return f"event: {name}\ndata: {json.dumps(payload, allow_nan=False)}\n\n"


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """A ``text/event-stream`` answer that no proxy buffers or caches."""
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
