"""The library's reference, ``docs/library.md``, as a page of the playground (``/library``).

The same file is the repository's documentation and the page, so the two cannot drift. It is
rendered with the lessons' Markdown renderer (raw HTML escaped); every ``##`` and ``###``
heading gets an id made from its words, so the training panel can link to a section.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from app.lessons import render_markdown

LIBRARY_DOC = Path(__file__).resolve().parent.parent / "docs" / "library.md"
PROTOCOL_ANCHOR = "the-reference-task-and-its-training-protocol"
"""The section the training panel links to."""

_HEADING = re.compile(r"<h([23])>(.*?)</h\1>", re.S)


@dataclass(frozen=True)
class Section:
    level: int
    title: str
    anchor: str


@dataclass(frozen=True)
class Reference:
    title: str
    body: str
    """The page's HTML, the first heading left out (the page shows ``title`` itself)."""
    sections: tuple[Section, ...]


def slug(text: str) -> str:
    """A heading's id as GitHub makes it: lower case, punctuation dropped, spaces to ``-``."""
    words = re.sub(r"[^\w\- ]", "", html.unescape(re.sub(r"<[^>]+>", "", text)).lower())
    return words.strip().replace(" ", "-")


def library_reference(path: Path = LIBRARY_DOC) -> Reference:
    """``docs/library.md`` as HTML with its table of contents."""
    text = path.read_text(encoding="utf-8")
    first, _, rest = text.partition("\n")
    sections: list[Section] = []

    def anchor(match: re.Match) -> str:
        level, inner = int(match.group(1)), match.group(2)
        section = Section(level, html.unescape(re.sub(r"<[^>]+>", "", inner)), slug(inner))
        sections.append(section)
        return f'<h{level} id="{section.anchor}">{inner}</h{level}>'

    body = _HEADING.sub(anchor, render_markdown(rest))
    return Reference(first.lstrip("# ").strip(), body, tuple(sections))
