"""The direction of dependencies, read from the source with ``ast`` (nothing is imported).

- ``library/`` imports nothing from ``app``: the library knows nothing of the web.
- Nothing outside ``app/routers/`` and ``app/main.py`` imports ``app.routers``: routers do
  HTTP and sit on top; services, engines and templates live below them.
- ``app/`` has no import cycle, counting imports inside functions too (a lazy import that
  breaks a cycle at run time is still a cycle in the design).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "library")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(*folders: str) -> dict[str, Path]:
    return {
        module_name(path): path
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
    }


MODULES = source_files(*PACKAGES)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (a module, or the package holding the name)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path) -> set[str]:
    """The project modules that ``module`` imports anywhere in its file, except under
    ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}")
                if target:
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


GRAPH = {module: imports_of(module, path) for module, path in MODULES.items()}


def _is_router(module: str) -> bool:
    return module == "app.routers" or module.startswith("app.routers.")


def test_the_library_imports_nothing_from_the_app():
    violations = [
        f"{module} imports {target}"
        for module, targets in sorted(GRAPH.items())
        if module.split(".")[0] == "library"
        for target in sorted(targets)
        if target.split(".")[0] == "app"
    ]
    assert violations == []


def test_only_the_app_factory_and_routers_import_routers():
    allowed = {"app.main"}
    violations = [
        f"{module} imports {target}"
        for module, targets in sorted(GRAPH.items())
        if not _is_router(module) and module not in allowed
        for target in sorted(targets)
        if _is_router(target)
    ]
    assert violations == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_app_has_no_import_cycle():
    app = {m: {t for t in targets if t.startswith("app")} for m, targets in GRAPH.items()}
    app = {m: t for m, t in app.items() if m.startswith("app")}
    assert find_cycles(app) == []


def test_the_checks_find_what_they_look_for(tmp_path):
    """The walker sees lazy and relative imports, skips TYPE_CHECKING ones, and finds cycles
    (so the tests above can fail)."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    source = tmp_path / "panel.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from .results import FIELDS\n"
        "if TYPE_CHECKING:\n"
        "    from app.store import ModuleRecord\n"
        "def engine():\n"
        "    from app.routers.runs import get_engine\n"
    )
    assert imports_of("app.runs.panel", source) == {"app.runs.results", "app.routers.runs"}
    assert "app.routers.health" in GRAPH["app.main"]
