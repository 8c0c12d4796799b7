"""No import cycles in mediasrv/: every arrow between modules points one way.

The graph is read from the source (AST), not from what happens to be imported at run time:
every ``import``/``from ... import`` anywhere in a module counts (also inside functions and under
``if TYPE_CHECKING``, where a cycle is only hidden, not gone).  ``from .pkg import name`` is an edge
to ``pkg.name`` if that is a module, else to the package's ``__init__``; importing a module from
outside its package is also an edge to that package's ``__init__`` (Python runs it first).
Strongly connected components of more than one module are the cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "mediasrv"

# Cycles that other parts of issue 10 are removing (the lead empties this list as they land).
# A cycle passes only while it stays inside one of these sets; any other cycle fails.
KNOWN_CYCLES: list[frozenset[str]] = []  # none: every cycle found is a failure


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under *root* (a package's name for its __init__)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _known(name: str, mods: dict[str, Path]) -> str | None:
    """The longest prefix of *name* that is one of our modules (a name inside a module: that module)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_known(a.name, mods) or "" for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets.add(_known(origin, mods) or "")
                targets.update(_known(f"{origin}.{a.name}", mods) or "" for a in node.names)
        for target in targets - {"", mod}:
            graph[mod].add(target)
            # importing pkg.sub from outside pkg runs pkg/__init__ first
            parent = target.rpartition(".")[0]
            while parent and not (mod == parent or mod.startswith(parent + ".")):
                if parent in mods:
                    graph[mod].add(parent)
                parent = parent.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _path_through(graph: dict[str, set[str]], component: list[str]) -> str:
    """One concrete loop inside *component*, for the failure message: a -> b -> ... -> a."""
    members = set(component)
    start = component[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    loop = [start]
                    while node != start:
                        loop.append(node)
                        node = prev[node]
                    return " -> ".join([start, *reversed(loop[1:]), start])
                if target not in prev:
                    prev[target] = node
                    nxt.append(target)
        frontier = nxt
    return " <-> ".join(component)


def test_the_checker_finds_a_cycle_and_its_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert _path_through(graph, ["a", "b", "c"]) == "a -> b -> c -> a"


def test_the_graph_counts_type_checking_imports_and_package_inits(tmp_path: Path) -> None:
    pkg = tmp_path / "mediasrv"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .x import X\n")
    (pkg / "sub" / "x.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..y import Y\n")
    (pkg / "y.py").write_text("from .sub.x import X\n")
    graph = import_graph(modules(pkg))
    assert graph["mediasrv.y"] == {"mediasrv.sub.x", "mediasrv.sub"}
    assert graph["mediasrv.sub.x"] == {"mediasrv.y"}
    assert cycles(graph) == [["mediasrv.sub", "mediasrv.sub.x", "mediasrv.y"]]


def test_no_import_cycles_in_mediasrv() -> None:
    graph = import_graph(modules())
    unknown = [c for c in cycles(graph) if not any(set(c) <= known for known in KNOWN_CYCLES)]
    assert not unknown, "import cycles:\n" + "\n".join(_path_through(graph, c) for c in unknown)


def test_content_does_not_import_the_real_time_path() -> None:
    """content/ is where audio comes from; media/ (clock, plane, player ...) uses it, never the reverse."""
    graph = import_graph(modules())
    wrong = sorted((m, t) for m, targets in graph.items() if m.startswith("mediasrv.content")
                   for t in targets if t == "mediasrv.media" or t.startswith("mediasrv.media."))
    assert not wrong, f"content/ imports media/: {wrong}"
