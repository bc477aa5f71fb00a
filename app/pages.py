"""What the module page shows: its context, the LayerMap matrices, a leaf's values as a table.

``app.routers.pages`` serves the page and its fragments; everything they compute is here.
"""

from __future__ import annotations

from typing import Any

import jax

from app.catalog import CATALOG, SEED_KIND, parse_spec
from app.devices import device_label
from app.forms import BuildForm, build_form, catalog_groups
from app.modules import build_module, model_roles
from app.runs.panel import run_panel_context
from app.services import Services
from app.store import ModuleRecord
from app.trees import describe_tree, path_of

PAGE_MAX_NODES = 800
"""Nodes rendered in the first view of a tree; deeper ones load when opened."""
FRAGMENT_MAX_NODES = 400
"""Nodes rendered in one lazily loaded fragment."""
OPEN_ALL_BELOW = 40
"""Trees with at most this many nodes render with every inner node open."""


def find_layermaps(model: Any) -> list[dict]:
    """Every LayerMap in ``model`` as a receiver-by-sender matrix for the page."""
    from library import LayerMap

    found = []
    flat, _ = jax.tree_util.tree_flatten_with_path(
        model, is_leaf=lambda node: isinstance(node, LayerMap)
    )
    for keys, node in flat:
        if not isinstance(node, LayerMap):
            continue
        path = path_of(keys)
        rows = list(node.rows())
        cols = sorted({j for i in rows for j in node.cols_of(i)} | set(rows))
        cells = []
        for i in rows:
            row = []
            for j in cols:
                if (i, j) in node:
                    module = node[i, j]
                    entry_path = f"{path}._layers[{i!r}][{j!r}]"
                    role = "layer" if i == j else ("forward" if j < i else "backward")
                    row.append(
                        {
                            "type": type(module).__name__,
                            "path": entry_path,
                            "role": role,
                            "i": i,
                            "j": j,
                        }
                    )
                else:
                    row.append(None)
            cells.append((i, row))
        found.append({"path": path, "cols": cols, "rows": cells})
    return found


def open_depth(tree: dict) -> int:
    """How deep the page opens a tree: all of a small one, two levels of a larger one."""
    nodes = 0
    stack = [tree]
    while stack and nodes <= OPEN_ALL_BELOW:
        node = stack.pop()
        nodes += 1
        stack.extend(node.get("children") or [])
    return 99 if nodes <= OPEN_ALL_BELOW else 2


def module_context(
    services: Services,
    workspace: str,
    record: ModuleRecord,
    *,
    form: BuildForm | None = None,
    readonly: bool = False,
) -> dict:
    """What ``module.html`` and ``partials/app.html`` need for ``record`` (but the request).

    The slots of other parts get ``module`` (the record), ``spec`` (its catalog entry) and
    ``model`` (the built module); the run panel gets ``run_panel``.
    """
    store = services.store
    model = store.load(record)
    spec = record.spec()
    tree = describe_tree(
        model, roles=model_roles(model), max_nodes=PAGE_MAX_NODES, fold=True, stats=True
    )
    modules = store.list(workspace) if not readonly else []
    if form is None:
        form = build_form(record.kind, record.params)
    return {
        "module": record,
        "spec": spec,
        "model": model,
        "tree": tree,
        "open_depth": open_depth(tree),
        "entry": type(spec),
        "layermaps": find_layermaps(model),
        "code": spec.code(),
        "modules": modules,
        "catalog": CATALOG,
        "catalog_groups": catalog_groups(),
        "form": form,
        "readonly": readonly,
        "device": device_label(),
        "settings": services.settings,
        "notices": store.pop_notices(workspace),
        "run_panel": run_panel_context(record, spec, model, services),
    }


def latest_or_seed(services: Services, workspace: str) -> ModuleRecord:
    """The newest module of ``workspace``; for an empty one, a new seed example."""
    records = services.store.list(workspace)
    if records:
        return records[0]
    record, _ = build_module(services, workspace, parse_spec(SEED_KIND, {}))
    return record


def values_table(payload: dict) -> dict:
    """The values of a leaf payload as a table: column headers and ``(row header, cells)``.

    A 1-D array is one column; higher ranks are rows indexed by all axes but the last.
    """
    shape = payload["kept_shape"]
    values = payload["values"]
    if len(shape) == 0:
        return {"columns": ["value"], "rows": [("", [values])]}
    if len(shape) == 1:
        return {"columns": ["value"], "rows": [(str(i), [v]) for i, v in enumerate(values)]}
    rows = []

    def walk(node: Any, index: tuple[int, ...]) -> None:
        if len(index) == len(shape) - 1:
            header = str(index[0]) if len(index) == 1 else "(" + ", ".join(map(str, index)) + ")"
            rows.append((header, node))
            return
        for i, child in enumerate(node):
            walk(child, (*index, i))

    walk(values, ())
    return {"columns": [str(j) for j in range(shape[-1])], "rows": rows}


def input_order(form: BuildForm) -> list[str]:
    """The names of the form's inputs, in the order they are shown."""
    names = []
    for item in form.items:
        if hasattr(item, "groups"):
            names.append(item.name)
            names.extend(f.name for group in item.groups for f in group.fields)
        else:
            names.append(item.name)
    return names
