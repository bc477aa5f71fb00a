"""Catalog entries for Equinox's own layers (``eqx.nn.*``).

Each takes its constructor's argument names; the key is always ``jax.random.PRNGKey(seed)``.
Equinox layers act on one example, not a batch: ``vmap`` them to batch.

``eqx.nn.Linear``, ``eqx.nn.MLP`` and ``eqx.nn.LayerNorm`` can also be rows of a ``stack``:
their parameters without the seed live in the ``*Layer`` models below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from app.catalog.base import (
    ACTIVATION_CODE,
    ACTIVATIONS,
    Activation,
    ArrayCounts,
    CatalogEntry,
    KeyedEntry,
    Seed,
    Shape,
    ShapeTuple,
    Size,
    field_error,
    script,
    statement,
)
from app.text import shape_text

USE_BIAS_HINT = {"widget": "checkbox"}
ACTIVATION_HINT = {"widget": "select"}
ACTIVATION_DESCRIPTION = "relu, tanh, sigmoid, gelu, softplus, silu or identity (no activation)."


def _use_bias(description: str = "Add a learned bias after the product.") -> Any:
    return Field(True, title="Use bias", description=description, json_schema_extra=USE_BIAS_HINT)


class StackLayer(ArrayCounts, BaseModel):
    """A layer that can be a row of a ``stack``: it maps a vector of one size to another."""

    model_config = ConfigDict(extra="forbid")

    input_field: ClassVar[str]
    """The parameter holding the input size (where a size mismatch in a stack is reported)."""

    def input_size(self) -> int:
        raise NotImplementedError

    def output_size(self) -> int:
        raise NotImplementedError

    def build_with_key(self, key: jax.Array) -> eqx.Module:
        raise NotImplementedError

    def constructor_code(self, key: str) -> str:
        raise NotImplementedError


# --- eqx.nn.Linear -------------------------------------------------------------------------------


class EqxLinearLayer(StackLayer):
    """The parameters of ``eqx.nn.Linear``, without the seed."""

    input_field: ClassVar[str] = "in_features"

    in_features: Size = Field(
        3,
        title="Input features",
        description="The size of the input vector.",
        json_schema_extra={"widget": "integer"},
    )
    out_features: Size = Field(
        4,
        title="Output features",
        description="The size of the output vector.",
        json_schema_extra={"widget": "integer"},
    )
    use_bias: bool = _use_bias()

    def input_size(self) -> int:
        return self.in_features

    def output_size(self) -> int:
        return self.out_features

    def build_with_key(self, key: jax.Array) -> eqx.nn.Linear:
        return eqx.nn.Linear(self.in_features, self.out_features, use_bias=self.use_bias, key=key)

    def constructor_code(self, key: str) -> str:
        return (
            f"eqx.nn.Linear({self.in_features}, {self.out_features}, "
            f"use_bias={self.use_bias}, key={key})"
        )

    def array_shapes(self) -> Iterator[ShapeTuple]:
        yield (self.out_features, self.in_features)
        if self.use_bias:
            yield (self.out_features,)


class EqxLinearEntry(EqxLinearLayer, KeyedEntry):
    """``eqx.nn.Linear``: ``weight @ x + bias`` on one example."""

    kind: ClassVar[str] = "eqx.nn.Linear"
    title: ClassVar[str] = "Linear (Equinox)"
    summary: ClassVar[str] = (
        "Equinox's affine layer: weight @ x + bias, with weight of shape (out, in), on one example."
    )
    group: ClassVar[str] = "Equinox"

    seed: Seed = 0

    def example_input_shape(self) -> ShapeTuple:
        return (self.in_features,)


# --- eqx.nn.MLP ----------------------------------------------------------------------------------


class MLPLayer(StackLayer):
    """The parameters of ``eqx.nn.MLP``, without the seed."""

    input_field: ClassVar[str] = "in_size"

    in_size: Size = Field(
        2,
        title="Input size",
        description="The size of the input vector.",
        json_schema_extra={"widget": "integer"},
    )
    out_size: Size = Field(
        1,
        title="Output size",
        description="The size of the output vector.",
        json_schema_extra={"widget": "integer"},
    )
    width_size: Size = Field(
        16,
        title="Width",
        description="The size of every hidden layer.",
        json_schema_extra={"widget": "integer"},
    )
    depth: int = Field(
        2,
        ge=0,
        le=10_000,
        title="Depth",
        description="The number of hidden layers (0: a single linear layer).",
        json_schema_extra={"widget": "integer"},
    )
    activation: Activation = Field(
        "relu",
        title="Activation",
        description="After every hidden layer: " + ACTIVATION_DESCRIPTION,
        json_schema_extra=ACTIVATION_HINT,
    )
    final_activation: Activation = Field(
        "identity",
        title="Final activation",
        description="After the last layer: " + ACTIVATION_DESCRIPTION,
        json_schema_extra=ACTIVATION_HINT,
    )
    use_bias: bool = _use_bias("Give the hidden layers a bias.")
    use_final_bias: bool = Field(
        True,
        title="Use final bias",
        description="Give the last layer a bias.",
        json_schema_extra={"widget": "checkbox", "advanced": True},
    )

    def input_size(self) -> int:
        return self.in_size

    def output_size(self) -> int:
        return self.out_size

    def build_with_key(self, key: jax.Array) -> eqx.nn.MLP:
        return eqx.nn.MLP(
            self.in_size,
            self.out_size,
            self.width_size,
            self.depth,
            activation=ACTIVATIONS[self.activation],
            final_activation=ACTIVATIONS[self.final_activation],
            use_bias=self.use_bias,
            use_final_bias=self.use_final_bias,
            key=key,
        )

    def constructor_code(self, key: str) -> str:
        return (
            f"eqx.nn.MLP({self.in_size}, {self.out_size}, width_size={self.width_size}, "
            f"depth={self.depth}, activation={ACTIVATION_CODE[self.activation]}, "
            f"final_activation={ACTIVATION_CODE[self.final_activation]}, "
            f"use_bias={self.use_bias}, use_final_bias={self.use_final_bias}, key={key})"
        )

    def code_imports(self) -> list[str]:
        imports = ["import jax", "import equinox as eqx"]
        if "tanh" in (self.activation, self.final_activation):
            imports.insert(1, "import jax.numpy as jnp")
        return imports

    def _linear_sizes(self) -> list[tuple[int, int, bool]]:
        """(in, out, bias) of the first hidden, one middle and the last linear layer."""
        if self.depth == 0:
            return [(self.in_size, self.out_size, self.use_final_bias)]
        first = (self.in_size, self.width_size, self.use_bias)
        middle = (self.width_size, self.width_size, self.use_bias)
        last = (self.width_size, self.out_size, self.use_final_bias)
        return [first, *([middle] * (self.depth - 1)), last]

    def array_shapes(self) -> Iterator[ShapeTuple]:
        for layer in self._linear_sizes():
            yield from EqxLinearLayer(
                in_features=layer[0], out_features=layer[1], use_bias=layer[2]
            ).array_shapes()

    # Closed forms, so a 10,000-layer request is priced without walking its layers.
    def estimated_parameters(self) -> int:
        if self.depth == 0:
            return self.out_size * (self.in_size + self.use_final_bias)
        first = self.width_size * (self.in_size + self.use_bias)
        middle = (self.depth - 1) * self.width_size * (self.width_size + self.use_bias)
        last = self.out_size * (self.width_size + self.use_final_bias)
        return first + middle + last

    def estimated_leaves(self) -> int:
        if self.depth == 0:
            return 1 + self.use_final_bias
        return self.depth * (1 + self.use_bias) + 1 + self.use_final_bias

    def largest_array_elements(self) -> int:
        if self.depth == 0:
            return self.out_size * self.in_size
        middle = self.width_size * self.width_size if self.depth > 1 else 0
        return max(self.width_size * self.in_size, middle, self.out_size * self.width_size)


class MLPEntry(MLPLayer, KeyedEntry):
    """``eqx.nn.MLP``: linear layers with an activation between them, on one example."""

    kind: ClassVar[str] = "eqx.nn.MLP"
    title: ClassVar[str] = "MLP"
    summary: ClassVar[str] = (
        "A multi-layer perceptron: depth hidden layers of width_size, an activation after each."
    )
    group: ClassVar[str] = "Equinox"

    seed: Seed = 0

    def example_input_shape(self) -> ShapeTuple:
        return (self.in_size,)


# --- eqx.nn.Conv1d / Conv2d ---------------------------------------------------------------------

MAX_PADDING = 64


def _padding(value: Any) -> int | str:
    """A whole number of zeros from 0 to 64 (``"2"`` from a form too), or SAME or VALID."""
    if isinstance(value, str):
        text = value.strip().upper()
        if text in ("SAME", "VALID"):
            return text
        if text.isdigit() and text.isascii():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PADDING:
        return value
    raise PydanticCustomError(
        "padding",
        "padding is a whole number from 0 to {limit}, SAME or VALID; got {value}",
        {"limit": MAX_PADDING, "value": repr(value)[:40]},
    )


Padding = Annotated[
    int | str,
    PlainValidator(
        _padding,
        json_schema_input_type=Annotated[int, Field(ge=0, le=MAX_PADDING)]
        | Literal["SAME", "VALID"],
    ),
]


class ConvEntry(KeyedEntry):
    """The parameters shared by ``eqx.nn.Conv1d`` and ``eqx.nn.Conv2d``."""

    num_spatial_dims: ClassVar[int]
    constructor: ClassVar[str]

    in_channels: Size = Field(
        1,
        title="Input channels",
        description="Channels of the input (its first axis).",
        json_schema_extra={"widget": "integer"},
    )
    out_channels: Size = Field(
        4,
        title="Output channels",
        description="Channels of the output: the number of filters.",
        json_schema_extra={"widget": "integer"},
    )
    kernel_size: int = Field(
        3,
        ge=1,
        le=64,
        title="Kernel size",
        description="The length of each filter along every spatial axis.",
        json_schema_extra={"widget": "integer"},
    )
    stride: int = Field(
        1,
        ge=1,
        le=64,
        title="Stride",
        description="The step between two positions of the filter.",
        json_schema_extra={"widget": "integer", "advanced": True},
    )
    padding: Padding = Field(
        0,
        title="Padding",
        description="Zeros added on each side of every spatial axis, or SAME (output as long "
        "as the input, with stride 1) or VALID (no padding).",
        json_schema_extra={"widget": "text", "advanced": True},
    )
    use_bias: bool = _use_bias("Add a learned bias per output channel.")
    seed: Seed = 0

    def build_with_key(self, key: jax.Array) -> eqx.Module:
        layer = getattr(eqx.nn, self.constructor.removeprefix("eqx.nn."))
        return layer(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            use_bias=self.use_bias,
            key=key,
        )

    def constructor_code(self, key: str) -> str:
        return (
            f"{self.constructor}({self.in_channels}, {self.out_channels}, {self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r}, use_bias={self.use_bias}, "
            f"key={key})"
        )

    def example_input_shape(self) -> ShapeTuple:
        length = max(16, 2 * self.kernel_size)
        return (self.in_channels, *([length] * self.num_spatial_dims))

    def array_shapes(self) -> Iterator[ShapeTuple]:
        spatial = (self.kernel_size,) * self.num_spatial_dims
        yield (self.out_channels, self.in_channels, *spatial)
        if self.use_bias:
            yield (self.out_channels, *([1] * self.num_spatial_dims))


class Conv1dEntry(ConvEntry):
    """``eqx.nn.Conv1d`` on one example of shape (channels, length)."""

    kind: ClassVar[str] = "eqx.nn.Conv1d"
    title: ClassVar[str] = "Conv1d"
    summary: ClassVar[str] = (
        "A 1-D convolution over an input of shape (channels, length), one example."
    )
    group: ClassVar[str] = "Equinox"
    num_spatial_dims: ClassVar[int] = 1
    constructor: ClassVar[str] = "eqx.nn.Conv1d"


class Conv2dEntry(ConvEntry):
    """``eqx.nn.Conv2d`` on one example of shape (channels, height, width)."""

    kind: ClassVar[str] = "eqx.nn.Conv2d"
    title: ClassVar[str] = "Conv2d"
    summary: ClassVar[str] = (
        "A 2-D convolution over an input of shape (channels, height, width), one example."
    )
    group: ClassVar[str] = "Equinox"
    num_spatial_dims: ClassVar[int] = 2
    constructor: ClassVar[str] = "eqx.nn.Conv2d"


# --- eqx.nn.GRUCell / LSTMCell -------------------------------------------------------------------


class RecurrentCellEntry(KeyedEntry):
    """The parameters shared by ``eqx.nn.GRUCell`` and ``eqx.nn.LSTMCell``."""

    constructor: ClassVar[str]
    gates: ClassVar[int]

    input_size: Size = Field(
        3,
        title="Input size",
        description="The size of the input vector at one time step.",
        json_schema_extra={"widget": "integer"},
    )
    hidden_size: Size = Field(
        4,
        title="Hidden size",
        description="The size of the hidden state.",
        json_schema_extra={"widget": "integer"},
    )
    use_bias: bool = _use_bias("Add learned biases to the gates.")
    seed: Seed = 0

    def build_with_key(self, key: jax.Array) -> eqx.Module:
        cell = getattr(eqx.nn, self.constructor.removeprefix("eqx.nn."))
        return cell(self.input_size, self.hidden_size, use_bias=self.use_bias, key=key)

    def constructor_code(self, key: str) -> str:
        return (
            f"{self.constructor}({self.input_size}, {self.hidden_size}, "
            f"use_bias={self.use_bias}, key={key})"
        )

    def example_input_shape(self) -> ShapeTuple:
        return (self.input_size,)

    def array_shapes(self) -> Iterator[ShapeTuple]:
        yield (self.gates * self.hidden_size, self.input_size)
        yield (self.gates * self.hidden_size, self.hidden_size)
        if self.use_bias:
            yield (self.gates * self.hidden_size,)


class GRUCellEntry(RecurrentCellEntry):
    """``eqx.nn.GRUCell``, called on one step from a zero hidden state."""

    kind: ClassVar[str] = "eqx.nn.GRUCell"
    title: ClassVar[str] = "GRU cell"
    summary: ClassVar[str] = (
        "One step of a gated recurrent unit; the playground calls it from a zero hidden state."
    )
    group: ClassVar[str] = "Equinox"
    constructor: ClassVar[str] = "eqx.nn.GRUCell"
    gates: ClassVar[int] = 3

    def apply(self, model: Any, x: jax.Array) -> jax.Array:
        return model(x, jnp.zeros(self.hidden_size))

    def apply_code(self, model: str = "model", x: str = "x") -> str:
        return f"{model}({x}, jnp.zeros({self.hidden_size}))"

    def array_shapes(self) -> Iterator[ShapeTuple]:
        yield from super().array_shapes()
        if self.use_bias:
            yield (self.hidden_size,)  # bias_n, the candidate's own bias


class LSTMCellEntry(RecurrentCellEntry):
    """``eqx.nn.LSTMCell``, called on one step from zero hidden and cell states."""

    kind: ClassVar[str] = "eqx.nn.LSTMCell"
    title: ClassVar[str] = "LSTM cell"
    summary: ClassVar[str] = (
        "One step of a long short-term memory cell; the playground calls it from zero states "
        "and shows the new hidden state."
    )
    group: ClassVar[str] = "Equinox"
    constructor: ClassVar[str] = "eqx.nn.LSTMCell"
    gates: ClassVar[int] = 4

    def apply(self, model: Any, x: jax.Array) -> jax.Array:
        zeros = jnp.zeros(self.hidden_size)
        return model(x, (zeros, zeros))[0]

    def apply_code(self, model: str = "model", x: str = "x") -> str:
        zeros = f"jnp.zeros({self.hidden_size})"
        return f"{model}({x}, ({zeros}, {zeros}))[0]"


# --- eqx.nn.LayerNorm ----------------------------------------------------------------------------


class LayerNormEntry(StackLayer, CatalogEntry):
    """``eqx.nn.LayerNorm``: normalise over the whole input, then scale and shift."""

    kind: ClassVar[str] = "eqx.nn.LayerNorm"
    title: ClassVar[str] = "LayerNorm"
    summary: ClassVar[str] = (
        "Normalises its input to mean 0 and variance 1, then applies a learned scale and shift."
    )
    group: ClassVar[str] = "Equinox"
    input_field: ClassVar[str] = "shape"

    shape: Shape = Field(
        (4,),
        min_length=1,
        title="Shape",
        description="The shape of the input, normalised as a whole, e.g. 4 or 2,3.",
        json_schema_extra={"widget": "shape"},
    )
    eps: float = Field(
        1e-5,
        gt=0,
        le=1,
        title="Epsilon",
        description="Added to the variance before the square root, to avoid dividing by zero.",
        json_schema_extra={"widget": "number", "step": "any", "advanced": True},
    )
    use_weight: bool = Field(
        True,
        title="Use weight",
        description="Learn a scale (initialised to ones).",
        json_schema_extra={"widget": "checkbox"},
    )
    use_bias: bool = _use_bias("Learn a shift (initialised to zeros).")

    def input_size(self) -> int:
        return math.prod(self.shape)

    def output_size(self) -> int:
        return math.prod(self.shape)

    def build(self) -> eqx.nn.LayerNorm:
        return self.build_with_key(None)

    def build_with_key(self, key: jax.Array | None) -> eqx.nn.LayerNorm:
        return eqx.nn.LayerNorm(
            self.shape, eps=self.eps, use_weight=self.use_weight, use_bias=self.use_bias
        )

    def constructor_code(self, key: str | None = None) -> str:
        return (
            f"eqx.nn.LayerNorm({shape_text(self.shape)}, eps={self.eps!r}, "
            f"use_weight={self.use_weight}, use_bias={self.use_bias})"
        )

    def code(self) -> str:
        return script(["import equinox as eqx"], statement("model = ", self.constructor_code()))

    def example_input_shape(self) -> ShapeTuple:
        return tuple(self.shape)

    def array_shapes(self) -> Iterator[ShapeTuple]:
        if self.use_weight:
            yield tuple(self.shape)
        if self.use_bias:
            yield tuple(self.shape)


class LayerNormLayer(LayerNormEntry):
    """``eqx.nn.LayerNorm`` as a row of a stack: it normalises a vector."""

    shape: Shape = Field(
        (4,),
        min_length=1,
        max_length=1,
        title="Size",
        description="The size of the vector, normalised as a whole.",
        json_schema_extra={"widget": "shape"},
    )


# --- eqx.nn.Embedding ----------------------------------------------------------------------------


class EmbeddingEntry(KeyedEntry):
    """``eqx.nn.Embedding``: a table looked up by an integer index."""

    kind: ClassVar[str] = "eqx.nn.Embedding"
    title: ClassVar[str] = "Embedding"
    summary: ClassVar[str] = (
        "A table of num_embeddings vectors; its input is one integer index (vmap for several)."
    )
    group: ClassVar[str] = "Equinox"
    input_dtype: ClassVar[str] = "int32"

    num_embeddings: Size = Field(
        10,
        title="Number of embeddings",
        description="The number of rows of the table: indices go from 0 to this minus one.",
        json_schema_extra={"widget": "integer"},
    )
    embedding_size: Size = Field(
        4,
        title="Embedding size",
        description="The size of each row.",
        json_schema_extra={"widget": "integer"},
    )
    seed: Seed = 0

    def build_with_key(self, key: jax.Array) -> eqx.nn.Embedding:
        return eqx.nn.Embedding(self.num_embeddings, self.embedding_size, key=key)

    def constructor_code(self, key: str) -> str:
        return f"eqx.nn.Embedding({self.num_embeddings}, {self.embedding_size}, key={key})"

    def example_input_shape(self) -> ShapeTuple:
        return ()

    def apply(self, model: Any, x: jax.Array) -> jax.Array:
        return model(jnp.asarray(x).astype(jnp.int32))

    def apply_code(self, model: str = "model", x: str = "x") -> str:
        return f"{model}(jnp.asarray({x}).astype(jnp.int32))"

    def array_shapes(self) -> Iterator[ShapeTuple]:
        yield (self.num_embeddings, self.embedding_size)


# --- eqx.nn.MultiheadAttention -------------------------------------------------------------------


def _optional_size(title: str, description: str) -> Any:
    return Field(
        None,
        ge=1,
        le=4096,
        title=title,
        description=description,
        json_schema_extra={"widget": "integer", "advanced": True},
    )


def _bias_flag(title: str, description: str) -> Any:
    return Field(
        False,
        title=title,
        description=description,
        json_schema_extra={"widget": "checkbox", "advanced": True},
    )


class MultiheadAttentionEntry(KeyedEntry):
    """``eqx.nn.MultiheadAttention``, used as self-attention over a sequence of vectors."""

    kind: ClassVar[str] = "eqx.nn.MultiheadAttention"
    title: ClassVar[str] = "Multi-head attention"
    summary: ClassVar[str] = (
        "Self-attention over a sequence of shape (length, query_size): the playground calls it "
        "as model(x, x, x)."
    )
    group: ClassVar[str] = "Equinox"

    num_heads: int = Field(
        2,
        ge=1,
        le=64,
        title="Heads",
        description="The number of attention heads.",
        json_schema_extra={"widget": "integer"},
    )
    query_size: Size = Field(
        8,
        title="Query size",
        description="The size of each vector of the sequence (queries, keys and values alike).",
        json_schema_extra={"widget": "integer"},
    )
    output_size: int | None = _optional_size(
        "Output size", "The size of each output vector; empty for query_size."
    )
    qk_size: int | None = _optional_size(
        "Query/key size per head", "Empty for query_size // num_heads."
    )
    vo_size: int | None = _optional_size(
        "Value/output size per head", "Empty for query_size // num_heads."
    )
    use_query_bias: bool = _bias_flag("Query bias", "A bias in the query projection.")
    use_key_bias: bool = _bias_flag("Key bias", "A bias in the key projection.")
    use_value_bias: bool = _bias_flag("Value bias", "A bias in the value projection.")
    use_output_bias: bool = _bias_flag("Output bias", "A bias in the output projection.")
    seed: Seed = 0

    @model_validator(mode="after")
    def _heads_fit(self) -> MultiheadAttentionEntry:
        if self.query_size < self.num_heads and (self.qk_size is None or self.vo_size is None):
            raise field_error(
                ("num_heads",),
                f"{self.num_heads} heads need a query size of at least {self.num_heads} "
                f"(each head gets query_size // num_heads = {self.query_size // self.num_heads} "
                "features), or set qk_size and vo_size",
                self.num_heads,
            )
        return self

    def _sizes(self) -> tuple[int, int, int]:
        """(qk_size, vo_size, output_size) with Equinox's defaults filled in."""
        per_head = self.query_size // self.num_heads
        return (
            self.qk_size or per_head,
            self.vo_size or per_head,
            self.output_size or self.query_size,
        )

    def build_with_key(self, key: jax.Array) -> eqx.nn.MultiheadAttention:
        return eqx.nn.MultiheadAttention(
            self.num_heads,
            self.query_size,
            output_size=self.output_size,
            qk_size=self.qk_size,
            vo_size=self.vo_size,
            use_query_bias=self.use_query_bias,
            use_key_bias=self.use_key_bias,
            use_value_bias=self.use_value_bias,
            use_output_bias=self.use_output_bias,
            key=key,
        )

    def constructor_code(self, key: str) -> str:
        sizes = {"output_size": self.output_size, "qk_size": self.qk_size, "vo_size": self.vo_size}
        given = "".join(f"{name}={size}, " for name, size in sizes.items() if size is not None)
        return (
            f"eqx.nn.MultiheadAttention({self.num_heads}, {self.query_size}, {given}"
            f"use_query_bias={self.use_query_bias}, use_key_bias={self.use_key_bias}, "
            f"use_value_bias={self.use_value_bias}, use_output_bias={self.use_output_bias}, "
            f"key={key})"
        )

    def example_input_shape(self) -> ShapeTuple:
        return (4, self.query_size)

    def apply(self, model: Any, x: jax.Array) -> jax.Array:
        return model(x, x, x)

    def apply_code(self, model: str = "model", x: str = "x") -> str:
        return f"{model}({x}, {x}, {x})"

    def array_shapes(self) -> Iterator[ShapeTuple]:
        qk_size, vo_size, output_size = self._sizes()
        heads = self.num_heads
        projections = [
            (self.query_size, heads * qk_size, self.use_query_bias),
            (self.query_size, heads * qk_size, self.use_key_bias),
            (self.query_size, heads * vo_size, self.use_value_bias),
            (heads * vo_size, output_size, self.use_output_bias),
        ]
        for in_features, out_features, use_bias in projections:
            yield (out_features, in_features)
            if use_bias:
                yield (out_features,)
