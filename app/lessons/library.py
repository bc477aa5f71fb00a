"""The lessons shipped with the playground: every ``files/*.toml``, validated when loaded."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from app.lessons.model import Lesson

LESSONS_DIR = Path(__file__).resolve().parent / "files"


class LessonFileError(ValueError):
    """A lesson file that cannot be read or does not match :class:`Lesson`."""


def load_lesson(path: Path) -> Lesson:
    """One lesson file, validated; :class:`LessonFileError` names the file and the problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        lesson = Lesson.model_validate(data)
    except (tomllib.TOMLDecodeError, ValidationError) as error:
        raise LessonFileError(f"{path.name}: {error}") from error
    if lesson.id != path.stem.split("-", 1)[-1]:
        raise LessonFileError(f"{path.name}: its id {lesson.id!r} differs from the file's name")
    return lesson


def load_lessons(directory: Path = LESSONS_DIR) -> dict[str, Lesson]:
    """Every lesson of ``directory`` by id, in their ``order``."""
    lessons = [load_lesson(path) for path in sorted(directory.glob("*.toml"))]
    ids = [lesson.id for lesson in lessons]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise LessonFileError(f"two lesson files share the id {duplicates[0]!r}")
    return {lesson.id: lesson for lesson in sorted(lessons, key=lambda item: item.order)}


@lru_cache(maxsize=1)
def lessons() -> dict[str, Lesson]:
    """The shipped lessons (read and validated once per process)."""
    return load_lessons()
