"""The one Jinja environment: every page and fragment renders through :data:`templates`.

Its filters (``count``, ``nbytes``, ``num``, ``shape``, ``params_text``, ``node_id``, ``q``) and
globals (``accessor``, ``CHILDREN_PAGE``, the pytree operations' ``ops_*``) are configured here
and nowhere else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import quote

from fastapi.templating import Jinja2Templates

from app import pytree_ops
from app.text import bytes_text, count_text, number_text, params_text, shape_text
from app.trees import CHILDREN_PAGE, tree_at_accessor

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def node_id(path: str) -> str:
    """A stable HTML id for the tree node at ``path``."""
    return "node-" + hashlib.blake2s(path.encode(), digest_size=6).hexdigest()


def url_quote(value: object) -> str:
    """``value`` as one URL path segment or query value."""
    return quote(str(value), safe="")


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
FILTERS = {
    "node_id": node_id,
    "count": count_text,
    "nbytes": bytes_text,
    "num": number_text,
    "shape": shape_text,
    "params_text": params_text,
    "q": url_quote,
}
"""Every filter the templates use, by name."""

templates.env.filters.update(FILTERS)
templates.env.globals.update(
    accessor=tree_at_accessor,
    CHILDREN_PAGE=CHILDREN_PAGE,
    ops_filters=pytree_ops.FILTERS,
    ops_filter_help=pytree_ops.FILTER_HELP,
    ops_examples=pytree_ops.EXAMPLES,
)
