"""Training and dynamics: the JSON API and the module page's training and dynamics panels.

JSON API:

- ``POST /api/modules/{id}/train`` answers 202 ``{"job", ...}``: a background job (gradient
  training for catalog modules, the local rule for library networks);
- ``GET /api/jobs/{job}``: ``{"status", "step", "total", "metrics", "error", ...}``;
- ``GET /api/jobs/{job}/events``: the same progress as server-sent events, until the job ends;
- ``POST /api/jobs/{job}/stop``; ``GET /api/modules/{id}/jobs``;
- ``POST /api/jobs/{job}/pause``, ``/resume``, ``/step`` (one batch, then paused; answers once
  it is done): training you can play; ``POST /api/modules/{id}/reset``: the module back to its
  initial parameters (its jobs stopped, their results discarded);
- ``POST /api/modules/{id}/dynamics``: a network's states over T sweeps, the fraction of units
  that changed per sweep, the LayerMap's edge magnitudes and figures;
- ``POST /api/datasets/csv`` (multipart, field ``file``): upload a CSV; ``GET /api/datasets``.

Jobs belong to a workspace: another workspace's job is a 404, like an unknown one.

The panels (htmx fragments under the module's page, ``/m/{id}/...``): the module page includes
``partials/train_panel.html`` and ``partials/dynamics_panel.html``, which load their forms from
``/m/{id}/train-panel`` and ``/m/{id}/dynamics-panel``; a job's progress fragment is
``/m/{id}/jobs/{job}/progress``, its controls ``/m/{id}/jobs/{job}/{pause,resume,step,stop}``
and its live frames ``/m/{id}/jobs/{job}/frames``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from app.errors import PlaygroundError
from app.services import RecordDep, ServicesDep, WorkspaceDep
from app.sse import event_stream, sse_event
from app.templating import templates
from app.training import datasets
from app.training.forms import dynamics_request_from_form, train_request_from_form
from app.training.panels import (
    dynamics_panel_context,
    find_job,
    is_network,
    module_job,
    no_job,
    train_panel_context,
)
from app.training.progress import FRAME_SECONDS, frame, progress_context
from app.training.service import (
    DynamicsRequest,
    TrainRequest,
    compute_dynamics,
    reset_module,
    start_training,
    upload_csv,
)

router = APIRouter(tags=["training"])

JobPath = Annotated[str, Path(max_length=32, description="A job id from POST .../train.")]

EVENTS_POLL_SECONDS = 0.25
EVENTS_KEEPALIVE_SECONDS = 10


# --- models --------------------------------------------------------------------------------------


class JobOut(BaseModel):
    """A training job as the API answers it (more fields may follow)."""

    model_config = ConfigDict(extra="allow")

    job: str
    status: Literal["queued", "running", "paused", "done", "failed", "stopped"]
    step: int
    total: int
    metrics: dict[str, list[float | None]]
    error: str | None


class CsvOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    csv_id: str
    rows: int
    columns: int


# --- JSON API ------------------------------------------------------------------------------------


@router.post("/api/modules/{module_id}/train", status_code=202, response_model=JobOut)
def train(
    request: TrainRequest, record: RecordDep, services: ServicesDep, workspace: WorkspaceDep
) -> dict:
    """Start training the module in the background; 202 with the job's record. 409 (naming
    the job) while the module has a job queued, running or paused; 429 past the workspace's
    jobs; 422 for a job over its budget (max_train_flops, max_job_seconds)."""
    return start_training(services, workspace, record, request)


@router.get("/api/modules/{module_id}/jobs", response_model=list[JobOut])
def module_jobs(record: RecordDep, services: ServicesDep, workspace: WorkspaceDep) -> list:
    """The module's training jobs, newest first."""
    return services.jobs.list(workspace, record.id)


