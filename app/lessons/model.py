"""What a lesson is: a pydantic model of its data file, with every step's module and preset
checked against the same models the API uses (the catalog, ``RunRequest``, ``TrainRequest``,
``DynamicsRequest``), and its Markdown rendered once, safely."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.catalog import CATALOG, CatalogEntry, parse_spec
from app.runs.code import run_expression
from app.runs.spec import RunRequest
from app.training.service import DynamicsRequest, TrainRequest

MAX_STEPS = 12
MAX_TEXT = 4_000

# CommonMark with raw HTML off: a lesson's text can never inject markup or script, and
# markdown-it refuses javascript:, vbscript: and data: links on its own.
_markdown = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")


def render_markdown(text: str) -> str:
    """Markdown as HTML, raw HTML escaped."""
    return _markdown.render(text)


class LessonModule(BaseModel):
    """A step's module: a catalog kind and its params, as ``POST /api/modules`` takes them."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="A kind of the catalog (GET /api/catalog).")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_for_its_kind(self) -> LessonModule:
        if self.kind not in CATALOG:
            raise ValueError(f"unknown kind {self.kind!r}; the catalog has {', '.join(CATALOG)}")
        parse_spec(self.kind, self.params)  # the kind's own model validates the params
        return self

    def spec(self) -> CatalogEntry:
        return parse_spec(self.kind, self.params)


class Step(BaseModel):
    """One step: a short text, a module, at most one preset and a question to try."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=80)
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="Markdown, no raw HTML.")
    question: str = Field(min_length=1, max_length=600, description="Something to try (Markdown).")
    module: LessonModule
    path: str | None = Field(
        None, max_length=200, description="A node of the tree the step points at (its keystr)."
    )
    keep_trained: bool = Field(
        False,
        description="Reuse the workspace's newest module of this spec even when it was trained "
        "(a step that continues the previous one), instead of a fresh one.",
    )
    run: RunRequest | None = Field(None, description="A run preset (POST /api/modules/{id}/run).")
    training: TrainRequest | None = Field(
        None, description="A training preset (POST /api/modules/{id}/train)."
    )
    dynamics: DynamicsRequest | None = Field(
        None, description="A dynamics preset (POST /api/modules/{id}/dynamics)."
    )
    batch_mean: bool = Field(
        False,
        description="With a per-example gradient run (grad then vmap): also run the batch "
        "gradient on the same input and show that the per-example mean equals it.",
    )

    @model_validator(mode="after")
    def _one_preset(self) -> Step:
        given = [name for name in ("run", "training", "dynamics") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"a step has at most one preset; this one has {' and '.join(given)}")
        if self.batch_mean and not (
            self.run and self.run.transforms[:2] == ["grad", "vmap"] and self.run.wrt == "params"
        ):
            raise ValueError("batch_mean needs a run preset whose transforms start grad, vmap")
        return self

    @property
    def preset(self) -> Literal["run", "training", "dynamics"] | None:
        for name in ("run", "training", "dynamics"):
            if getattr(self, name) is not None:
                return name  # type: ignore[return-value]
        return None

    def preset_body(self) -> dict | None:
        """The preset as the JSON body of its API endpoint."""
        body = getattr(self, self.preset) if self.preset else None
        return body.model_dump(mode="json", exclude_unset=True) if body is not None else None

    @property
    def preset_label(self) -> str:
        """The preset in a line: the run's JAX call and input, the training's length and data."""
        if self.run is not None:
            run = self.run
            call = run_expression(
                function=run.function,
                wrt=run.wrt,
                transforms=run.transforms,
                vmap_axis=run.vmap_axis,
                simple_model=True,
            )
            shape = run.input.shape
            where = f" {tuple(shape)}" if shape is not None else ""
            return f"{call}, x: {run.input.init}{where}"
        if self.training is not None:
            train = self.training
            length = f"{train.epochs} epochs" if train.epochs else f"{train.steps or 500} steps"
            data = train.dataset
            name = getattr(data, "name", None) or getattr(data, "csv_id", None) or data or "default"
            rate = f", learning rate {train.learning_rate:g}" if train.learning_rate else ""
            return f"{length} on {name}{rate}"
        if self.dynamics is not None:
            return f"{self.dynamics.steps} sweeps, {self.dynamics.phase} phase"
        return ""

    @cached_property
    def text_html(self) -> str:
        return render_markdown(self.text)

    @cached_property
    def question_html(self) -> str:
        return render_markdown(self.question)


class Lesson(BaseModel):
    """A lesson: an ordered sequence of steps (a data file under ``app/lessons/files``)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    order: int = Field(ge=0, description="Where the lesson comes in the list.")
    title: str = Field(min_length=1, max_length=80)
    summary: str = Field(min_length=1, max_length=400)
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)

    def step(self, number: int) -> Step | None:
        """Step ``number``, counted from 1."""
        return self.steps[number - 1] if 1 <= number <= len(self.steps) else None

    def step_url(self, number: int) -> str:
        return f"/lessons/{self.id}/{number}"

    def present_url(self, number: int) -> str:
        return f"/lessons/{self.id}/{number}/present"
