"""Lessons: sequences of steps a presenter walks a room through, kept as data files.

- :mod:`app.lessons.model`: the pydantic model of a lesson file (steps, presets, Markdown).
- :mod:`app.lessons.library`: reading and validating ``files/*.toml`` (at start-up).
- :mod:`app.lessons.steps`: opening a step (its module in the visitor's workspace) and
  running its preset.
- :mod:`app.lessons.pages`: what a step's pages show: opening and running it for a
  workspace (noted in its rooms), the step page's context and its result fragment's.
"""

from app.lessons.library import LessonFileError, lessons, load_lessons
from app.lessons.model import Lesson, LessonModule, Step, render_markdown

__all__ = [
    "Lesson",
    "LessonFileError",
    "LessonModule",
    "Step",
    "lessons",
    "load_lessons",
    "render_markdown",
]
