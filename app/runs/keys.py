"""The cache key of a compiled run, and what changed between two keys, in words."""

from __future__ import annotations

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


def _part_text(name: str, value: Any) -> str:
    if name == "input shape":
        return shape_text(value)
    if name == "transforms":
        return ", ".join(value) if value else "none"
    return str(value)


def key_changes(old: RunKey | None, new: RunKey) -> list[str]:
    """What differs between two keys, in words: ``input shape (5, 2) -> (6, 2)``."""
    if old is None:
        return []
    changes = []
    old_parts, new_parts = old.parts(), new.parts()
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
