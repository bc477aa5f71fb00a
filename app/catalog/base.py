"""The base of every catalog entry, and the field types the entries share.

A catalog entry is a pydantic model whose fields are the parameters of one kind of module. The
same model renders the HTML form (titles, descriptions, bounds and ``json_schema_extra`` widget
hints), validates the JSON API, builds the module and writes the Python code that rebuilds it.

Widget hints (``json_schema_extra``), read by the form renderer:

- ``"widget"``: ``"integer"``, ``"number"``, ``"checkbox"``, ``"select"``, ``"seed"``,
  ``"shape"`` (a text box taking ``2,3``), ``"expression"`` (one line of the expression
  language), ``"identifier"``, ``"text"``, ``"rows"`` (the stack's rows), ``"params"`` (a stack
  row's parameters: the form of ``STACK_LAYERS[row kind]``), ``"fields"`` (the custom fields);
- ``"step"``: the step of a number input;
- ``"advanced"``: ``True`` for fields the form may fold away.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_SIZE = 4096
"""The largest size of any one axis, feature count or channel count."""
MAX_SEED = 2**31 - 1
MAX_NDIM = 6
"""The most axes of a shape typed in a form."""
BATCH = 5
"""The batch size of example inputs for modules whose ``__call__`` takes a batch (the seed's 5)."""

ShapeTuple = tuple[int, ...]

Size = Annotated[int, Field(ge=1, le=MAX_SIZE)]
"""A feature count, channel count or axis length."""

Seed = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_SEED,
        title="Seed",
        description="The integer seed of the PRNG key: the module is built with "
        "jax.random.PRNGKey(seed). The same seed always gives the same numbers.",
        json_schema_extra={"widget": "seed"},
    ),
]


def identity(x: Any) -> Any:
    """The identity activation (one module-level function, so equal models hash equally)."""
    return x


Activation = Literal["relu", "tanh", "sigmoid", "gelu", "softplus", "silu", "identity"]

ACTIVATIONS: dict[str, Callable[[Any], Any]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "identity": identity,
}
"""Each activation's function, as the playground builds it."""

ACTIVATION_CODE: dict[str, str] = {
    "relu": "jax.nn.relu",
    "tanh": "jnp.tanh",
    "sigmoid": "jax.nn.sigmoid",
    "gelu": "jax.nn.gelu",
    "softplus": "jax.nn.softplus",
    "silu": "jax.nn.silu",
    "identity": "lambda x: x",
}
"""Each activation as Python source, for the exported code."""


def _parse_shape(value: Any) -> Any:
    """Accept ``"2,3"``, ``"(2, 3)"``, ``"[2,3]"``, ``"4"`` and a bare int besides a list."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return (value,)
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text[:1] in "([" and text[-1:] in ")]":
        text = text[1:-1]
    parts = [part.strip() for part in text.split(",")]
    if parts and parts[-1] == "":
        parts.pop()  # "3," is the tuple (3,)
    if any(not part.isdigit() or not part.isascii() for part in parts):
        raise PydanticCustomError(
            "shape_syntax",
            "a shape is a list of positive integers, such as 2,3 or 5; got {text}",
            {"text": repr(value[:40])},
        )
    return tuple(int(part) for part in parts)


Shape = Annotated[
    tuple[Annotated[int, Field(ge=1, le=MAX_SIZE)], ...],
    BeforeValidator(_parse_shape),
    Field(max_length=MAX_NDIM),
]
"""An array shape: a list of positive ints; a form may type it as ``2,3``."""


def field_error(loc: tuple[str | int, ...], message: str, value: Any) -> ValidationError:
    """A ValidationError at ``loc`` (relative to the model being validated) saying ``message``.

    Raised from a validator, pydantic prefixes ``loc`` with the location of that model, so an
    error of a nested row or field names the row or field: ``("rows", 1, "params", "in_features")``.
    """
    error = PydanticCustomError("catalog", "{message}", {"message": message})
    details = InitErrorDetails(type=error, loc=loc, input=value)
    return ValidationError.from_exception_data("catalog", [details])


def _top_level_arguments(arguments: str) -> list[str]:
    """Split generated argument text at its top-level commas (it holds no string with commas)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(arguments):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(arguments[start:index].strip())
            start = index + 1
    parts.append(arguments[start:].strip())
    return [part for part in parts if part]


