"""Catalog entries for the project's own ``library``: its modules and its reference network.

Library modules take a batch: their input is ``(batch, features)``, and the example inputs are
batches of 5, like the seed's ``x = jnp.ones((5, 2))``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
from pydantic import Field

from app.catalog.base import BATCH, CatalogEntry, KeyedEntry, Seed, ShapeTuple, Size, script
from library.layermaps import LayerMap
from library.modules import (
    Ferromagnetic,
    FrozenFullyConnected,
    FullyConnected,
    Linear,
    OutputLayer,
    RecurrentDiscrete,
    RecurrentTanh,
)
from library.orchestrators import SequentialOrchestrator
from library.states import SequentialState

_BOUND = 1000.0
"""The bound on the magnitude of strengths, thresholds and self-couplings."""


def _number(default: float, title: str, description: str) -> Any:
    return Field(
        default,
        ge=-_BOUND,
        le=_BOUND,
        allow_inf_nan=False,
        title=title,
        description=description,
        json_schema_extra={"widget": "number", "step": "any"},
    )


def _features(default: int, title: str, description: str) -> Any:
    return Field(
        default, title=title, description=description, json_schema_extra={"widget": "integer"}
    )


class LibraryEntry(KeyedEntry):
    """A library module with a key: batched input, imported from ``library.modules``."""

    group: ClassVar[str] = "Library"
    batched_input: ClassVar[bool] = True

    def code_imports(self) -> list[str]:
        return ["import jax", f"from library.modules import {self.kind.removeprefix('library.')}"]


# --- the seed's Linear ---------------------------------------------------------------------------


class LibraryLinearEntry(LibraryEntry):
    """The seed's ``Linear(in_dim, out_dim, key)``: ``x @ weight + bias``."""

    kind: ClassVar[str] = "library.Linear"
    title: ClassVar[str] = "Linear (the seed's example)"
    summary: ClassVar[str] = (
        "The seed's first module: x @ weight + bias, with weight and bias drawn from a "
        "standard normal, on a batch of inputs."
    )
    group: ClassVar[str] = "Seed"

    in_dim: Size = _features(2, "Input dimension", "The size of each input row.")
    out_dim: Size = _features(3, "Output dimension", "The size of each output row.")
    seed: Seed = 0

    def build_with_key(self, key: jax.Array) -> Linear:
        return Linear(self.in_dim, self.out_dim, key)

    def constructor_code(self, key: str) -> str:
        return f"Linear({self.in_dim}, {self.out_dim}, {key})"

    def example_input_shape(self) -> ShapeTuple:
        return (BATCH, self.in_dim)

    def array_shapes(self) -> Iterator[ShapeTuple]:
        yield (self.in_dim, self.out_dim)
        yield (self.out_dim,)


# --- recurrent layers ----------------------------------------------------------------------------


class RecurrentEntry(LibraryEntry):
    """The parameters shared by ``RecurrentDiscrete`` and ``RecurrentTanh``."""

    layer_class: ClassVar[type]

    features: Size = _features(16, "Features", "The number of units F of the slot.")
    j_d: float = _number(0.5, "Self-coupling j_d", "The diagonal of J: each unit's pull on itself.")
    threshold: float = _number(
        0.5, "Threshold", "The margin of the perceptron rule: a unit learns until y*h > threshold."
    )
    strength: float = _number(
        1.0, "Strength", "Scales the random part of J = normal(F, F) / sqrt(F) * strength."
    )
    seed: Seed = 0

    def build_with_key(self, key: jax.Array) -> Any:
        return self.layer_class(
            self.features, j_d=self.j_d, threshold=self.threshold, key=key, strength=self.strength
        )

    def constructor_code(self, key: str) -> str:
        return (
            f"{self.layer_class.__name__}({self.features}, j_d={self.j_d!r}, "
            f"threshold={self.threshold!r}, key={key}, strength={self.strength!r})"
        )

    def example_input_shape(self) -> ShapeTuple:
        return (BATCH, self.features)

    def array_shapes(self) -> Iterator[ShapeTuple]:
        yield (self.features, self.features)  # J
        yield (self.features,)  # J_D
        yield (self.features,)  # threshold
        yield ()  # strength


class RecurrentDiscreteEntry(RecurrentEntry):
    """``RecurrentDiscrete``: binary units, ``x @ J`` as the message."""

    kind: ClassVar[str] = "library.RecurrentDiscrete"
    title: ClassVar[str] = "RecurrentDiscrete"
    summary: ClassVar[str] = (
        "A slot of binary units (+1/-1) coupled to itself by J; its message is x @ J."
    )
    layer_class: ClassVar[type] = RecurrentDiscrete


