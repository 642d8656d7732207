"""The import structure of ``streams/``: no package-level cycle, no upward import.

A node is a subpackage (``streams.relay``) or a top-level module (``streams.client``).
Every import counts, including those inside functions: a lazy import is still a
dependency a maintainer has to follow. Run alone (no broker, no database) with
``.venv/bin/python -m pytest tests/test_layering.py -q``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "streams"

# Product layers below the agents and the demo: none of them may import either.
LOWER = (
    "relay",
    "db",
    "avro",
    "outbox",
    "buffers",
    "webhooks",
    "projectconfigs",
    "lag",
    "backfill",
    "publisher",
    "client",
    "settings",
)
# The only module allowed to import the demo package (``streams up``).
DEMO_USERS = {"streams.up"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _node(module: str) -> str:
    """``streams.relay.drain`` -> ``streams.relay``; ``streams.client`` stays itself."""
    return ".".join(module.split(".")[:2])


def _imports(path: Path) -> Iterator[str]:
    """Every ``streams.*`` module that ``path`` imports, with relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for stmt in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(stmt, ast.Import):
            yield from (a.name for a in stmt.names if a.name.split(".")[0] == "streams")
        elif isinstance(stmt, ast.ImportFrom):
            base = stmt.module or ""
            if stmt.level:
                anchor = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "streams":
                continue
            if base == "streams":  # `from streams import topics` names modules
                yield from (f"streams.{a.name}" for a in stmt.names)
            else:
                yield base


def module_imports() -> dict[str, set[str]]:
    """Module name -> the ``streams`` modules it imports."""
    return {
        _module_name(p): set(_imports(p))
        for p in sorted(ROOT.rglob("*.py"))
        if "migrations" not in p.parts
    }


def package_graph() -> dict[str, set[str]]:
    """Node -> the other nodes it imports (edges inside one node are dropped)."""
    graph: dict[str, set[str]] = {}
    for module, targets in module_imports().items():
        src = _node(module)
        edges = graph.setdefault(src, set())
        edges.update(_node(t) for t in targets if _node(t) != src and t != "streams")
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_package_level_import_cycle() -> None:
    assert cycles(package_graph()) == []


def test_lower_layers_import_neither_agents_nor_demo() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in module_imports().items()
        if _node(module).removeprefix("streams.") in LOWER
        for target in targets
        if _node(target) in ("streams.agents", "streams.demo")
    )
    assert upward == []


def test_only_streams_up_imports_the_demo() -> None:
    users = sorted(
        module
        for module, targets in module_imports().items()
        if _node(module) != "streams.demo" and any(_node(t) == "streams.demo" for t in targets)
    )
    assert set(users) <= DEMO_USERS, users


def test_the_check_sees_a_cycle() -> None:
    """The detector itself: a two-node cycle is found, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}}) == []


if __name__ == "__main__":
    for component in cycles(package_graph()):
        print("cycle:", " <-> ".join(component))
    for module, targets in sorted(module_imports().items()):
        if _node(module).removeprefix("streams.") in LOWER:
            for target in sorted(targets):
                if _node(target) in ("streams.agents", "streams.demo"):
                    print("upward:", module, "->", target)
