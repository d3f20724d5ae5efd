"""The import graph of ``kokpit/``: layers point one way and no module imports itself back.

Layers, lowest first (a module may import its own layer and the ones below it):

    api, pki ← runtime ← local ← providers ← controllers ← cli

``local`` sits below ``providers`` because the ``process`` control-plane runtime and the KWOK
stand-in kubelet reuse the local cluster's supervisor, component command lines and binaries;
it must not import providers, controllers or the CLI. Operators under ``controllers`` do not
import one another. Imports under ``if TYPE_CHECKING:`` count: a circle in types is a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2] / "kokpit"
LAYERS = {"api": 0, "pki": 0, "runtime": 1, "local": 2, "providers": 3, "controllers": 4, "cli": 5}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_imports_point_down() -> None:
    upward = [
        f"{a} → {b}"
        for a, edges in _graph().items()
        for b in edges
        if (la := _layer(a)) is not None and (lb := _layer(b)) is not None and lb > la
    ]
    assert not upward, "imports that point up a layer:\n" + "\n".join(sorted(upward))


def test_operators_do_not_import_each_other() -> None:
    def operator(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "controllers" else None

    across = [
        f"{a} → {b}"
        for a, edges in _graph().items()
        for b in edges
        if operator(a) and operator(b) and operator(a) != operator(b)
    ]
    assert not across, "\n".join(sorted(across))


def test_no_import_circles() -> None:
    graph = _graph()

    # A package's __init__ re-exporting its own modules is not a circle of ideas: count an
    # edge into a package only when it comes from outside that package.
    def edges(a: str) -> set[str]:
        return {b for b in graph[a] if not a.startswith(b + ".")}

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_graph_is_read() -> None:
    """The checks above look at real edges (a parser that found none would pass them all)."""
    graph = _graph()
    assert "kokpit.runtime" in graph["kokpit.controllers.machine.controller"]
    assert "kokpit.local.assets" in graph["kokpit.local.build"]
    assert sum(len(e) for e in graph.values()) > 100