class RecurrentTanhEntry(RecurrentEntry):
    """``RecurrentTanh``: continuous units in (-1, 1), ``x @ J`` as the message."""

    kind: ClassVar[str] = "library.RecurrentTanh"
    title: ClassVar[str] = "RecurrentTanh"
    summary: ClassVar[str] = (
        "A slot of continuous units, tanh of their field, coupled to itself by J; its message "
        "is x @ J."
    )
    layer_class: ClassVar[type] = RecurrentTanh


# --- adapters ------------------------------------------------------------------------------------


class FerromagneticEntry(CatalogEntry):
    """``Ferromagnetic(features, strength)``: ``x * strength``, nothing learns."""

    kind: ClassVar[str] = "library.Ferromagnetic"
    title: ClassVar[str] = "Ferromagnetic"
    group: ClassVar[str] = "Library"
    batched_input: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "An elementwise coupling x * strength between two slots of the same size; it has no "
        "randomness and never learns."
    )

    features: Size = _features(16, "Features", "The size F of both slots.")
    strength: float = _number(1.0, "Strength", "The coupling of each unit to its partner.")

    def build(self) -> Ferromagnetic:
        return Ferromagnetic(self.features, self.strength)

    def code(self) -> str:
        return script(
            ["from library.modules import Ferromagnetic"],
            f"model = Ferromagnetic({self.features}, {self.strength!r})",
        )

    def example_input_shape(self) -> ShapeTuple:
        return (BATCH, self.features)

    def array_shapes(self) -> Iterator[ShapeTuple]:
        yield (self.features,)


class DenseAdapterEntry(LibraryEntry):
    """The parameters shared by ``FullyConnected`` and ``FrozenFullyConnected``."""

    adapter_class: ClassVar[type]

    in_features: Size = _features(16, "Input features", "The size of the sending slot.")
    out_features: Size = _features(8, "Output features", "The size of the receiving slot.")
    strength: float = _number(
        1.0, "Strength", "Scales the initial W = normal(in, out) * strength / sqrt(in)."
    )
    threshold: float = _number(
        3.5, "Threshold", "The margin of the perceptron rule for the receiving units."
    )
    seed: Seed = 0

    def build_with_key(self, key: jax.Array) -> Any:
        return self.adapter_class(
            self.in_features,
            self.out_features,
            strength=self.strength,
            threshold=self.threshold,
            key=key,
        )

    def constructor_code(self, key: str) -> str:
        return (
            f"{self.adapter_class.__name__}({self.in_features}, {self.out_features}, "
            f"strength={self.strength!r}, threshold={self.threshold!r}, key={key})"
        )

    def example_input_shape(self) -> ShapeTuple:
        return (BATCH, self.in_features)

    def array_shapes(self) -> Iterator[ShapeTuple]:
        yield (self.in_features, self.out_features)  # W
        yield (self.out_features,)  # strength
        yield (self.out_features,)  # threshold


class FullyConnectedEntry(DenseAdapterEntry):
    """``FullyConnected``: ``x @ W``, W learnt by the perceptron rule."""

    kind: ClassVar[str] = "library.FullyConnected"
    title: ClassVar[str] = "FullyConnected"
    summary: ClassVar[str] = (
        "A dense edge x @ W between two slots; W learns by the perceptron rule."
    )
    adapter_class: ClassVar[type] = FullyConnected


class FrozenFullyConnectedEntry(DenseAdapterEntry):
    """``FrozenFullyConnected``: ``x @ W``, W fixed."""

    kind: ClassVar[str] = "library.FrozenFullyConnected"
    title: ClassVar[str] = "FrozenFullyConnected"
    summary: ClassVar[str] = (
        "A dense edge x @ W between two slots whose weights never learn (a fixed feedback)."
    )
    adapter_class: ClassVar[type] = FrozenFullyConnected
    strength: float = _number(
        0.3, "Strength", "Scales the initial W = normal(in, out) * strength / sqrt(in)."
    )
    threshold: float = _number(0.0, "Threshold", "Kept for symmetry; nothing learns.")