@router.get("/api/jobs/{job_id}", response_model=JobOut)
def job_status(
    job_id: JobPath,
    services: ServicesDep,
    workspace: WorkspaceDep,
    view: Annotated[bool, Query(description="Include the boundary/fit plot's numbers.")] = False,
) -> dict:
    """A job's status, progress and metrics."""
    return find_job(services, workspace, job_id, view)


@router.post("/api/jobs/{job_id}/stop", response_model=JobOut)
def stop_job(job_id: JobPath, services: ServicesDep, workspace: WorkspaceDep) -> dict:
    """Ask a job to stop; it stops before its next step and keeps what it learnt."""
    found = services.jobs.stop(workspace, job_id)
    if found is None:
        raise no_job(job_id)
    return found


@router.post("/api/jobs/{job_id}/pause", response_model=JobOut)
def pause_job(job_id: JobPath, services: ServicesDep, workspace: WorkspaceDep) -> dict:
    """Pause before the next step (409 once the job ended)."""
    return services.jobs.pause(workspace, job_id)


@router.post("/api/jobs/{job_id}/resume", response_model=JobOut)
def resume_job(job_id: JobPath, services: ServicesDep, workspace: WorkspaceDep) -> dict:
    """Play again after a pause (409 once the job ended)."""
    return services.jobs.resume(workspace, job_id)


@router.post("/api/jobs/{job_id}/step", response_model=JobOut)
def step_job(job_id: JobPath, services: ServicesDep, workspace: WorkspaceDep) -> dict:
    """Train one batch, then stay paused; answers once the step is done (a playing job pauses
    after the step under way)."""
    return services.jobs.step(workspace, job_id)


class ResetOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    module: str
    revision: int
    trained: bool


@router.post("/api/modules/{module_id}/reset", response_model=ResetOut)
def reset(record: RecordDep, services: ServicesDep) -> dict:
    """The module back to its initial parameters (those its spec builds, bit for bit); its
    training jobs stop and their results are discarded."""
    updated = reset_module(services, record)
    return {"module": updated.id, "revision": updated.revision, "trained": updated.trained}


@router.get(
    "/api/jobs/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "Progress events."}},
)
async def job_events(
    job_id: JobPath, request: Request, services: ServicesDep, workspace: WorkspaceDep
) -> StreamingResponse:
    """Server-sent events: ``progress`` (the job's record) on every change, ``end`` when the
    job ends. The stream closes after ``event_stream_seconds`` (the browser reconnects); a
    workspace holds at most ``max_event_streams_per_workspace`` streams at once (429 beyond)."""
    jobs = services.jobs
    first = find_job(services, workspace, job_id)
    lifetime = services.settings.event_stream_seconds
    release = services.event_streams.acquire(workspace)

    async def events(lifetime: float):
        yield "retry: 2000\n\n"
        yield sse_event("progress", first)
        job = jobs.get(workspace, job_id)
        if job is None or job.finished:
            yield sse_event("end", jobs.describe(workspace, job_id) or first)
            return
        seen, started, last_sent = job.version, time.monotonic(), time.monotonic()
        while True:
            await asyncio.sleep(EVENTS_POLL_SECONDS)
            if await request.is_disconnected():
                return
            now = time.monotonic()
            if job.finished:
                yield sse_event("end", job.public())
                return
            if now - started > lifetime:
                yield sse_event("timeout", {"job": job_id, "seconds": lifetime})
                return
            if job.version != seen:
                seen, last_sent = job.version, now
                yield sse_event("progress", job.public())
            elif now - last_sent > EVENTS_KEEPALIVE_SECONDS:
                last_sent = now
                yield ": keep-alive\n\n"

    return event_stream(events(lifetime), on_close=release)


@router.get("/api/datasets")
def list_datasets(services: ServicesDep, workspace: WorkspaceDep) -> dict:
    """The generated datasets with their metadata, and the workspace's uploaded CSV files."""
    return {"generated": datasets.catalog(), "uploaded": services.storage.list_csv(workspace)}


