"""Imports run one way: no module of ``app/`` or ``engine/`` imports, directly or through others,
a module that imports it back.

The graph is read from the source (``ast``), not from a running interpreter, so every import
counts: at module level, inside functions, and under ``if TYPE_CHECKING:`` (an annotation-only
import still ties the two modules together). Run this file as a script to print the graph's
circles: ``python tests/app/test_import_graph.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "engine")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(current: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module an ``import``/``from ... import`` statement names."""
    if level == 0:
        return module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_graph(packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module -> the modules of ``packages`` it imports (a submodule imported by name counts as
    the submodule, not as its package)."""
    files = {module_name(p): p for pkg in packages for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(mod, is_package, node.level, node.module)
                for a in node.names:
                    sub = f"{src}.{a.name}" if src else a.name
                    targets.append(sub if sub in files else src)
            for t in targets:
                # "import engine.models.base" names the deepest module of ours it reaches
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle():
    g = {"app.a": {"app.b"}, "app.b": {"app.c"}, "app.c": {"app.a"}, "app.d": {"app.a"}}
    assert circles(g) == [["app.a", "app.b", "app.c"]]
    assert circles({"app.a": {"app.b"}, "app.b": set()}) == []


def test_imports_are_resolved_as_python_does():
    assert _resolve("app.widgets.compare", False, 2, "worker") == "app.worker"
    assert _resolve("app.widgets", True, 1, "canvas") == "app.widgets.canvas"
    assert _resolve("app.editing", False, 1, None) == "app"
    g = import_graph()
    assert "app.worker" in g["app.widgets.compare"]
    assert "app.actions" in g["app.main_window"]  # "from . import actions" names the module
    assert "engine.models.base" in g["engine.figures"]
    assert "engine.distributed" in g["engine.train"]
    # imported only inside functions, and still edges of the graph
    assert {"engine.cli.options", "engine.cli.tasks", "engine.recipes"} <= g["engine.cli.commands"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package):
    found = [c for c in circles(import_graph()) if c[0].split(".")[0] == package]
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


if __name__ == "__main__":
    graph = import_graph()
    for comp in circles(graph):
        print("circle:", ", ".join(comp))
        for m in comp:
            print(f"  {m} -> {', '.join(sorted(graph[m] & set(comp)))}")
    print(f"{len(graph)} modules, {sum(len(v) for v in graph.values())} imports")
