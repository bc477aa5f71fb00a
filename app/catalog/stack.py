"""The ``stack`` kind: an ``eqx.nn.Sequential`` of catalog layers built row by row in the form.

Each row is one layer (``eqx.nn.Linear``, ``eqx.nn.MLP`` or ``eqx.nn.LayerNorm``, with that
kind's parameters minus the seed) and the activation after it. An activation other than
``identity`` becomes an ``eqx.nn.Lambda`` after its layer. The stack's seed gives every row its
key: ``keys = jax.random.split(jax.random.PRNGKey(seed), len(rows))``, row ``i`` taking
``keys[i]`` (rows without randomness, like LayerNorm, leave theirs unused).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from app.catalog.base import (
    ACTIVATION_CODE,
    ACTIVATIONS,
    Activation,
    CatalogEntry,
    Seed,
    ShapeTuple,
    field_error,
    script,
    statement,
)
from app.catalog.equinox_kinds import EqxLinearLayer, LayerNormLayer, MLPLayer, StackLayer

MAX_ROWS = 64

STACK_LAYERS: dict[str, type[StackLayer]] = {
    "eqx.nn.Linear": EqxLinearLayer,
    "eqx.nn.MLP": MLPLayer,
    "eqx.nn.LayerNorm": LayerNormLayer,
}
"""The kinds a row can be, and the model of each row's params (the kind's params minus seed)."""

StackLayerKind = Literal["eqx.nn.Linear", "eqx.nn.MLP", "eqx.nn.LayerNorm"]


class StackRow(BaseModel):
    """One row of a stack: a layer and the activation after it."""

    model_config = ConfigDict(extra="forbid")

    kind: StackLayerKind = Field(
        "eqx.nn.Linear",
        title="Layer",
        description="The kind of layer: eqx.nn.Linear, eqx.nn.MLP or eqx.nn.LayerNorm.",
        json_schema_extra={"widget": "select"},
    )
    params: EqxLinearLayer | MLPLayer | LayerNormLayer = Field(
        default_factory=dict,
        validate_default=True,
        title="Parameters",
        description="The layer's parameters, as for the kind on its own but without a seed: "
        "the stack's seed gives every row its key.",
        json_schema_extra={"widget": "params"},
    )
    activation: Activation = Field(
        "identity",
        title="Activation",
        description="Applied after the layer: relu, tanh, sigmoid, gelu, softplus, silu, or "
        "identity (none).",
        json_schema_extra={"widget": "select"},
    )

    @field_validator("params", mode="before")
    @classmethod
    def _params_of_kind(cls, value: Any, info: ValidationInfo) -> Any:
        layer = STACK_LAYERS.get(info.data.get("kind", ""))
        if layer is None:
            return EqxLinearLayer()  # the kind is wrong and reported: no second error here
        if isinstance(value, layer):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump()
        return layer.model_validate({} if value is None else value)


def _default_rows() -> list[StackRow]:
    return [
        StackRow(
            kind="eqx.nn.Linear",
            params=EqxLinearLayer(in_features=2, out_features=16),
            activation="relu",
        ),
        StackRow(kind="eqx.nn.Linear", params=EqxLinearLayer(in_features=16, out_features=1)),
    ]


class StackEntry(CatalogEntry):
    """An ``eqx.nn.Sequential`` of rows; each row's input size must be the previous output."""

    kind: ClassVar[str] = "stack"
    title: ClassVar[str] = "Stack of layers"
    summary: ClassVar[str] = (
        "An eqx.nn.Sequential built row by row: each row a layer and the activation after it."
    )
    group: ClassVar[str] = "Compose"

    rows: list[StackRow] = Field(
        default_factory=_default_rows,
        min_length=1,
        max_length=MAX_ROWS,
        title="Rows",
        description="The layers in order; each takes the previous one's output.",
        json_schema_extra={"widget": "rows"},
    )
    seed: Seed = 0

    @model_validator(mode="after")
    def _sizes_fit(self) -> StackEntry:
        for index in range(1, len(self.rows)):
            before, layer = self.rows[index - 1].params, self.rows[index].params
            if layer.input_size() != before.output_size():
                raise field_error(
                    ("rows", index, "params", layer.input_field),
                    f"row {index + 1} takes inputs of size {layer.input_size()}, but row "
                    f"{index} gives outputs of size {before.output_size()}",
                    layer.input_size(),
                )
        return self

    def build(self) -> eqx.nn.Sequential:
        keys = jax.random.split(jax.random.PRNGKey(self.seed), len(self.rows))
        layers: list[Any] = []
        for row, key in zip(self.rows, keys, strict=True):
            layers.append(row.params.build_with_key(key))
            if row.activation != "identity":
                layers.append(eqx.nn.Lambda(ACTIVATIONS[row.activation]))
        return eqx.nn.Sequential(layers)

    def code(self) -> str:
        body = [
            f"keys = jax.random.split(jax.random.PRNGKey({self.seed}), {len(self.rows)})",
            "model = eqx.nn.Sequential(",
            "    [",
        ]
        for index, row in enumerate(self.rows):
            body.append(
                statement("", row.params.constructor_code(f"keys[{index}]"), indent=8, suffix=",")
            )
            if row.activation != "identity":
                body.append(f"        eqx.nn.Lambda({ACTIVATION_CODE[row.activation]}),")
        body += ["    ]", ")"]
        imports = ["import jax", "import equinox as eqx"]
        if any("jnp." in line for line in body):
            imports.insert(1, "import jax.numpy as jnp")
        return script(imports, *body)

    def example_input_shape(self) -> ShapeTuple:
        return (self.rows[0].params.input_size(),)

    def array_shapes(self) -> Iterator[ShapeTuple]:
        for row in self.rows:
            yield from row.params.array_shapes()

    def estimated_parameters(self) -> int:
        return sum(row.params.estimated_parameters() for row in self.rows)

    def estimated_leaves(self) -> int:
        return sum(row.params.estimated_leaves() for row in self.rows)

    def largest_array_elements(self) -> int:
        return max(row.params.largest_array_elements() for row in self.rows)
