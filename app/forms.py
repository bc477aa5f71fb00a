"""HTML forms rendered from the catalog's pydantic models.

The form of a kind is made from its catalog model alone: each field's ``title`` is the label,
its ``description`` the help text, its default the initial value, its bounds (``ge``, ``le``,
...) the input's ``min``/``max``, ``Literal`` types a select, ``bool`` a checkbox, and the
``json_schema_extra`` widget hints of ``app.catalog.base`` pick the rest (``shape``,
``expression``, ``rows`` for the stack's rows, ``fields`` for a custom module's fields).

Input names are the dotted paths that ``app.catalog.params_from_form`` nests back:
``in_dim``, ``rows.0.params.in_features``, ``fields.1.shape``. A checkbox follows a hidden input
of the same name holding ``false`` (the last value wins), so an unchecked box sends ``false``.

Submitted forms are validated by the same model (``params_from_form`` + ``parse_spec``); the
errors of a ``ValidationError`` are placed next to the field their location names.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from app.catalog import CATALOG, STACK_LAYERS, CatalogEntry, entry_class
from app.errors import PlaygroundError
from app.formdata import nest_pairs, parse_index

FORM_ACTIONS = ("change-kind", "refresh", "add-row", "remove-row", "add-field", "remove-field")
"""What a form post to ``/build/form`` asks: re-render it after a change, add or remove a row."""


@dataclass
class FormField:
    """One input of a form, ready for the template."""

    name: str
    label: str
    help: str = ""
    widget: str = "text"
    value: str = ""
    checked: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)
    min: str | None = None
    max: str | None = None
    step: str | None = None
    required: bool = False
    error: str | None = None
    advanced: bool = False
    placeholder: str = ""
    refresh: bool = False
    """Whether changing the input re-renders the form (a row's kind, a custom field's role)."""

    @property
    def id(self) -> str:
        return "f-" + self.name.replace(".", "-")

    @property
    def help_id(self) -> str:
        return self.id + "-help"

    @property
    def error_id(self) -> str:
        return self.id + "-error"


@dataclass
class RowGroup:
    """One row of a list editor: the stack's row ``i`` or the custom module's field ``i``."""

    index: int
    legend: str
    fields: list[FormField]


@dataclass
class ListEditor:
    """The stack's rows or a custom module's fields: groups of inputs, add and remove buttons."""

    name: str
    label: str
    help: str
    kind: str  # "rows" or "fields"
    groups: list[RowGroup]
    min_items: int
    max_items: int
    error: str | None = None

    @property
    def id(self) -> str:
        return "f-" + self.name

    @property
    def item_noun(self) -> str:
        return "row" if self.kind == "rows" else "field"


@dataclass
class BuildForm:
    """The build form of one kind: its inputs in order (``FormField`` or ``ListEditor``)."""

    kind: str
    title: str
    summary: str
    items: list[FormField | ListEditor]
    errors: list[str] = field(default_factory=list)
    """Errors that name no single input (limits, the whole model)."""
    focus: str | None = None
    """The id of the input to focus after the form is re-rendered."""

    @property
    def basic(self) -> list[FormField | ListEditor]:
        return [item for item in self.items if not getattr(item, "advanced", False)]

    @property
    def advanced(self) -> list[FormField]:
        return [item for item in self.items if getattr(item, "advanced", False)]

    @property
    def advanced_has_error(self) -> bool:
        return any(item.error for item in self.advanced)

    @property
    def error_count(self) -> int:
        count = len(self.errors)
        for item in self.items:
            if isinstance(item, ListEditor):
                count += bool(item.error)
                count += sum(bool(f.error) for g in item.groups for f in g.fields)
            else:
                count += bool(item.error)
        return count


# Values -----------------------------------------------------------------------------------


def nest_form(form: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Flat dotted names to nested dicts and lists, keeping empty values (for re-display).

    Like ``params_from_form`` but nothing is dropped: the form shows what the user typed.
    """
    return nest_pairs(form, keep_empty=True)


def display_value(value: Any) -> str:
    """A value as the text of an input: ``2,3`` for a shape, ``0.5`` for a float."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        if len(value) == 0:
            return "()"
        return ",".join(display_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, BaseModel):
        return ""
    return str(value)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"on", "true", "1", "yes"}


# Types ------------------------------------------------------------------------------------


def _literal_options(annotation: Any) -> list[str] | None:
    """The choices of a ``Literal`` (or ``Literal | None``, or an Enum), else ``None``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return [str(arg) for arg in typing.get_args(annotation)]
    if origin in (typing.Union, types.UnionType):
        options: list[str] = []
        for arg in typing.get_args(annotation):
            if arg is type(None):
                continue
            inner = _literal_options(arg)
            if inner is None:
                return None
            options.extend(inner)
        return options or None
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [str(member.value) for member in annotation]
    return None


def _base_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return _base_type(args[0])
        return None
    return annotation


