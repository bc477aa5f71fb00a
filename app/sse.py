"""Server-sent events: one event's text, and the streaming answer that carries them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask


def sse_event(name: str, payload: dict) -> str:
    """One event: ``event: name`` and its JSON ``data`` (NaN refused, as JSON has none)."""
    return f"event: {name}\ndata: {json.dumps(payload, allow_nan=False)}\n\n"


def event_stream(
    events: AsyncIterator[str], on_close: Callable[[], None] | None = None
) -> StreamingResponse:
    """A ``text/event-stream`` answer that no proxy buffers or caches; ``on_close`` runs when
    the events end or are cancelled, and after the answer (also when the stream never started),
    so a slot it holds is given back; it must be safe to call twice."""

    async def closing() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        finally:
            on_close()

    return StreamingResponse(
        closing() if on_close else events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(on_close) if on_close else None,
    )
