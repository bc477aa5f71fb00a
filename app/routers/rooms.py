"""Rooms: a presenter leads a lesson, participants join with a code and follow step by step.

JSON API:

- ``POST /api/rooms {"lesson"}``: 201 ``{"room", "code", "join_url", "presenter_url",
  "presenter_key"}``. The key is shown once: the database keeps only its hash.
- ``POST /api/rooms/{code}/join {"nickname"?}``: join the caller's workspace to the room.
- ``POST /api/rooms/{room}/step {"step"}`` with ``X-Presenter-Key``: move the room (403
  without the right key).
- ``POST /api/rooms/{room}/reset-compiled`` with ``X-Presenter-Key``: reset the room's
  "compiled here" view (403 without the right key); the next run of each function in the
  room compiles again.
- ``GET /api/rooms/{code}``: ``{"lesson", "step", "participants", "reached", "ran"}``.
- ``GET /api/rooms/{code}/events``: server-sent ``step`` events, each time the room moves
  (the stream polls the room's row, so a step set through any replica arrives within a
  second); it ends after ``event_stream_seconds`` and the browser reconnects; a workspace
  holds at most ``max_event_streams_per_workspace`` streams (rooms and jobs together).

Pages: ``/rooms/{code}`` (join), ``/rooms/{room}/present`` (the presenter view of the room's
step), ``/rooms/{room}/stats`` (the presenter's counts and accuracy histogram, polled).

Participants see only the room's step: never another participant's workspace, nickname or
result. The presenter sees counts and a histogram, never who got what.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.devices import device_label
from app.errors import PlaygroundError
from app.lessons.steps import find_lesson
from app.links import join_url
from app.rooms import RoomRecord
from app.runs.service import reset_compiled
from app.services import Services, ServicesDep, WorkspaceDep
from app.sse import event_stream, sse_event
from app.templating import templates

router = APIRouter(tags=["rooms"])

CodePath = Annotated[
    str, Path(max_length=32, description="The room's 6-character join code (or its id).")
]
RoomPath = Annotated[str, Path(max_length=32, description="The room's id (from POST /api/rooms).")]
PresenterKey = Annotated[
    str | None, Header(max_length=200, description="The room's presenter key.")
]
PRESENTER_RESPONSES: dict = {
    403: {"description": "Not the presenter's key."},
    404: {"description": "No room."},
}

MAX_NICKNAME = 40
EVENTS_POLL_SECONDS = 0.4
EVENTS_KEEPALIVE_SECONDS = 15
HISTOGRAM_BINS = 10


# Models -----------------------------------------------------------------------------------


class RoomCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lesson: str = Field(max_length=60, description="A lesson's id (GET /api/lessons).")


class RoomCreated(BaseModel):
    room: str = Field(description="The room's id: the presenter's handle (POST .../step).")
    code: str = Field(description="The 6-character join code people type.")
    join_url: str = Field(description="The absolute link that joins the room (in the QR code).")
    presenter_url: str = Field(
        description="The presenter view; its #key= fragment carries the key to the browser."
    )
    presenter_key: str = Field(
        description="Send it as X-Presenter-Key to move the room. Shown once, stored as a hash."
    )


class JoinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nickname: str = Field(
        "", max_length=MAX_NICKNAME, description=f"Up to {MAX_NICKNAME} characters."
    )

    @field_validator("nickname")
    @classmethod
    def _printable(cls, value: str) -> str:
        value = " ".join(value.split())
        if any(unicodedata.category(c)[0] == "C" for c in value):
            raise ValueError("a nickname holds letters, digits, spaces and punctuation only")
        return value


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=1, le=99, description="The step to show, from 1.")


class RoomOut(BaseModel):
    lesson: str
    step: int = Field(description="The presenter's step, from 1.")
    participants: int = Field(description="Workspaces that joined.")
    reached: int = Field(description="Participants who opened the current step.")
    ran: int = Field(description="Participants who ran the current step's preset.")
    code: str
    title: str = Field(description="The current step's title.")
    url: str = Field(description="The current step's page.")


# Helpers ----------------------------------------------------------------------------------


def room_or_404(services: Services, ident: str) -> RoomRecord:
    room = services.rooms.get(ident)
    if room is None:
        raise PlaygroundError(
            404,
            f"No room {ident[:12]!r}: check the code (6 letters and digits), or the room has "
            "ended (rooms last room_lifetime_hours).",
            field="code",
        )
    return room


def room_by_id(services: Services, room_id: str) -> RoomRecord:
    """The room of a presenter's handle (its id, not its join code), else 404."""
    room = services.rooms.get(room_id)
    if room is None or room.id != room_id:
        raise PlaygroundError(404, "No room with this id (the presenter's link has it).")
    return room


