"""The report package's imports, read with `ast`: no module imports itself back through others
(an import circle), and no module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import harness.report

PACKAGE = "harness.report"
ROOT = Path(harness.report.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((PACKAGE, *parts))] = path
    return found


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run (anywhere, also inside functions), not those under
    `if TYPE_CHECKING:`."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
               for n in ast.walk(node)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
            and id(n) not in skipped]


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package's modules it imports (`from p import m` names module p.m)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
            elif node.module in modules:
                subs = {f"{node.module}.{a.name}" for a in node.names}
                targets |= (subs & modules.keys()) or {node.module}
        edges[name] = targets - {name}
    return edges


def _circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules on it, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circle_in_the_report() -> None:
    edges = _edges(_modules())
    assert f"{PACKAGE}.load" in edges and f"{PACKAGE}.sections.accuracy" in edges
    assert _circle(edges) is None, " -> ".join(_circle(edges) or [])


def test_the_circle_check_finds_a_circle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circle(edges) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": set()}) is None


def test_no_module_uses_another_modules_private_names() -> None:
    modules = _modules()
    reaches = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in _runtime_imports(tree):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                for a in node.names:
                    if a.name.startswith("_"):
                        reaches.append(f"{name}: from {node.module} import {a.name}")
                    if f"{node.module}.{a.name}" in modules:
                        aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                reaches.append(f"{name}: {node.value.id}.{node.attr}")
    assert reaches == []
