"""The house rules of docs/architecture.md, checked on the package's own source: no import
cycles (lazy and type-only imports included), no private name crossing modules, public names
of each package in __all__, no module past the size a reader can hold."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

import mlserve

PACKAGE_DIR = Path(mlserve.__file__).parent
MAX_MODULE_LINES = 600


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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
            visit(node)
    return groups


def test_the_package_has_no_import_cycles() -> None:
    graph = grimp.build_graph("mlserve", cache_dir=None)  # every import statement, lazy too
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    # Strict: a submodule that imports its own package's __init__ while the __init__ imports
    # it (re-exports, factories) is a cycle too. Implementations import the base module.
    assert _strongly_connected(edges) == []


def test_no_private_name_is_imported_from_another_module() -> None:
    crossing = []
    for module, path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    name = alias.name
                    if name.startswith("_") and not name.startswith("__"):
                        crossing.append(f"{module}: from {node.module} import {name}")
    assert crossing == []


def test_every_package_lists_its_public_names() -> None:
    missing = []
    for info in pkgutil.walk_packages(mlserve.__path__, "mlserve."):
        if not info.ispkg or info.name == "mlserve.samples":
            continue
        module = importlib.import_module(info.name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            missing.append(f"{info.name}: no __all__")
            continue
        for name in exported:  # a name it defines or re-exports, or one of its submodules
            if (
                not hasattr(module, name)
                and importlib.util.find_spec(f"{info.name}.{name}") is None
            ):
                missing.append(f"{info.name}: {name} in __all__ is undefined")
    assert missing == []


@pytest.mark.parametrize(("module", "path"), list(_modules()), ids=[m for m, _ in _modules()])
def test_no_module_is_over_the_size_limit(module: str, path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines; split it by purpose"
