"""Lessons: the JSON API, each step's page, the presenter view and the step's run fragment.

- ``GET /api/lessons``: ``[{"id", "title", "steps": [{"title", "url"}]}]``.
- ``GET /api/lessons/{lesson}/{step}``: one step: its text, question, module spec and preset.
- ``POST /api/lessons/{lesson}/{step}/open``: build (or reuse) the step's module in the
  caller's workspace; answers the module's id and page.
- ``POST /api/lessons/{lesson}/{step}/run`` ``{"module"}``: run the step's preset on it
  (answers as ``/run``, ``/train`` or ``/dynamics`` of the module would).
- ``GET /lessons``, ``GET /lessons/{lesson}/{step}``: the lessons and one step's page (opening
  it builds the step's module in the visitor's workspace); ``.../present``: the presenter
  view (``?room=`` a room id: its join code, QR code and counts, next/previous move the room);
  ``POST /lessons/{lesson}/{step}/run``: the result fragment of the step's preset.

Steps are numbered from 1. A workspace that joined a room of the lesson has its progress
(reached, ran, the training job) noted in that room.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.devices import device_label
from app.lessons import Lesson, Step, lessons
from app.lessons.pages import (
    open_step_page,
    opened,
    presenting_context,
    result_context,
    room_context,
    run_step,
)
from app.lessons.steps import find_lesson, find_step
from app.runs.results import FIELDS, FastJSONResponse
from app.services import ServicesDep, WorkspaceDep
from app.templating import templates

router = APIRouter(tags=["lessons"])

LessonPath = Annotated[str, Path(max_length=60, description="A lesson's id, e.g. pytree.")]
StepPath = Annotated[int, Path(ge=1, le=99, description="A step's number, from 1.")]

RESULT_PARTS = frozenset(FIELDS) - {"values"}


# Models -----------------------------------------------------------------------------------


class StepLink(BaseModel):
    title: str
    url: str = Field(description="The step's page: /lessons/{lesson}/{step}.")


class LessonOut(BaseModel):
    id: str
    title: str
    steps: list[StepLink]


class StepOut(BaseModel):
    """One step, as its data file has it."""

    lesson: str
    step: int = Field(description="The step's number, from 1.")
    steps: int = Field(description="How many steps the lesson has.")
    title: str
    text: str = Field(description="Markdown.")
    html: str = Field(description="The text as HTML (raw HTML in the Markdown is escaped).")
    question: str
    module: dict[str, Any] = Field(description="{kind, params}, as POST /api/modules takes.")
    path: str | None = Field(description="The tree node the step points at, if any.")
    preset: str | None = Field(description="run, training, dynamics or null.")
    body: dict[str, Any] | None = Field(
        description="The preset as the body of POST /api/modules/{id}/run, /train or /dynamics."
    )
    url: str
    present_url: str


class OpenOut(BaseModel):
    module: str = Field(description="The module's id in your workspace.")
    module_url: str = Field(description="The module's own page: /m/{id}.")
    url: str = Field(description="The step's page.")
    built: bool = Field(description="Whether this call built it (else it reused one).")


class StepRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    module: str = Field(max_length=32, description="The module POST .../open answered.")


# Helpers ----------------------------------------------------------------------------------


def _lesson_out(lesson: Lesson) -> dict:
    return {
        "id": lesson.id,
        "title": lesson.title,
        "steps": [
            {"title": step.title, "url": lesson.step_url(number)}
            for number, step in enumerate(lesson.steps, start=1)
        ],
    }


def _step_out(lesson: Lesson, number: int, step: Step) -> dict:
    return {
        "lesson": lesson.id,
        "step": number,
        "steps": len(lesson.steps),
        "title": step.title,
        "text": step.text,
        "html": step.text_html,
        "question": step.question,
        "module": step.module.model_dump(mode="json"),
        "path": step.path,
        "preset": step.preset,
        "body": step.preset_body(),
        "url": lesson.step_url(number),
        "present_url": lesson.present_url(number),
    }


# API --------------------------------------------------------------------------------------


@router.get("/api/lessons", response_model=list[LessonOut])
def list_lessons() -> list[dict]:
    """Every lesson with its steps' titles and pages."""
    return [_lesson_out(lesson) for lesson in lessons().values()]