def _widget(info: FieldInfo) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    hint = extra.get("widget")
    if isinstance(hint, str):
        return hint
    if _literal_options(info.annotation) is not None:
        return "select"
    base = _base_type(info.annotation)
    if base is bool:
        return "checkbox"
    if base is int:
        return "integer"
    if base is float:
        return "number"
    return "text"


def _bounds(info: FieldInfo, widget: str) -> tuple[str | None, str | None]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low = item.gt + 1 if widget in ("integer", "seed") else item.gt
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high = item.lt - 1 if widget in ("integer", "seed") else item.lt
    return (None if low is None else str(low)), (None if high is None else str(high))


def _default(info: FieldInfo) -> Any:
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        try:
            return info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return None
    return None


def _label(name: str, info: FieldInfo) -> str:
    return info.title or name.replace("_", " ").capitalize()


# Building forms ---------------------------------------------------------------------------


def model_fields(
    model: type[BaseModel],
    values: Mapping[str, Any],
    errors: Mapping[str, str],
    prefix: str = "",
    refresh: Iterable[str] = (),
) -> list[FormField | ListEditor]:
    """The inputs of ``model``'s fields, named ``prefix + name``, showing ``values``."""
    items: list[FormField | ListEditor] = []
    refresh = set(refresh)
    for name, info in model.model_fields.items():
        full = prefix + name
        widget = _widget(info)
        value = values.get(name, _default(info)) if isinstance(values, Mapping) else None
        if widget in ("rows", "fields"):
            items.append(_list_editor(full, name, info, widget, value, errors))
            continue
        if widget == "params":
            continue  # a row's params are expanded by the rows editor
        items.append(_form_field(full, name, info, widget, value, errors, name in refresh))
    return items


def _form_field(
    full: str,
    name: str,
    info: FieldInfo,
    widget: str,
    value: Any,
    errors: Mapping[str, str],
    refresh: bool,
) -> FormField:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    low, high = _bounds(info, widget)
    step = extra.get("step")
    if step is None:
        step = "1" if widget in ("integer", "seed") else ("any" if widget == "number" else None)
    options = _literal_options(info.annotation) or []
    required = info.is_required()
    item = FormField(
        name=full,
        label=_label(name, info),
        help=info.description or "",
        widget=widget,
        min=low,
        max=high,
        step=None if step is None else str(step),
        required=required,
        error=errors.get(full),
        advanced=bool(extra.get("advanced", False)),
        refresh=refresh,
    )
    if widget == "checkbox":
        item.checked = _truthy(value) if value is not None else False
        item.value = "on"
    else:
        item.value = display_value(value)
    if widget == "select":
        allows_none = not required and _default(info) is None
        item.options = [(option, option) for option in options]
        if allows_none and "" not in dict(item.options):
            item.options.insert(0, ("", "(default)"))
    if widget == "shape":
        item.placeholder = "2,3"
    return item


def _list_editor(
    full: str,
    name: str,
    info: FieldInfo,
    widget: str,
    value: Any,
    errors: Mapping[str, str],
) -> ListEditor:
    rows = value if isinstance(value, list) else []
    groups = []
    min_items = max_items = None
    for item in info.metadata:
        if isinstance(item, annotated_types.MinLen):
            min_items = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            max_items = item.max_length
    for index, row in enumerate(rows):
        row_values = _as_mapping(row)
        prefix = f"{full}.{index}."
        if widget == "rows":
            fields = _stack_row_fields(prefix, row_values, errors)
            legend = f"Row {index + 1}"
        else:
            fields = _custom_field_fields(prefix, row_values, errors)
            legend = f"Field {index + 1}"
        groups.append(RowGroup(index=index, legend=legend, fields=fields))
    return ListEditor(
        name=full,
        label=_label(name, info),
        help=info.description or "",
        kind=widget,
        groups=groups,
        min_items=min_items or 0,
        max_items=max_items or 64,
        error=errors.get(full),
    )


def _as_mapping(row: Any) -> Mapping[str, Any]:
    if isinstance(row, BaseModel):
        return row.model_dump(mode="json")
    return row if isinstance(row, Mapping) else {}


def _stack_row_fields(
    prefix: str, row: Mapping[str, Any], errors: Mapping[str, str]
) -> list[FormField]:
    from app.catalog import StackRow

    fields = [
        item
        for item in model_fields(StackRow, row, errors, prefix, refresh=("kind",))
        if isinstance(item, FormField)
    ]
    layer = STACK_LAYERS.get(
        str(row.get("kind") or "eqx.nn.Linear"), next(iter(STACK_LAYERS.values()))
    )
    params = _as_mapping(row.get("params"))
    params_fields = [
        item
        for item in model_fields(layer, params, errors, prefix + "params.")
        if isinstance(item, FormField)
    ]
    # layer kind, its params, then the activation after it
    by_name = {f.name.rsplit(".", 1)[-1]: f for f in fields}
    ordered = [by_name.pop("kind")] if "kind" in by_name else []
    ordered += params_fields
    ordered += list(by_name.values())
    for item in ordered:
        item.advanced = False
    return ordered


