"""Runs every ```python block of the README (the library tour), in order, in one namespace."""

import re
from pathlib import Path

import pytest

TOUR = Path(__file__).resolve().parent.parent / "README.md"

BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def test_blocks_are_found():
    blocks = python_blocks(TOUR.read_text())
    assert len(blocks) >= 5
    assert "from library.modules import Linear" in blocks[0]


@pytest.mark.slow  # end to end: the README's whole library tour
def test_every_python_block_runs_in_order(capsys):
    namespace: dict = {"__name__": "__tour__"}
    for number, block in enumerate(python_blocks(TOUR.read_text()), start=1):
        try:
            exec(compile(block, f"{TOUR.name}[block {number}]", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            pytest.fail(f"block {number} of {TOUR} failed: {error!r}\n{block}")