@router.get(
    "/api/lessons/{lesson_id}/{number}",
    response_model=StepOut,
    responses={404: {"description": "No such lesson or step."}},
)
def get_step(lesson_id: LessonPath, number: StepPath) -> dict:
    """One step: its text, question, module and preset."""
    lesson = find_lesson(lesson_id)
    return _step_out(lesson, number, find_step(lesson, number))


@router.post(
    "/api/lessons/{lesson_id}/{number}/open",
    response_model=OpenOut,
    responses={404: {"description": "No such lesson or step."}},
)
def open_step_api(
    lesson_id: LessonPath, number: StepPath, services: ServicesDep, workspace: WorkspaceDep
) -> JSONResponse:
    """Build the step's module in your workspace (or reuse the one built before and not
    trained since); 201 when it was built, 200 when reused."""
    lesson = find_lesson(lesson_id)
    record, built = opened(services, workspace, lesson, number)
    body = {
        "module": record.id,
        "module_url": f"/m/{record.id}",
        "url": lesson.step_url(number),
        "built": built,
    }
    return JSONResponse(body, status_code=201 if built else 200)


@router.post(
    "/api/lessons/{lesson_id}/{number}/run",
    responses={
        404: {"description": "No such lesson, step, or module of this step."},
        422: {"description": "A step with nothing to run."},
    },
)
def run_step_api(
    lesson_id: LessonPath,
    number: StepPath,
    body: StepRunIn,
    services: ServicesDep,
    workspace: WorkspaceDep,
) -> JSONResponse:
    """Run the step's preset on the module ``open`` answered: ``{"preset", "result"}``, the
    result as ``POST /api/modules/{id}/run`` (200), ``/train`` (202, the job) or ``/dynamics``
    would answer it; a per-example step adds ``result.batch_mean``."""
    lesson = find_lesson(lesson_id)
    _, _, outcome = run_step(services, workspace, lesson, number, body.module, None)
    status = 202 if outcome.preset == "training" else 200
    return FastJSONResponse({"preset": outcome.preset, "result": outcome.answer}, status)


# Pages ------------------------------------------------------------------------------------


@router.get("/lessons", response_class=HTMLResponse, include_in_schema=False)
def lessons_page(request: Request) -> Response:
    return templates.TemplateResponse(
        request,
        "lessons.html",
        {"lessons": list(lessons().values()), "device": device_label(), "notices": []},
    )


@router.get("/lessons/{lesson_id}/{number}", response_class=HTMLResponse, include_in_schema=False)
async def step_page(
    request: Request,
    lesson_id: LessonPath,
    number: StepPath,
    services: ServicesDep,
    workspace: WorkspaceDep,
) -> Response:
    """A step: its text and question, its module's tree, and its preset's button."""
    lesson = find_lesson(lesson_id)
    context = await run_in_threadpool(open_step_page, services, workspace, lesson, number, "page")
    context.update(room_context(services, workspace, lesson_id))
    return templates.TemplateResponse(request, "lesson_step.html", context)


@router.get(
    "/lessons/{lesson_id}/{number}/present", response_class=HTMLResponse, include_in_schema=False
)
async def present_page(
    request: Request,
    lesson_id: LessonPath,
    number: StepPath,
    services: ServicesDep,
    workspace: WorkspaceDep,
    room: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """The presenter view: the step's text, tree and result side by side in large type."""
    lesson = find_lesson(lesson_id)
    context = await run_in_threadpool(
        open_step_page, services, workspace, lesson, number, "present"
    )
    context.update(presenting_context(request, services, lesson_id, room))
    return templates.TemplateResponse(request, "lesson_step.html", context)


@router.post("/lessons/{lesson_id}/{number}/run", include_in_schema=False)
async def run_step_fragment(
    request: Request,
    lesson_id: LessonPath,
    number: StepPath,
    services: ServicesDep,
    workspace: WorkspaceDep,
) -> Response:
    """The step's result fragment: its run, its training job's progress, or its dynamics."""
    form = await request.form()
    module_id = str(form.get("module") or "")[:32]
    lesson = find_lesson(lesson_id)
    record, step, outcome = await run_in_threadpool(
        run_step, services, workspace, lesson, number, module_id, RESULT_PARTS
    )
    context = result_context(services, workspace, record, step, outcome)
    return templates.TemplateResponse(request, "partials/lesson_result.html", context)