class OutputLayerEntry(CatalogEntry):
    """``OutputLayer()``: the output slot, with no parameters."""

    kind: ClassVar[str] = "library.OutputLayer"
    title: ClassVar[str] = "OutputLayer"
    group: ClassVar[str] = "Library"
    batched_input: ClassVar[bool] = True
    summary: ClassVar[str] = (
        "The output slot: no parameters; its own message is zeros, so the output is the sum of "
        "what other slots send."
    )

    def build(self) -> OutputLayer:
        return OutputLayer()

    def code(self) -> str:
        return script(["from library.modules import OutputLayer"], "model = OutputLayer()")

    def example_input_shape(self) -> ShapeTuple:
        return (BATCH, 10)

    def array_shapes(self) -> Iterator[ShapeTuple]:
        return iter(())


# --- the reference network -----------------------------------------------------------------------


class NetworkEntry(CatalogEntry):
    """A ``SequentialOrchestrator`` over three slots: input 0, hidden 1, output 2.

    The wiring is the reference task's (docs/library.md)::

        {1: {0: FullyConnected(input_strength, input_threshold),
             1: RecurrentDiscrete or RecurrentTanh(j_d, hidden_threshold, hidden_strength),
             2: FrozenFullyConnected(feedback_strength, feedback_threshold)},
         2: {1: FullyConnected(output_strength, output_threshold),
             2: OutputLayer()}}

    Keys: ``k_input, k_hidden, k_feedback, k_output = jax.random.split(PRNGKey(seed), 4)``,
    in that order, for the edges 0->1, the hidden layer, 2->1 and 1->2.

    The forward pass (``apply``): ``state.init(x)``, ``steps`` calls of ``step_inference``
    (a ``jax.lax.fori_loop``), one ``predict``, and the readout (slot 2), with ``PRNGKey(0)`` as
    the dynamics' key. ``x`` is a batch ``(batch, input_size)`` or one example
    ``(input_size,)`` (run as a batch of one), so ``vmap`` over examples works too.
    """

    kind: ClassVar[str] = "library.network"
    title: ClassVar[str] = "Reference network"
    summary: ClassVar[str] = (
        "The library's deep asymmetric recurrent network: input, a recurrent hidden slot with "
        "feedback from the output, and an output slot, wired as a LayerMap."
    )
    group: ClassVar[str] = "Library"
    batched_input: ClassVar[bool] = True

    input_size: Size = _features(100, "Input size", "The size of slot 0, the input.")
    hidden_size: Size = _features(256, "Hidden size", "The size of slot 1, the hidden layer.")
    output_size: Size = _features(10, "Output size", "The size of slot 2: one unit per class.")
    hidden_layer: Literal["RecurrentDiscrete", "RecurrentTanh"] = Field(
        "RecurrentDiscrete",
        title="Hidden layer",
        description="RecurrentDiscrete (binary units) or RecurrentTanh (continuous units).",
        json_schema_extra={"widget": "select"},
    )
    j_d: float = _number(0.5, "Self-coupling j_d", "The diagonal of the hidden layer's J.")
    hidden_threshold: float = _number(
        0.5, "Hidden threshold", "The perceptron margin of the hidden layer's J."
    )
    hidden_strength: float = _number(
        1.0, "Hidden strength", "Scales the random part of the hidden layer's J."
    )
    input_strength: float = _number(
        1.0, "Input strength", "Scales the initial weights of the edge input -> hidden."
    )
    input_threshold: float = _number(
        3.5, "Input threshold", "The perceptron margin of the edge input -> hidden."
    )
    feedback_strength: float = _number(
        0.3, "Feedback strength", "Scales the fixed weights of the edge output -> hidden."
    )
    feedback_threshold: float = _number(
        0.0, "Feedback threshold", "The margin of the frozen edge output -> hidden (unused)."
    )
    output_strength: float = _number(
        1.0, "Output strength", "Scales the initial weights of the edge hidden -> output."
    )
    output_threshold: float = _number(
        3.5, "Output threshold", "The perceptron margin of the edge hidden -> output."
    )
    steps: int = Field(
        10,
        ge=0,
        le=200,
        title="Inference steps",
        description="How many step_inference sweeps the forward pass runs before predict.",
        json_schema_extra={"widget": "integer"},
    )
    seed: Seed = 0

    def _hidden_class(self) -> type:
        return {"RecurrentDiscrete": RecurrentDiscrete, "RecurrentTanh": RecurrentTanh}[
            self.hidden_layer
        ]

    def build(self) -> SequentialOrchestrator:
        k_input, k_hidden, k_feedback, k_output = jax.random.split(jax.random.PRNGKey(self.seed), 4)
        hidden, output = self.hidden_size, self.output_size
        return SequentialOrchestrator(
            LayerMap.from_dict(
                {
                    1: {
                        0: FullyConnected(
                            self.input_size,
                            hidden,
                            strength=self.input_strength,
                            threshold=self.input_threshold,
                            key=k_input,
                        ),
                        1: self._hidden_class()(
                            hidden,
                            j_d=self.j_d,
                            threshold=self.hidden_threshold,
                            key=k_hidden,
                            strength=self.hidden_strength,
                        ),
                        2: FrozenFullyConnected(
                            output,
                            hidden,
                            strength=self.feedback_strength,
                            threshold=self.feedback_threshold,
                            key=k_feedback,
                        ),
                    },
                    2: {
                        1: FullyConnected(
                            hidden,
                            output,
                            strength=self.output_strength,
                            threshold=self.output_threshold,
                            key=k_output,
                        ),
                        2: OutputLayer(),
                    },
                }
            )
        )

    def state(self) -> SequentialState:
        """The network's state: zeros of shape (1, size) for each of the three slots."""
        return SequentialState(self._sizes())

    def _sizes(self) -> list[int]:
        return [self.input_size, self.hidden_size, self.output_size]

    def code(self) -> str:
        hidden, output = self.hidden_size, self.output_size
        hidden_class = self.hidden_layer
        imports = [
            "import jax",
            "from library.layermaps import LayerMap",
            "from library.modules import (",
            f"    FrozenFullyConnected, FullyConnected, OutputLayer, {hidden_class},",
            ")",
            "from library.orchestrators import SequentialOrchestrator",
            "from library.states import SequentialState",
        ]
        return script(
            imports,
            "k_input, k_hidden, k_feedback, k_output = jax.random.split("
            f"jax.random.PRNGKey({self.seed}), 4)",
            "model = SequentialOrchestrator(",
            "    LayerMap.from_dict(",
            "        {",
            "            1: {",
            f"                0: FullyConnected({self.input_size}, {hidden}, "
            f"strength={self.input_strength!r}, threshold={self.input_threshold!r}, "
            "key=k_input),",
            f"                1: {hidden_class}({hidden}, j_d={self.j_d!r}, "
            f"threshold={self.hidden_threshold!r}, key=k_hidden, "
            f"strength={self.hidden_strength!r}),",
            f"                2: FrozenFullyConnected({output}, {hidden}, "
            f"strength={self.feedback_strength!r}, threshold={self.feedback_threshold!r}, "
            "key=k_feedback),",
            "            },",
            "            2: {",
            f"                1: FullyConnected({hidden}, {output}, "
            f"strength={self.output_strength!r}, threshold={self.output_threshold!r}, "
            "key=k_output),",
            "                2: OutputLayer(),",
            "            },",
            "        }",
            "    )",
            ")",
            f"state = SequentialState({self._sizes()})",
        )

    def example_input_shape(self) -> ShapeTuple:
        return (BATCH, self.input_size)

    def apply(self, model: SequentialOrchestrator, x: jax.Array) -> jax.Array:
        start = (self.state().init(jnp.atleast_2d(x)), jax.random.PRNGKey(0))
        settled = jax.lax.fori_loop(
            0, self.steps, lambda _, carry: model.step_inference(*carry), start
        )
        readout = model.predict(*settled)[0].readout
        return readout.reshape(x.shape[:-1] + (self.output_size,))

    def apply_code(self, model: str = "model", x: str = "x") -> str:
        state = f"library.SequentialState({self._sizes()}).init(jnp.atleast_2d({x}))"
        loop = (
            f"jax.lax.fori_loop(0, {self.steps}, "
            f"lambda _, carry: {model}.step_inference(*carry), ({state}, jax.random.PRNGKey(0)))"
        )
        return (
            f"{model}.predict(*{loop})[0].readout.reshape({x}.shape[:-1] + ({self.output_size},))"
        )

    def array_shapes(self) -> Iterator[ShapeTuple]:
        inputs, hidden, output = self._sizes()
        yield from FullyConnectedEntry(in_features=inputs, out_features=hidden).array_shapes()
        yield from RecurrentDiscreteEntry(features=hidden).array_shapes()
        yield from FrozenFullyConnectedEntry(in_features=output, out_features=hidden).array_shapes()
        yield from FullyConnectedEntry(in_features=hidden, out_features=output).array_shapes()
