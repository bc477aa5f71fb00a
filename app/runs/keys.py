"""The cache key of a compiled run, and what changed between two keys, in words."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from app.runs.spec import shape_text
from app.runs.structure import StructureKey


@dataclass(frozen=True)
class RunKey:
    """Everything a compiled run depends on."""

    mode: str  # "run" or "sweep"
    kind: str
    apply: str  # the catalog's forward pass, as Python text
    structure: StructureKey
    function: str
    loss: str | None
    wrt: str
    transforms: tuple[str, ...]
    vmap_axis: int | None
    batched: bool
    input_shape: tuple[int, ...]
    input_dtype: str
    sweep_points: int | None = None
    statics: tuple[tuple[str, str], ...] = field(default=(), compare=False, hash=False)
    """(path, value) of the module's static parts, to say which one changed."""

    def parts(self) -> dict[str, Any]:
        """The key's parts with the names the page shows when one changes."""
        structure = self.structure
        return {
            "mode": self.mode,
            "module kind": self.kind,
            "forward pass": self.apply,
            "module structure (static fields)": (
                structure.treedef,
                structure.statics,
                structure.identity,
            ),
            "parameter shapes": tuple((leaf.shape, leaf.dtype) for leaf in structure.arrays),
            "function": self.function if self.function != "loss" else f"loss {self.loss}",
            "differentiate w.r.t.": self.wrt,
            "transforms": self.transforms,
            "vmap axis": self.vmap_axis,
            "batched forward": self.batched,
            "input shape": self.input_shape,
            "input dtype": self.input_dtype,
            "sweep points": self.sweep_points,
        }

    def record(self) -> KeyRecord:
        """This key as another process can hold and compare it (:class:`KeyRecord`)."""
        parts = self.parts()
        structure = self.structure
        parts["module structure (static fields)"] = (
            _text(structure.treedef),
            tuple(_text(leaf.value) for leaf in structure.statics),
            None if structure.identity is None else (os.getpid(), structure.identity),
        )
        return KeyRecord(tuple(parts.items()), self.statics)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _text(value: Any) -> str:
    """A part of a key as text that is the same in every process: a function by its module
    and name, anything else by its ``repr`` without memory addresses."""
    name = getattr(value, "__qualname__", None)
    module = getattr(value, "__module__", None)
    if callable(value) and isinstance(name, str) and isinstance(module, str):
        return f"{module}.{name}"
    return _ADDRESS.sub("", repr(value))


@dataclass(frozen=True)
class KeyRecord:
    """A :class:`RunKey` as the web process holds it: its parts by name, as values that pickle
    and compare equal across processes (the structure as text). Runs send it back from the
    worker; "what changed" and the compile scopes (app.runs.scopes) compare these."""

    parts: tuple[tuple[str, Any], ...]
    statics: tuple[tuple[str, str], ...] = field(default=(), compare=False, hash=False)

    @property
    def mode(self) -> str:
        return self.parts[0][1]


def _part_text(name: str, value: Any) -> str:
    if name == "input shape":
        return shape_text(value)
    if name == "transforms":
        return ", ".join(value) if value else "none"
    return str(value)


def key_changes(old: KeyRecord | None, new: KeyRecord) -> list[str]:
    """What differs between two keys, in words: ``input shape (5, 2) -> (6, 2)``."""
    if old is None:
        return []
    changes = []
    old_parts, new_parts = dict(old.parts), dict(new.parts)
    for name, value in new_parts.items():
        before = old_parts[name]
        if before == value:
            continue
        if name in ("vmap axis", "differentiate w.r.t.") and "-" in (before, value):
            continue
        if name == "vmap axis" and None in (before, value):
            continue
        if name == "module structure (static fields)":
            changes.append(name + _static_change(old.statics, new.statics))
        elif name == "parameter shapes":
            changes.append(
                f"parameter shapes ({len(before)} arrays -> {len(value)} arrays)"
                if len(before) != len(value)
                else "parameter shapes"
            )
        elif name in ("forward pass", "mode"):
            changes.append(name)
        else:
            changes.append(f"{name} {_part_text(name, before)} -> {_part_text(name, value)}")
    return changes


def _static_change(before: tuple, after: tuple) -> str:
    """``: .activation relu -> tanh`` for the static parts whose value changed."""
    old = dict(before)
    changed = [
        f"{path} {old[path]} -> {value}"
        for path, value in after
        if path in old and old[path] != value
    ]
    if not changed:
        return ""
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return ": " + ", ".join(changed[:3]) + more
