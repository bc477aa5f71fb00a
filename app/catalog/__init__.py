"""The catalog: every kind of module the playground can build, one pydantic model per kind.

Each model is the single source of truth for its kind: it renders the HTML form (titles,
descriptions, bounds, widget hints in ``json_schema_extra``), validates the JSON API, builds the
module, runs its forward pass and writes the Python code that rebuilds it.

>>> entry = parse_spec("library.Linear", {"in_dim": 2, "out_dim": 3})
>>> model = entry.build()  # library.modules.Linear(2, 3, jax.random.PRNGKey(0))

- ``base``: :class:`CatalogEntry` (and :class:`KeyedEntry`), the field types the entries share
  (sizes, seeds, activations) and the helpers that write exported code.
- ``library_kinds``: the library's modules (``library.Linear``, layers, adapters) and
  ``library.network``, the reference network.
- ``equinox_kinds``: Equinox's own layers (``eqx.nn.Linear``, ``MLP``, convolutions, cells,
  ``LayerNorm``, ``Embedding``, ``MultiheadAttention``).
- ``stack``: ``stack``, an ``eqx.nn.Sequential`` built row by row.
- ``custom``: ``custom``, a class defined in the form with the expression language.
- here: :data:`CATALOG` (kind -> entry class, the seed first), :func:`parse_spec`,
  :func:`params_from_form` and :func:`describe_catalog`. How to add a kind:
  ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from app.catalog.base import (
    ACTIVATIONS,
    BATCH,
    MAX_SEED,
    MAX_SIZE,
    Activation,
    CatalogEntry,
    KeyedEntry,
)
from app.catalog.custom import CustomField, CustomModuleEntry
from app.catalog.equinox_kinds import (
    Conv1dEntry,
    Conv2dEntry,
    EmbeddingEntry,
    EqxLinearEntry,
    GRUCellEntry,
    LayerNormEntry,
    LSTMCellEntry,
    MLPEntry,
    MultiheadAttentionEntry,
)
from app.catalog.library_kinds import (
    FerromagneticEntry,
    FrozenFullyConnectedEntry,
    FullyConnectedEntry,
    LibraryLinearEntry,
    NetworkEntry,
    OutputLayerEntry,
    RecurrentDiscreteEntry,
    RecurrentTanhEntry,
)
from app.catalog.stack import STACK_LAYERS, StackEntry, StackRow
from app.formdata import nest_pairs

__all__ = [
    "SEED_KIND",
    "ACTIVATIONS",
    "BATCH",
    "CATALOG",
    "MAX_SEED",
    "MAX_SIZE",
    "STACK_LAYERS",
    "Activation",
    "CatalogEntry",
    "CustomField",
    "CustomModuleEntry",
    "KeyedEntry",
    "NetworkEntry",
    "StackEntry",
    "StackRow",
    "UnknownKind",
    "describe_catalog",
    "entry_class",
    "params_from_form",
    "parse_spec",
]

CATALOG: dict[str, type[CatalogEntry]] = {
    entry.kind: entry
    for entry in (
        LibraryLinearEntry,
        RecurrentDiscreteEntry,
        RecurrentTanhEntry,
        FerromagneticEntry,
        FullyConnectedEntry,
        FrozenFullyConnectedEntry,
        OutputLayerEntry,
        NetworkEntry,
        EqxLinearEntry,
        MLPEntry,
        Conv1dEntry,
        Conv2dEntry,
        GRUCellEntry,
        LSTMCellEntry,
        LayerNormEntry,
        EmbeddingEntry,
        MultiheadAttentionEntry,
        StackEntry,
        CustomModuleEntry,
    )
}
"""Every kind, in picker order: the seed's ``library.Linear`` first."""


class UnknownKind(ValueError):
    """A kind that is not in the catalog."""

    def __init__(self, kind: object) -> None:
        self.kind = kind
        known = ", ".join(CATALOG)
        super().__init__(f"unknown kind {str(kind)[:80]!r}; the kinds are: {known}")


SEED_KIND = "library.Linear"
"""The kind of a new visitor's first module (the seed's ``Linear(2, 3, PRNGKey(0))``)."""


def entry_class(kind: str) -> type[CatalogEntry]:
    """The catalog model of ``kind``; ``UnknownKind`` if there is none."""
    try:
        return CATALOG[kind]
    except (KeyError, TypeError):
        raise UnknownKind(kind) from None


def parse_spec(kind: str, params: Mapping[str, Any] | None) -> CatalogEntry:
    """Validate ``params`` for ``kind``.

    Raises ``UnknownKind`` (a ValueError) for an unknown kind and ``pydantic.ValidationError``
    (locations relative to ``params``) for bad parameters.
    """
    return entry_class(kind).model_validate({} if params is None else params)


def describe_catalog() -> list[dict[str, Any]]:
    """``[{"kind", "title", "summary", "group", "schema"}]`` for every kind, in picker order."""
    return [
        {
            "kind": kind,
            "title": entry.title,
            "summary": entry.summary,
            "group": entry.group,
            "schema": entry.model_json_schema(),
        }
        for kind, entry in CATALOG.items()
    ]


def params_from_form(
    kind: str, form: Mapping[str, Any] | Iterable[tuple[str, Any]]
) -> dict[str, Any]:
    """Turn flat HTML form fields into the nested params that ``parse_spec`` validates.

    - Dotted names nest: ``rows.0.params.in_features`` -> ``{"rows": [{"params": {...}}]}``;
      all-numeric keys become a list in index order (gaps left by removed rows close up).
    - Empty values are left out, so the model's default (or "missing") applies.
    - Values stay strings; the models parse them (``"3"``, ``"0.5"``, ``"2,3"`` shapes,
      ``"on"``/``"true"``/``"false"`` booleans).
    - A repeated name keeps its last value, so a checkbox can follow a hidden input of the same
      name holding ``false``: unchecked sends ``false``, checked sends ``false`` then ``on``.
    - Names whose first part is not a parameter of ``kind`` (``kind``, a CSRF token) are left out.
    - Non-text values (file uploads) are left out.

    Raises ``UnknownKind`` for an unknown kind, and a 422 ``PlaygroundError`` naming the field
    for a name ``app.formdata`` cannot read (too long or deep, an index that is not 0-9).
    """
    parameters = entry_class(kind).model_fields
    if isinstance(form, Mapping):
        multi_items = getattr(form, "multi_items", None)
        pairs = multi_items() if callable(multi_items) else form.items()
    else:
        pairs = form
    return nest_pairs(pairs, keep_empty=False, roots=parameters)