def statement(
    prefix: str, call: str, *, indent: int = 0, suffix: str = "", width: int = 100
) -> str:
    """``prefix + call + suffix`` on one line, or the call's arguments one per line if too long."""
    pad = " " * indent
    line = f"{pad}{prefix}{call}{suffix}"
    if len(line) <= width or not call.endswith(")") or "(" not in call:
        return line
    callee, arguments = call[:-1].split("(", 1)
    lines = [f"{pad}{prefix}{callee}("]
    lines += [f"{pad}    {argument}," for argument in _top_level_arguments(arguments)]
    lines.append(f"{pad}){suffix}")
    return "\n".join(lines)


def script(imports: Iterable[str], *body: str) -> str:
    """A complete Python script: the imports, a blank line, then the body's statements."""
    return "\n".join(imports) + "\n\n" + "\n".join(body) + "\n"


class ArrayCounts:
    """Sizes of a module computed from ``array_shapes()``, without building it."""

    def array_shapes(self) -> Iterator[ShapeTuple]:
        """The shape of every array leaf of the module, in flattening order, without building."""
        raise NotImplementedError

    def estimated_parameters(self) -> int:
        """The number of array elements in the module (trained or not), without building it."""
        return sum(math.prod(shape) for shape in self.array_shapes())

    def estimated_leaves(self) -> int:
        """The number of array leaves in the module, without building it."""
        return sum(1 for _ in self.array_shapes())

    def largest_array_elements(self) -> int:
        """The number of elements of the module's largest array, without building it."""
        return max((math.prod(shape) for shape in self.array_shapes()), default=0)


class CatalogEntry(ArrayCounts, BaseModel):
    """One kind of module: its parameters, and how to build, call and export it.

    Subclasses set the class variables and implement ``build``, ``code``,
    ``example_input_shape``, ``apply_code`` and ``array_shapes``; everything else follows.
    """

    model_config = ConfigDict(extra="forbid")

    kind: ClassVar[str]
    """The kind's name in the API, e.g. ``"library.Linear"`` or ``"eqx.nn.MLP"``."""
    title: ClassVar[str]
    """A human title for the picker."""
    summary: ClassVar[str]
    """One sentence of help."""
    group: ClassVar[str]
    """The picker group: ``"Seed"``, ``"Library"``, ``"Equinox"`` or ``"Compose"``."""
    input_dtype: ClassVar[str] = "float32"
    """The dtype of the forward pass's input (``"int32"`` for an embedding's indices)."""
    batched_input: ClassVar[bool] = False
    """Whether ``__call__`` takes a batch (library modules) rather than one example."""

    def build(self) -> Any:
        """The module (an ``eqx.Module``, so a pytree)."""
        raise NotImplementedError

    def code(self) -> str:
        """A complete script: imports and construction, leaving the module in ``model``."""
        raise NotImplementedError

    def example_input_shape(self) -> ShapeTuple:
        """The shape of a sensible input for the forward pass."""
        raise NotImplementedError

    def example_input(self) -> jax.Array:
        """Ones of the example shape and the input dtype."""
        return jnp.ones(self.example_input_shape(), dtype=self.input_dtype)

    def apply(self, model: Any, x: jax.Array) -> jax.Array:
        """The forward pass used by runs: ``model(x)`` unless the kind needs more."""
        return model(x)

    def apply_code(self, model: str = "model", x: str = "x") -> str:
        """``apply`` as a one-line Python expression over ``jax``, ``jnp``, ``eqx``, ``library``."""
        return f"{model}({x})"


class KeyedEntry(CatalogEntry):
    """An entry built by one constructor call that takes a PRNG key made from ``seed``."""

    def build_with_key(self, key: jax.Array) -> eqx.Module:
        """The module, its randomness drawn from ``key``."""
        raise NotImplementedError

    def constructor_code(self, key: str) -> str:
        """The constructor call as Python source, with ``key`` the source of its key."""
        raise NotImplementedError

    def code_imports(self) -> list[str]:
        """The import lines of the exported script."""
        return ["import jax", "import equinox as eqx"]

    def build(self) -> eqx.Module:
        return self.build_with_key(jax.random.PRNGKey(self.seed))

    def code(self) -> str:
        return script(
            self.code_imports(),
            statement("model = ", self.constructor_code(f"jax.random.PRNGKey({self.seed})")),
        )