def _custom_field_fields(
    prefix: str, row: Mapping[str, Any], errors: Mapping[str, str]
) -> list[FormField]:
    from app.catalog import CustomField

    fields = [
        item
        for item in model_fields(CustomField, row, errors, prefix, refresh=("role", "init"))
        if isinstance(item, FormField)
    ]
    role = str(row.get("role") or "param")
    init = str(row.get("init") or "normal")
    for item in fields:
        short = item.name.rsplit(".", 1)[-1]
        if short in ("shape", "init") and role == "static":
            item.widget = "unused"
        if short == "value" and role != "static" and init != "constant":
            item.widget = "unused"
    return fields


def build_form(
    kind: str,
    values: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
    form_errors: Iterable[str] = (),
    focus: str | None = None,
) -> BuildForm:
    """The form of ``kind`` showing ``values`` (default: the model's defaults)."""
    entry = entry_class(kind)
    if values is None:
        values = default_values(entry)
    return BuildForm(
        kind=kind,
        title=entry.title,
        summary=entry.summary,
        items=model_fields(entry, values, errors or {}),
        errors=list(form_errors),
        focus=focus,
    )


def default_values(entry: type[CatalogEntry]) -> dict[str, Any]:
    try:
        return entry().model_dump(mode="json")
    except ValidationError:
        return {}


def catalog_groups() -> list[tuple[str, list[tuple[str, str]]]]:
    """``[(group, [(kind, title), ...]), ...]`` in catalog order, for the picker."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for kind, entry in CATALOG.items():
        groups.setdefault(entry.group, []).append((kind, entry.title))
    return list(groups.items())


# Errors -----------------------------------------------------------------------------------


def field_names(form: BuildForm) -> set[str]:
    names: set[str] = set()
    for item in form.items:
        if isinstance(item, ListEditor):
            names.add(item.name)
            names.update(f.name for g in item.groups for f in g.fields)
        else:
            names.add(item.name)
    return names


def place_errors(error: ValidationError, known: set[str]) -> tuple[dict[str, str], list[str]]:
    """Each error of ``error`` at the input its location names (or the nearest enclosing one);
    errors that name no input are returned apart."""
    by_field: dict[str, str] = {}
    loose: list[str] = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item.get("loc", ())]
        message = _message(item)
        placed = False
        for end in range(len(loc), 0, -1):
            name = ".".join(loc[:end])
            if name in known:
                by_field[name] = (by_field[name] + "; " + message) if name in by_field else message
                placed = True
                break
        if not placed:
            where = ".".join(loc)
            loose.append(f"{where}: {message}" if where else message)
    return by_field, loose


def _message(item: Mapping[str, Any]) -> str:
    message = str(item.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message[:1].upper() + message[1:]


def edit_list(values: dict[str, Any], action: str, kind: str) -> tuple[dict[str, Any], str | None]:
    """Apply ``add-row``/``remove-row:i``/``add-field``/``remove-field:i`` to nested values.

    Returns the new values and the id of the input to focus.
    """
    verb, _, argument = action.partition(":")
    if verb not in FORM_ACTIONS or bool(argument) != verb.startswith("remove"):
        raise PlaygroundError(
            422,
            f"form_action: {action[:40]!r} is not an action of this form "
            "(add-row, remove-row:N, add-field, remove-field:N).",
            field="form_action",
        )
    key = "rows" if verb.endswith("row") else "fields"
    items = values.get(key)
    items = list(items) if isinstance(items, list) else []
    focus = None
    if verb.startswith("add"):
        if key == "rows":
            previous = _as_mapping(items[-1]) if items else {}
            size = _output_size(previous)
            new = {"kind": "eqx.nn.Linear", "activation": "identity", "params": {}}
            if size:
                new["params"] = {"in_features": size, "out_features": size}
        else:
            new = {"name": _fresh_name(items), "role": "param", "shape": "3", "init": "normal"}
        items.append(new)
        index = len(items) - 1
        focus = f"f-{key}-{index}-{'kind' if key == 'rows' else 'name'}"
    else:
        index = parse_index(argument, "form_action")
        if 0 <= index < len(items) and len(items) > 1:
            items.pop(index)
        focus = f"f-{key}-add"
    values = dict(values)
    values[key] = items
    return values, focus


def _output_size(row: Mapping[str, Any]) -> str | None:
    params = _as_mapping(row.get("params"))
    for name in ("out_features", "out_size"):
        value = params.get(name)
        if value not in (None, ""):
            return str(value)
    shape = params.get("shape")
    if isinstance(shape, str) and shape.strip():
        return shape.split(",")[-1].strip("() ") or None
    return None


def _fresh_name(items: list[Any]) -> str:
    taken = {str(_as_mapping(item).get("name", "")) for item in items}
    for candidate in ("scale", "shift", "gain", "offset"):
        if candidate not in taken:
            return candidate
    number = len(items) + 1
    while f"w{number}" in taken:
        number += 1
    return f"w{number}"
