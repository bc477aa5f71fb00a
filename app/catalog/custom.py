"""The ``custom`` kind: a module defined in the form.

The user names the class, lists its fields and writes ``__call__`` as one expression of the
safe expression language (:mod:`app.expressions`) over ``x`` and the field names. The playground
turns that into a real ``eqx.Module`` subclass with the user's class name:

- ``param`` fields are trained arrays, ``buffer`` fields arrays that are not trained (listed in
  the class's ``buffer_fields``, which ``library.trainable_filter`` reads), ``static`` fields
  Python numbers kept in the tree structure (``eqx.field(static=True)``);
- array fields take their keys from ``jax.random.split(jax.random.PRNGKey(seed), n)``, ``n`` the
  number of array fields, in field order (zeros, ones and constant fields use no randomness but
  still take their key, so adding one does not change the others' numbers);
- ``normal`` is ``jax.random.normal(key, shape)`` (mean 0, standard deviation 1), ``uniform`` is
  ``jax.random.uniform(key, shape)`` (in [0, 1)), ``constant`` is
  ``jnp.full(shape, value, dtype=jnp.float32)``; every array is float32;
- ``__call__`` evaluates the expression under ``jax.named_scope(name)``; a static field enters
  it as ``jnp.asarray(value)``, so no arithmetic is ever done on plain Python numbers.

Generated classes are cached by (name, fields' names, roles and static types, canonical
expression), so two builds of the same structure share one class and have equal treedefs.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.cache import BoundedCache
from app.catalog.base import (
    BATCH,
    CatalogEntry,
    Seed,
    Shape,
    ShapeTuple,
    field_error,
    script,
)
from app.expressions import (
    ALLOWED_CONSTANTS,
    ALLOWED_FUNCTIONS,
    Expression,
    ExpressionError,
    parse_expression,
)
from app.settings import get_settings
from app.text import shape_text

MAX_FIELDS = 32
MAX_NAME_LENGTH = 64
MAX_INT_VALUE = 10**9
MAX_FLOAT_VALUE = 1e30
CLASS_CACHE_SIZE = 1024

Role = Literal["param", "buffer", "static"]
Init = Literal["normal", "uniform", "zeros", "ones", "constant"]

_SCRIPT_NAMES = frozenset({"jax", "jnp", "eqx", "ClassVar", "keys", "model", "library", "state"})
RESERVED_FIELD_NAMES = frozenset(
    {"x", "self", "jax", "jnp", "eqx", "buffer_fields"} | set(ALLOWED_FUNCTIONS)
) | frozenset(ALLOWED_CONSTANTS)
"""Names a field cannot take: the input, Python's and the script's own names, and the functions
and constants of the expression language (a field named ``exp`` would hide ``exp(x)``)."""
RESERVED_CLASS_NAMES = _SCRIPT_NAMES | frozenset(dir(builtins))
"""Names a class cannot take: the exported script's own names and Python's builtins."""


def _check_identifier(name: str, what: str) -> str:
    """``name`` if it can be a Python name of ours; a PydanticCustomError saying why not."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        if name.startswith("_"):
            reason = "must not start with '_' (private and dunder names are Python's own)"
        elif not name.isascii():
            reason = "must be plain ASCII: letters, digits and '_'"
        else:
            reason = "must start with a letter and hold only letters, digits and '_'"
        raise PydanticCustomError(
            "identifier",
            "{what} {name} {reason}",
            {"what": what, "name": repr(name), "reason": reason},
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise PydanticCustomError(
            "identifier",
            "{what} {name} is a Python keyword; choose another name",
            {"what": what, "name": repr(name)},
        )
    return name


def _parse_number(value: Any) -> int | float | None:
    """An int or a float; a form's text ``"2"`` gives an int, ``"0.5"`` or ``"1e-3"`` a float."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text) if re.fullmatch(r"[+-]?[0-9]{1,30}", text) else float(text)
        except ValueError:
            pass
    raise PydanticCustomError(
        "number",
        "the value must be a number, such as 2 or 0.5; got {value}",
        {"value": repr(value)[:40]},
    )


Number = Annotated[
    int | float, PlainValidator(_parse_number, json_schema_input_type=int | float | None)
]
"""A Python number: ints stay ints (``x ** n`` with an int ``n`` is an integer power)."""


class CustomField(BaseModel):
    """One field of a custom module."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        title="Name",
        description="The field's name, used in the expression: letters, digits and '_'.",
        json_schema_extra={"widget": "identifier"},
    )
    role: Role = Field(
        "param",
        title="Role",
        description="param: an array that is trained; buffer: an array that is not trained; "
        "static: a Python number kept in the tree structure (changing it recompiles).",
        json_schema_extra={"widget": "select"},
    )
    shape: Shape | None = Field(
        None,
        validate_default=True,
        title="Shape",
        description="For arrays: the shape, such as 2,3 (or () for a scalar). Empty for static.",
        json_schema_extra={"widget": "shape"},
    )
    init: Init | None = Field(
        None,
        validate_default=True,
        title="Initialisation",
        description="For arrays: normal (mean 0, std 1), uniform (in [0, 1)), zeros, ones, or "
        "constant (every entry equal to value). Default normal.",
        json_schema_extra={"widget": "select"},
    )
    value: Number | None = Field(
        None,
        validate_default=True,
        title="Value",
        description="The number of a static field, or of every entry of a constant array.",
        json_schema_extra={"widget": "number", "step": "any"},
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        _check_identifier(name, "the field name")
        if name in ALLOWED_FUNCTIONS or name in ALLOWED_CONSTANTS:
            qualified = ALLOWED_FUNCTIONS.get(name) or ALLOWED_CONSTANTS[name]
            raise PydanticCustomError(
                "reserved_name",
                "the field name {name} is taken by the expression language ({qualified}); "
                "choose another name",
                {"name": repr(name), "qualified": qualified},
            )
        if name in RESERVED_FIELD_NAMES:
            raise PydanticCustomError(
                "reserved_name",
                "the field name {name} is taken: x is the input, and jax, jnp, eqx, self and "
                "buffer_fields are names of the generated code",
                {"name": repr(name)},
            )
        return name

    @field_validator("shape")
    @classmethod
    def _shape_for_arrays(cls, shape: ShapeTuple | None, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if role == "static" and shape is not None:
            raise PydanticCustomError(
                "static_shape",
                "a static field holds one Python number, not an array: leave its shape empty",
            )
        if role in ("param", "buffer") and shape is None:
            raise PydanticCustomError(
                "missing_shape",
                "an array field needs a shape, such as 2,3 or 5 (or () for a scalar)",
            )
        return shape

    @field_validator("init")
    @classmethod
    def _init_for_arrays(cls, init: str | None, info: ValidationInfo) -> str | None:
        role = info.data.get("role")
        if role == "static":
            return None  # a static field has no initialisation; a form may still send one
        return init or "normal"

    @field_validator("value")
    @classmethod
    def _value_when_needed(cls, value: float | None, info: ValidationInfo) -> Any:
        role, init = info.data.get("role"), info.data.get("init")
        needed = role == "static" or (role in ("param", "buffer") and init == "constant")
        if not needed:
            return None  # unused: dropped, so equal modules have equal specs
        if value is None:
            what = "a static field" if role == "static" else "a constant array"
            raise PydanticCustomError(
                "missing_value", "{what} needs a value, such as 1 or 0.5", {"what": what}
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise PydanticCustomError("finite_value", "the value must be a finite number")
        limit = MAX_FLOAT_VALUE if isinstance(value, float) else MAX_INT_VALUE
        if abs(value) > limit:
            raise PydanticCustomError(
                "value_too_large",
                "the value must be at most {limit} in size",
                {"limit": f"{limit:g}"},
            )
        return value

    @property
    def is_array(self) -> bool:
        return self.role != "static"


def _default_fields() -> list[CustomField]:
    return [
        CustomField(name="weight", role="param", shape=(2, 3), init="normal"),
        CustomField(name="bias", role="param", shape=(3,), init="normal"),
    ]


_parses: BoundedCache[tuple[str, tuple[str, ...]], Expression] = BoundedCache(CLASS_CACHE_SIZE)
"""Parsed calls, by their text and variables (under the settings' limits when first parsed)."""


def _parse_call(text: str, variables: tuple[str, ...]) -> Expression:
    def parse() -> Expression:
        settings = get_settings()
        return parse_expression(
            text,
            variables,
            max_length=settings.max_expression_length,
            max_nodes=settings.max_expression_nodes,
        )

    return _parses.get_or_make((text, variables), parse)


FieldSignature = tuple[tuple[str, str, str], ...]
"""Per field: (name, role, type of a static value or "")."""

_classes: BoundedCache[tuple[str, FieldSignature, str], type[eqx.Module]] = BoundedCache(
    CLASS_CACHE_SIZE
)
_example_shapes: BoundedCache[str, ShapeTuple] = BoundedCache(CLASS_CACHE_SIZE)
"""Example input shapes found so far, by the entry's JSON without its seed."""


def module_class(name: str, signature: FieldSignature, expression: Expression) -> type[eqx.Module]:
    """The ``eqx.Module`` subclass for this structure, created once and then reused."""
    return _classes.get_or_make(
        (name, signature, expression.to_python()),
        lambda: _make_module_class(name, signature, expression),
    )


def class_from_text(name: str, signature: FieldSignature, call: str) -> type[eqx.Module]:
    """The class of ``module_class`` from the text of its expression (in another process)."""
    variables = ("x", *(field for field, _, _ in signature))
    return module_class(name, signature, _parse_call(call, variables))


def _make_module_class(
    name: str, signature: FieldSignature, expression: Expression
) -> type[eqx.Module]:
    arrays = tuple(field for field, role, _ in signature if role != "static")
    statics = tuple(field for field, role, _ in signature if role == "static")
    buffers = tuple(field for field, role, _ in signature if role == "buffer")
    annotations: dict[str, Any] = {"buffer_fields": ClassVar[tuple[str, ...]]}
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"A module defined in the Pytree Playground: __call__(x) = "
        f"{expression.to_python()}.",
        "buffer_fields": buffers,
        # how app.transfer sends the class to another process: made again from its recipe
        "__transfer__": (class_from_text, (name, signature, expression.to_python())),
    }
    for field, role, static_type in signature:
        if role == "static":
            annotations[field] = {"int": int, "float": float}[static_type]
            namespace[field] = eqx.field(static=True)
        else:
            annotations[field] = jax.Array
    namespace["__annotations__"] = annotations

    def __call__(self: Any, x: jax.Array) -> jax.Array:
        env: dict[str, Any] = {"x": x}
        env.update((field, getattr(self, field)) for field in arrays)
        env.update((field, jnp.asarray(getattr(self, field))) for field in statics)
        with jax.named_scope(name):
            return expression.evaluate(env)

    namespace["__call__"] = __call__
    return type(name, (eqx.Module,), namespace)


class CustomModuleEntry(CatalogEntry):
    """A module defined in the form: a class name, fields, and ``__call__`` as one expression."""

    kind: ClassVar[str] = "custom"
    title: ClassVar[str] = "Custom module"
    summary: ClassVar[str] = (
        "Define your own eqx.Module: name it, list its fields (trained params, buffers, static "
        "numbers) and write __call__ as one expression over x and the fields."
    )
    group: ClassVar[str] = "Compose"

    name: str = Field(
        "Linear",
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        title="Class name",
        description="The name of the eqx.Module subclass, such as Linear or MyLayer.",
        json_schema_extra={"widget": "identifier"},
    )
    seed: Seed = 0
    fields: list[CustomField] = Field(
        default_factory=_default_fields,
        max_length=MAX_FIELDS,
        title="Fields",
        description="The module's fields, in order. Array fields take their keys from "
        "jax.random.split(jax.random.PRNGKey(seed), number of array fields), in this order.",
        json_schema_extra={"widget": "fields"},
    )
    call: str = Field(
        "x @ weight + bias",
        min_length=1,
        max_length=10_000,  # a hard cap; the expression language applies the configured limit
        title="__call__(x) returns",
        description="One expression over x and the field names: numbers, + - * / ** @ %, "
        "indexing, .T, and functions such as sin, exp, tanh, relu, sigmoid, mean, sum, where "
        "(with or without their jnp. or jax.nn. prefix).",
        json_schema_extra={"widget": "expression"},
    )

    _expression: Expression | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _valid_class_name(cls, name: str) -> str:
        _check_identifier(name, "the class name")
        if name in RESERVED_CLASS_NAMES:
            raise PydanticCustomError(
                "reserved_name",
                "the class name {name} would hide a name of Python or of the exported script",
                {"name": repr(name)},
            )
        return name

    @field_validator("fields")
    @classmethod
    def _unique_names(cls, fields: list[CustomField]) -> list[CustomField]:
        seen: dict[str, int] = {}
        for index, field in enumerate(fields):
            if field.name in seen:
                raise field_error(
                    (index, "name"),
                    f"the field name {field.name!r} is used twice (fields {seen[field.name] + 1} "
                    f"and {index + 1}); names must be unique",
                    field.name,
                )
            seen[field.name] = index
        return fields

    @field_validator("call")
    @classmethod
    def _parses(cls, call: str, info: ValidationInfo) -> str:
        fields = info.data.get("fields")
        if fields is None:
            return call  # the fields are wrong and reported; the names are unknown
        try:
            _parse_call(call, ("x", *(field.name for field in fields)))
        except ExpressionError as error:
            raise PydanticCustomError(
                "expression", "{message}", {"message": error.message}
            ) from None
        return call

    @model_validator(mode="after")
    def _keep_expression(self) -> CustomModuleEntry:
        self._expression = _parse_call(self.call, ("x", *self._field_names()))
        return self

    def _field_names(self) -> list[str]:
        return [field.name for field in self.fields]

    def _array_fields(self) -> list[CustomField]:
        return [field for field in self.fields if field.is_array]

    @property
    def expression(self) -> Expression:
        """The parsed ``call``."""
        assert self._expression is not None
        return self._expression

    def field_signature(self) -> FieldSignature:
        """What the generated class depends on, besides its name and expression."""
        return tuple(
            (field.name, field.role, type(field.value).__name__ if field.role == "static" else "")
            for field in self.fields
        )

    def module_class(self) -> type[eqx.Module]:
        """The generated class, shared by every entry of the same structure."""
        return module_class(self.name, self.field_signature(), self.expression)

    def build(self) -> eqx.Module:
        arrays = self._array_fields()
        keys = jax.random.split(jax.random.PRNGKey(self.seed), len(arrays)) if arrays else []
        key_of = {field.name: key for field, key in zip(arrays, keys, strict=True)}
        values = {
            field.name: _initial_array(field, key_of[field.name]) if field.is_array else field.value
            for field in self.fields
        }
        return self.module_class()(**values)

    def code(self) -> str:
        lines = ["", f"class {self.name}(eqx.Module):"]
        lines.append('    """Defined in the Pytree Playground."""')
        lines.append("")
        for field in self.fields:
            if field.role == "static":
                static_type = type(field.value).__name__
                lines.append(f"    {field.name}: {static_type} = eqx.field(static=True)")
            else:
                lines.append(f"    {field.name}: jax.Array  # {field.role}")
        buffers = [field.name for field in self.fields if field.role == "buffer"]
        if buffers:
            names = ", ".join(f'"{name}"' for name in buffers) + ("," if len(buffers) == 1 else "")
            lines.append(f"    buffer_fields: ClassVar[tuple[str, ...]] = ({names})")
        if self.fields:
            lines.append("")
        lines.append("    def __call__(self, x):")
        rename = {field.name: f"self.{field.name}" for field in self._array_fields()}
        for field in self.fields:
            if field.role == "static" and field.name in self.expression.names:
                lines.append(f"        {field.name} = jnp.asarray(self.{field.name})")
        lines.append(f'        with jax.named_scope("{self.name}"):')
        lines.append(f"            return {self.expression.to_python(rename)}")
        lines += ["", ""]
        arrays = self._array_fields()
        if arrays:
            lines.append(f"keys = jax.random.split(jax.random.PRNGKey({self.seed}), {len(arrays)})")
        key_index = {field.name: index for index, field in enumerate(arrays)}
        arguments = []
        for field in self.fields:
            if field.is_array:
                source = _initial_array_code(field, f"keys[{key_index[field.name]}]")
            else:
                source = repr(field.value)
            arguments.append(f"    {field.name}={source},")
        lines += [f"model = {self.name}(", *arguments, ")"]
        imports = ["import jax", "import equinox as eqx"]
        if any("jnp." in line for line in lines):
            imports.insert(1, "import jax.numpy as jnp")
        if buffers:
            imports.insert(0, "from typing import ClassVar\n")
        return script(imports, *lines)

    def example_input_shape(self) -> ShapeTuple:
        """The first of a few likely shapes that the expression accepts (found abstractly).

        Tried in order, for each array field of shape ``s``: ``(5, s[0])`` (a batch, as for the
        seed's ``x @ weight``), ``(s[0],)``, ``(5, s[-1])``, ``(s[-1],)``, ``(5, *s)`` and ``s``;
        then ``(5,)`` and ``()``. If none fits, ``(5,)``.
        """
        structure = self.model_dump_json(exclude={"seed"})  # the seed changes no shape
        return _example_shapes.get_or_make(structure, self._find_example_shape)

    def _find_example_shape(self) -> ShapeTuple:
        candidates: dict[ShapeTuple, None] = {}
        for field in self._array_fields():
            shape = tuple(field.shape or ())
            if shape:
                for candidate in (
                    (BATCH, shape[0]),
                    (shape[0],),
                    (BATCH, shape[-1]),
                    (shape[-1],),
                    (BATCH, *shape),
                    shape,
                ):
                    candidates[candidate] = None
        candidates.update({(BATCH,): None, (): None})
        try:
            abstract_model = jax.eval_shape(self.build)
        except Exception:  # noqa: BLE001 - e.g. shapes too large to describe; the server refuses
            return (BATCH,)
        for candidate in list(candidates)[:48]:
            try:
                jax.eval_shape(
                    self.apply, abstract_model, jax.ShapeDtypeStruct(candidate, "float32")
                )
            except Exception:  # noqa: BLE001 - any failure means "not this shape"
                continue
            return candidate
        return (BATCH,)

    def array_shapes(self) -> Iterator[ShapeTuple]:
        for field in self._array_fields():
            yield tuple(field.shape or ())


def _initial_array(field: CustomField, key: jax.Array) -> jax.Array:
    shape = tuple(field.shape or ())
    match field.init:
        case "normal":
            return jax.random.normal(key, shape)
        case "uniform":
            return jax.random.uniform(key, shape)
        case "zeros":
            return jnp.zeros(shape)
        case "ones":
            return jnp.ones(shape)
        case "constant":
            return jnp.full(shape, float(field.value), dtype=jnp.float32)
    raise ValueError(f"unknown init {field.init!r}")


def _initial_array_code(field: CustomField, key: str) -> str:
    shape = shape_text(field.shape or ())
    match field.init:
        case "normal":
            return f"jax.random.normal({key}, {shape})"
        case "uniform":
            return f"jax.random.uniform({key}, {shape})"
        case "zeros":
            return f"jnp.zeros({shape})"
        case "ones":
            return f"jnp.ones({shape})"
        case "constant":
            return f"jnp.full({shape}, {float(field.value)!r}, dtype=jnp.float32)"
    raise ValueError(f"unknown init {field.init!r}")