@router.post("/api/datasets/csv", status_code=201, response_model=CsvOut)
def upload_dataset(
    services: ServicesDep,
    workspace: WorkspaceDep,
    file: Annotated[UploadFile, File(description="A CSV file: numbers, the target last.")],
) -> dict:
    """Upload a CSV dataset: numeric columns, the last one the target, an optional header."""
    content = file.file.read(services.settings.max_body_bytes + 1)
    return upload_csv(services, workspace, file.filename or "", content)


# --- dynamics ------------------------------------------------------------------------------------


@router.post("/api/modules/{module_id}/dynamics")
def module_dynamics(
    request: DynamicsRequest, record: RecordDep, services: ServicesDep, workspace: WorkspaceDep
) -> dict:
    """Run a library network's dynamics for T sweeps and collect its states."""
    return compute_dynamics(services, workspace, record, request)


# --- the panels (HTML for htmx) ------------------------------------------------------------------


def _render(request: Request, name: str, context: dict, status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("/m/{module_id}/train-panel", include_in_schema=False)
def train_panel(
    request: Request, record: RecordDep, services: ServicesDep, workspace: WorkspaceDep
) -> HTMLResponse:
    context = train_panel_context(services, workspace, record)
    return _render(request, "partials/train_form.html", context)


@router.post("/m/{module_id}/train", include_in_schema=False)
async def train_from_form(
    request: Request, record: RecordDep, services: ServicesDep, workspace: WorkspaceDep
) -> HTMLResponse:
    form = await request.form()
    network = await asyncio.to_thread(is_network, services, record)
    body = train_request_from_form(form, network)
    single = form.get("action") == "step"  # Step: start paused, then train one batch
    if single:
        body = body.model_copy(update={"paused": True})
    job = await asyncio.to_thread(start_training, services, workspace, record, body)
    if single:
        await asyncio.to_thread(services.jobs.step, workspace, job["job"])
    job = find_job(services, workspace, job["job"], with_view=True)
    context = progress_context(job, form=True)
    return _render(request, "partials/train_job.html", context, 200)


FormFlag = Annotated[bool, Query(description="The module page's fragment (beside its form).")]


@router.get("/m/{module_id}/jobs/{job_id}/progress", include_in_schema=False)
def job_progress(
    request: Request,
    record: RecordDep,
    job_id: JobPath,
    services: ServicesDep,
    form: FormFlag = False,
) -> HTMLResponse:
    job = module_job(services, record, job_id)
    context = progress_context(job, polled=True, form=form)
    return _render(request, "partials/train_progress.html", context)


@router.post("/m/{module_id}/datasets/csv", include_in_schema=False)
def upload_from_page(
    request: Request,
    record: RecordDep,
    services: ServicesDep,
    file: Annotated[UploadFile, File()],
) -> HTMLResponse:
    workspace = record.workspace
    content = file.file.read(services.settings.max_body_bytes + 1)
    uploaded = upload_csv(services, workspace, file.filename or "", content)
    return _render(
        request,
        "partials/train_csv.html",
        {
            "csv": uploaded,
            "datasets": datasets.catalog(),
            "uploads": services.storage.list_csv(workspace),
        },
    )


@router.get("/m/{module_id}/dynamics-panel", include_in_schema=False)
def dynamics_panel(request: Request, record: RecordDep, services: ServicesDep) -> HTMLResponse:
    context = dynamics_panel_context(services, record)
    if context is None:
        return HTMLResponse("")
    return _render(request, "partials/dynamics_form.html", context)


@router.post("/m/{module_id}/dynamics", include_in_schema=False)
async def dynamics_from_form(
    request: Request, record: RecordDep, services: ServicesDep, workspace: WorkspaceDep
) -> HTMLResponse:
    form = await request.form()
    parsed = dynamics_request_from_form(form)
    result = await asyncio.to_thread(compute_dynamics, services, workspace, record, parsed)
    return _render(request, "partials/dynamics_result.html", {"result": result})


# --- play, pause, step and reset from the page ---------------------------------------------------

FOCUS_AFTER = {
    "pause": "train-play",
    "resume": "train-pause",
    "step": "train-step",
    "stop": "train-reset",
}


@router.post("/m/{module_id}/jobs/{job_id}/{action}", include_in_schema=False)
def play_from_page(
    request: Request,
    record: RecordDep,
    job_id: JobPath,
    action: Annotated[Literal["pause", "resume", "step", "stop"], Path()],
    services: ServicesDep,
    workspace: WorkspaceDep,
    form: FormFlag = False,
) -> HTMLResponse:
    """A control of the progress fragment (or the form's Stop); answers the fragment in its
    new state (a job that ended meanwhile just shows that it ended)."""
    module_job(services, record, job_id)  # the job of this module, or a 404
    jobs = services.jobs
    try:
        if action == "stop":
            if jobs.stop(workspace, job_id) is None:
                raise no_job(job_id)
        else:
            getattr(jobs, action)(workspace, job_id)
    except PlaygroundError as error:
        if error.status_code != 409:
            raise
    job = module_job(services, record, job_id)
    context = progress_context(job, polled=True, form=form)
    # the keyboard focus stays on the controls (the button pressed, or the one that took its
    # place): after the form's Stop, on that button (Train once the job ended); else once the
    # job ended, on Reset
    if action == "stop" and form:
        context["focus"] = "train-start" if context["finished"] else "train-stop-job"
    elif context["finished"]:
        context["focus"] = "train-reset"
    else:
        context["focus"] = FOCUS_AFTER[action]
    return _render(request, "partials/train_progress.html", context)


@router.post("/m/{module_id}/train/reset", include_in_schema=False)
def reset_from_page(request: Request, record: RecordDep, services: ServicesDep) -> HTMLResponse:
    """Reset: the module back to its initial parameters; the job area says so (the form keeps
    its settings) and the page's tree reloads."""
    updated = reset_module(services, record)
    return _render(request, "partials/train_reset.html", {"module": updated})


@router.get("/m/{module_id}/jobs/{job_id}/frames", include_in_schema=False)
async def job_frames(
    job_id: JobPath, request: Request, services: ServicesDep, workspace: WorkspaceDep
) -> StreamingResponse:
    """The live frames of a playing job (server-sent ``frame`` events, at most one every
    ``FRAME_SECONDS``, only when something changed); ``end`` once it ended. Bounded like the
    job's events: ``event_stream_seconds`` long, ``max_event_streams_per_workspace`` at once."""
    jobs = services.jobs
    find_job(services, workspace, job_id)
    lifetime = services.settings.event_stream_seconds
    release = services.event_streams.acquire(workspace)

    async def frames(lifetime: float):
        yield "retry: 2000\n\n"
        seen, started, last_sent = None, time.monotonic(), time.monotonic()
        while True:
            job = jobs.get(workspace, job_id)
            if job is None or job.finished:
                record = jobs.describe(workspace, job_id, with_view=True)
                if record is not None:
                    yield sse_event("end", frame(record))
                return
            now = time.monotonic()
            if job.version != seen:
                seen, last_sent = job.version, now
                record = await asyncio.to_thread(job.public, True)
                yield sse_event("frame", await asyncio.to_thread(frame, record))
            elif now - last_sent > EVENTS_KEEPALIVE_SECONDS:
                last_sent = now
                yield ": keep-alive\n\n"
            if now - started > lifetime:
                yield sse_event("timeout", {"job": job_id, "seconds": lifetime})
                return
            # one frame every FRAME_SECONDS, whatever making it took
            await asyncio.sleep(max(0.02, FRAME_SECONDS - (time.monotonic() - now)))
            if await request.is_disconnected():
                return

    return event_stream(frames(lifetime), on_close=release)