def room_out(services: Services, room: RoomRecord) -> dict:
    lesson = find_lesson(room.lesson)
    counts = services.rooms.counts(room)
    step = lesson.step(room.step)
    return {
        "lesson": room.lesson,
        "step": room.step,
        "participants": counts.participants,
        "reached": counts.reached,
        "ran": counts.ran,
        "code": room.code,
        "title": step.title if step else "",
        "url": lesson.step_url(room.step),
    }


def presenter_url(room: RoomRecord, key: str) -> str:
    return f"/rooms/{room.id}/present#key={key}"


def _create(request: Request, services: Services, workspace: str, lesson_id: str) -> dict:
    lesson = find_lesson(lesson_id)
    room, key = services.rooms.create(lesson.id, workspace)
    return {
        "room": room.id,
        "code": room.code,
        "join_url": join_url(request, services.settings, room.code),
        "presenter_url": presenter_url(room, key),
        "presenter_key": key,
    }


def accuracies(services: Services, room: RoomRecord, step: int) -> list[float]:
    """The test accuracy of every participant's finished training job of ``step`` (each read
    once from its job, then kept in the room's progress row)."""
    jobs = services.jobs
    found = []
    for workspace, job_id, accuracy in services.rooms.jobs(room, step):
        if accuracy is None:
            job = jobs.describe(workspace, job_id)
            if job is None or job["status"] not in ("done", "stopped"):
                continue
            values = [v for v in job["metrics"].get("test_accuracy", []) if v is not None]
            if not values:
                continue
            accuracy = float(values[-1])
            services.rooms.set_accuracy(room, workspace, step, accuracy)
        found.append(accuracy)
    return found


def histogram(values: list[float], bins: int = HISTOGRAM_BINS) -> list[dict]:
    """Counts of ``values`` in ``bins`` equal bins of [0, 1] (1.0 in the last)."""
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int(value * bins)))] += 1
    return [
        {"low": i / bins, "high": (i + 1) / bins, "count": count} for i, count in enumerate(counts)
    ]


# API --------------------------------------------------------------------------------------


@router.post(
    "/api/rooms",
    status_code=201,
    response_model=RoomCreated,
    responses={404: {"description": "No such lesson."}, 429: {"description": "Too many rooms."}},
)
def create_room(
    body: RoomCreate, request: Request, services: ServicesDep, workspace: WorkspaceDep
) -> dict:
    """Open a room on step 1 of a lesson; answers its code, links and presenter key."""
    return _create(request, services, workspace, body.lesson)


@router.post(
    "/api/rooms/{code}/join",
    responses={404: {"description": "No such room."}, 429: {"description": "The room is full."}},
)
def join_room(
    code: CodePath, services: ServicesDep, workspace: WorkspaceDep, body: JoinIn | None = None
) -> dict:
    """Join your workspace to the room; answers the room (as GET) and your nickname."""
    room = room_or_404(services, code)
    nickname = (body or JoinIn()).nickname
    services.rooms.join(room, workspace, nickname)
    return {**room_out(services, room), "nickname": nickname}


@router.post(
    "/api/rooms/{room_id}/step",
    response_model=RoomOut,
    responses=PRESENTER_RESPONSES,
)
def move_room(
    room_id: RoomPath,
    body: StepIn,
    services: ServicesDep,
    x_presenter_key: PresenterKey = None,
) -> dict:
    """Move the room to ``step`` (the presenter's key in ``X-Presenter-Key``)."""
    room = room_by_id(services, room_id)
    lesson = find_lesson(room.lesson)
    if body.step > len(lesson.steps):
        raise PlaygroundError(
            422,
            f"step: the lesson {lesson.id!r} has steps 1 to {len(lesson.steps)}.",
            field="body.step",
        )
    room = services.rooms.move(room, x_presenter_key, body.step)
    return room_out(services, room)


class CompiledResetOut(BaseModel):
    scope: str = Field(description="The scope whose view was reset: room:<id>.")


@router.post(
    "/api/rooms/{room_id}/reset-compiled",
    response_model=CompiledResetOut,
    responses=PRESENTER_RESPONSES,
)
def reset_room_compiled(
    room_id: RoomPath, services: ServicesDep, x_presenter_key: PresenterKey = None
) -> dict:
    """Reset the room's "compiled here" view (the presenter's key in ``X-Presenter-Key``):
    the next run of each function by anyone in the room compiles again (compile_scope
    "now"), so the jit demo's first click compiles in front of the room."""
    room = room_by_id(services, room_id)
    services.rooms.check_presenter(room, x_presenter_key, "resets what the room compiled")
    return {"scope": reset_compiled(services, room.workspace, room.id)}


@router.get(
    "/api/rooms/{code}", response_model=RoomOut, responses={404: {"description": "No room."}}
)
def get_room(code: CodePath, services: ServicesDep) -> dict:
    """The room's lesson and step, and how many joined, reached the step and ran it."""
    return room_out(services, room_or_404(services, code))


