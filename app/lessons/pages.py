"""What a lesson step's pages show: opening and running a step for a workspace, the step's
page context (its tree, matrices, neighbours) and its result fragment's context.

``app.routers.lessons`` serves the pages and the API; everything they compute is here.
"""

from __future__ import annotations

import re
from typing import Any

from app.catalog import CatalogEntry
from app.devices import device_label
from app.lessons.model import Lesson, Step
from app.lessons.steps import StepRun, find_step, module_of_step, open_step, run_preset
from app.links import join_url
from app.modules import build_module, model_roles
from app.pages import find_layermaps, open_depth
from app.rooms import qr_svg
from app.runs.service import compile_scope
from app.runs.view import result_rows
from app.services import Services
from app.store import ModuleRecord
from app.training.progress import progress_context
from app.trees import describe_tree

PAGE_TREE_NODES = 400
"""Nodes of the module's tree shown on a step's page."""


def opened(
    services: Services, workspace: str, lesson: Lesson, number: int
) -> tuple[ModuleRecord, bool]:
    """Open step ``number`` in ``workspace`` (noted in its rooms): its module, and whether
    this call built it."""
    step = find_step(lesson, number)
    built: list[bool] = []

    def build(spec: CatalogEntry) -> ModuleRecord:
        built.append(True)
        return build_module(services, workspace, spec)[0]

    record = open_step(services.store, workspace, step, build)
    services.rooms.record(workspace, lesson.id, number)
    return record, bool(built)


def run_step(
    services: Services, workspace: str, lesson: Lesson, number: int, module_id: str, include
) -> tuple[ModuleRecord, Step, StepRun]:
    """Run step ``number``'s preset on the workspace's module ``module_id`` (noted in its
    rooms)."""
    step = find_step(lesson, number)
    record = module_of_step(services.store, workspace, step, module_id)
    # the room's view of compiling when the workspace is in one, else the workspace's
    scope = compile_scope(services, workspace)
    outcome = run_preset(services, record, step, include, scope)
    services.rooms.record(workspace, lesson.id, number, ran=True, job=outcome.job)
    return record, step, outcome


def step_context(
    services: Services,
    workspace: str,
    lesson: Lesson,
    number: int,
    record: ModuleRecord,
    mode: str,
) -> dict:
    """What ``lesson_step.html`` needs to show step ``number`` (``mode`` page or present)."""
    step = find_step(lesson, number)
    model = services.store.load(record)
    tree = describe_tree(model, roles=model_roles(model), max_nodes=PAGE_TREE_NODES)
    url = lesson.present_url if mode == "present" else lesson.step_url
    return {
        "mode": mode,
        "lesson": lesson,
        "step": step,
        "number": number,
        "total": len(lesson.steps),
        "module": record,
        "tree": tree,
        "open_depth": open_depth(tree),
        "layermaps": _breakable(find_layermaps(model)),
        "code": record.spec().code(),
        "device": device_label(),
        "notices": services.store.pop_notices(workspace),
        "prev_url": url(number - 1) if number > 1 else None,
        "next_url": url(number + 1) if number < len(lesson.steps) else None,
    }


def open_step_page(
    services: Services, workspace: str, lesson: Lesson, number: int, mode: str
) -> dict:
    """Open the step in the workspace, then what ``lesson_step.html`` needs to show it."""
    record, _ = opened(services, workspace, lesson, number)
    return step_context(services, workspace, lesson, number, record, mode)


def room_context(services: Services, workspace: str, lesson_id: str) -> dict:
    """The room of this lesson the workspace joined (and its nickname there), if any."""
    rooms = services.rooms.rooms_of(workspace, lesson_id)
    if not rooms:
        return {}
    return {"room": rooms[0], "nickname": services.rooms.participant(rooms[0], workspace)}


def presenting_context(request, services: Services, lesson_id: str, room: str | None) -> dict:
    """The room the presenter shows (its join link and QR code), if ``room`` is one of this
    lesson."""
    found = services.rooms.get(room) if room else None
    if found is not None and found.lesson == lesson_id and found.id == room:
        url = join_url(request, services.settings, found.code)
        return {"presenting": found, "join_url": url, "qr": qr_svg(url)}
    return {}


def result_context(
    services: Services, workspace: str, record: ModuleRecord, step: Step, outcome: StepRun
) -> dict:
    """What ``partials/lesson_result.html`` needs: the run, the training job's progress, or
    the dynamics."""
    context: dict[str, Any] = {"step": step, "module": record, "run": outcome}
    if outcome.preset == "run":
        model_node = describe_tree(outcome.model, roles=model_roles(outcome.model), max_nodes=300)
        context["payload"] = outcome.answer
        context["view"] = result_rows(
            outcome.outcome, outcome.answer["output"], model_node, step.run.wrt
        )
        context["shapes"] = result_shapes(outcome.answer, model_node)
    elif outcome.preset == "training":
        job = services.jobs.describe(workspace, outcome.job, True)
        context.update(progress_context(job))
    else:
        context["result"] = outcome.answer
    return context


def result_shapes(answer: dict, model_node: dict, limit: int = 8) -> dict:
    """The input's shape, and each top-level node of the result beside the model's node of
    the same name (``weight f32[5,2,3]`` beside ``f32[2,3]``): the point of a vmap step."""
    given = answer.get("input") or {}
    short = {"float32": "f32", "int32": "i32"}.get(given.get("dtype"), given.get("dtype", ""))
    shape = ",".join(str(n) for n in given.get("shape") or [])
    output = answer.get("output") or {}
    model = {child["name"]: child["summary"] for child in model_node.get("children") or []}
    children = output.get("children") or []
    rows = [(child["name"], child["summary"], model.get(child["name"], "")) for child in children][
        :limit
    ]
    if not children:
        rows = [("result", output.get("summary", ""), "")]
    return {"input": f"{short}[{shape}]", "init": given.get("init", ""), "rows": rows}


def _breakable(layermaps: list[dict]) -> list[dict]:
    """The matrices with a break allowed inside CamelCase names (a zero-width space), so a
    narrow column wraps ``FrozenFullyConnected`` between its words."""
    for lmap in layermaps:
        for _, cells in lmap["rows"]:
            for cell in cells:
                if cell:
                    cell["type"] = re.sub(r"(?<=[a-z])(?=[A-Z])", "\u200b", cell["type"])
    return layermaps
