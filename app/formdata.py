"""Reading HTML forms: flat dotted names to nested values, indices, and the bounds on both.

Every form of the playground is read here, so the same bounds hold everywhere. A name such as
``rows.0.params.in_features`` nests into ``{"rows": [{"params": {"in_features": "3"}}]}``; a
part made of digits is a list index. What cannot be read is refused with a 422 that names the
field and the limit, never a 500:

* at most ``MAX_FORM_FIELDS`` fields in one form,
* a name of at most ``MAX_NAME_LENGTH`` characters and ``MAX_NAME_DEPTH`` dotted parts (so the
  nesting, and every walk over it, is shallow whatever is posted),
* an index of ASCII digits only (``²`` or ``١`` are digits to Python's ``str.isdigit`` but not
  to ``int``), at most ``MAX_INDEX_DIGITS`` of them,
* at most ``MAX_LIST_ITEMS`` items in one list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from app.errors import PlaygroundError

MAX_FORM_FIELDS = 2_000
MAX_NAME_LENGTH = 200
MAX_NAME_DEPTH = 8
MAX_INDEX_DIGITS = 3
MAX_LIST_ITEMS = 100

_INDEX = re.compile(rf"[0-9]{{1,{MAX_INDEX_DIGITS}}}")


def _shown(name: str) -> str:
    return repr(name[:60] + ("..." if len(name) > 60 else ""))


def parse_index(text: str, field: str) -> int:
    """``text`` as a list index (ASCII digits, at most ``MAX_INDEX_DIGITS``); 422 naming
    ``field`` otherwise."""
    if not _INDEX.fullmatch(text):
        raise PlaygroundError(
            422,
            f"{field}: {_shown(text)} is not an index; an index is a whole number written with "
            f"the digits 0-9, at most {MAX_INDEX_DIGITS} of them.",
            field=field,
        )
    return int(text)


def _is_index(part: str) -> bool:
    return part.isdigit() or part.isdecimal() or part.isnumeric()


def nest_pairs(
    pairs: Iterable[tuple[Any, Any]], keep_empty: bool = True, roots: Iterable[str] | None = None
) -> dict[str, Any]:
    """Flat ``(name, value)`` pairs to nested dicts and lists (the last of a repeated name
    wins). Non-text values are left out; so are empty ones unless ``keep_empty`` (values are
    stripped then), and names whose first part is not in ``roots`` when given."""
    roots = None if roots is None else set(roots)
    root: dict[str, Any] = {}
    count = 0
    for name, value in pairs:
        count += 1
        if count > MAX_FORM_FIELDS:
            raise PlaygroundError(
                422,
                f"The form has more than {MAX_FORM_FIELDS} fields; the limit is {MAX_FORM_FIELDS}.",
                field="form",
            )
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        path = _split(name)
        if roots is not None and path[0] not in roots:
            continue
        if not keep_empty:
            value = value.strip()
            if not value:
                continue
        node = root
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return _lists(root, "")


def _split(name: str) -> list[str]:
    if len(name) > MAX_NAME_LENGTH:
        raise PlaygroundError(
            422,
            f"The field name {_shown(name)} has {len(name)} characters; the limit is "
            f"{MAX_NAME_LENGTH}.",
            field=name[:MAX_NAME_LENGTH],
        )
    path = name.split(".")
    if len(path) > MAX_NAME_DEPTH:
        raise PlaygroundError(
            422,
            f"The field name {_shown(name)} has {len(path)} dotted parts; the limit is "
            f"{MAX_NAME_DEPTH}.",
            field=name,
        )
    for part in path:
        if _is_index(part):
            parse_index(part, name)
    return path


def _lists(node: Any, where: str) -> Any:
    """Dicts whose keys are all indices become lists in index order (gaps close up). The
    depth is at most ``MAX_NAME_DEPTH``, so the recursion is bounded."""
    if not isinstance(node, dict):
        return node
    converted = {
        key: _lists(value, f"{where}.{key}" if where else key) for key, value in node.items()
    }
    if converted and all(_is_index(key) for key in converted):
        if len(converted) > MAX_LIST_ITEMS:
            raise PlaygroundError(
                422,
                f"{where}: {len(converted)} items; the limit is {MAX_LIST_ITEMS}.",
                field=where,
            )
        return [converted[key] for key in sorted(converted, key=int)]
    return converted