@router.get(
    "/api/rooms/{code}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "step events."}},
)
async def room_events(
    code: CodePath, request: Request, services: ServicesDep, workspace: WorkspaceDep
) -> StreamingResponse:
    """Server-sent events: ``step`` ``{"step", "url", "title"}`` now and whenever the room
    moves; ``end`` when the stream's life (``event_stream_seconds``) is over or the room is
    gone. The room's row is polled every 0.4 s, so a move made on any replica arrives within
    a second. A workspace holds at most ``max_event_streams_per_workspace`` streams at once."""
    room = await run_in_threadpool(room_or_404, services, code)
    lesson = find_lesson(room.lesson)
    lifetime = services.settings.event_stream_seconds
    release = services.event_streams.acquire(workspace)

    def step_event(step: int) -> str:
        found = lesson.step(step)
        title = found.title if found else ""
        return sse_event("step", {"step": step, "url": lesson.step_url(step), "title": title})

    async def events():
        yield "retry: 1000\n\n"
        yield step_event(room.step)
        seen, started, last_sent = room.step, time.monotonic(), time.monotonic()
        while True:
            await asyncio.sleep(EVENTS_POLL_SECONDS)
            if await request.is_disconnected():
                return
            now = time.monotonic()
            if now - started > lifetime:
                yield sse_event("end", {"reason": "the stream's time is up; reconnect"})
                return
            step = await run_in_threadpool(services.rooms.step_of, room.id)
            if step is None:
                yield sse_event("end", {"reason": "the room has ended"})
                return
            if step != seen:
                seen, last_sent = step, now
                yield step_event(step)
            elif now - last_sent > EVENTS_KEEPALIVE_SECONDS:
                last_sent = now
                yield ": keep-alive\n\n"

    return event_stream(events(), on_close=release)


# Pages ------------------------------------------------------------------------------------


@router.post("/rooms", include_in_schema=False)
async def create_room_page(request: Request, services: ServicesDep, workspace: WorkspaceDep):
    """The lessons page's "Start a room": create it, then open its presenter view."""
    form = await request.form()
    lesson = str(form.get("lesson") or "")[:60]
    created = await run_in_threadpool(_create, request, services, workspace, lesson)
    return RedirectResponse(created["presenter_url"], status_code=303)


@router.get("/rooms/{code}", response_class=HTMLResponse, include_in_schema=False)
def join_page(request: Request, code: CodePath, services: ServicesDep, workspace: WorkspaceDep):
    """The join link: the room's lesson and a nickname field."""
    room = room_or_404(services, code)
    lesson = find_lesson(room.lesson)
    return templates.TemplateResponse(
        request,
        "room_join.html",
        {
            "room": room,
            "lesson": lesson,
            "nickname": services.rooms.participant(room, workspace),
            "max_nickname": MAX_NICKNAME,
            "device": device_label(),
            "notices": [],
        },
    )


@router.post("/rooms/{code}/join", include_in_schema=False)
async def join_from_page(
    request: Request, code: CodePath, services: ServicesDep, workspace: WorkspaceDep
):
    """The join form: join, then open the presenter's current step."""
    form = await request.form()
    nickname = JoinIn(nickname=str(form.get("nickname") or "")[: MAX_NICKNAME * 4]).nickname
    room = await run_in_threadpool(room_or_404, services, code)
    await run_in_threadpool(services.rooms.join, room, workspace, nickname)
    return RedirectResponse(find_lesson(room.lesson).step_url(room.step), status_code=303)


@router.get("/rooms/{room_id}/present", include_in_schema=False)
def present_room(room_id: RoomPath, services: ServicesDep):
    """The presenter's link: the presenter view of the room's current step."""
    room = services.rooms.get(room_id)
    if room is None or room.id != room_id:
        raise PlaygroundError(404, "No room with this id: the presenter's link may be cut.")
    url = find_lesson(room.lesson).present_url(room.step) + f"?room={room.id}"
    return RedirectResponse(url, status_code=303)


@router.get("/rooms/{room_id}/stats", response_class=HTMLResponse, include_in_schema=False)
def room_stats(
    request: Request,
    room_id: RoomPath,
    services: ServicesDep,
    step: Annotated[int | None, Query(ge=1, le=99)] = None,
):
    """The presenter's view of the room: joined, reached, ran; for a training step the
    histogram of the participants' test accuracies."""
    room = services.rooms.get(room_id)
    if room is None or room.id != room_id:
        raise PlaygroundError(404, "No room with this id.")
    lesson = find_lesson(room.lesson)
    shown = step or room.step
    counts = services.rooms.counts(room, shown)
    lesson_step = lesson.step(shown)
    context: dict[str, Any] = {"room": room, "counts": counts, "shown": shown}
    if lesson_step is not None and lesson_step.training is not None:
        values = accuracies(services, room, shown)
        context["accuracies"] = values
        context["bins"] = histogram(values)
        context["tallest"] = max([b["count"] for b in context["bins"]] + [1])
    return templates.TemplateResponse(request, "partials/room_stats.html", context)
