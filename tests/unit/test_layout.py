"""The layout's seams, read from the source: the sandbox package has no import circle, and
the host takes nothing from the code that runs inside a sandbox but the torch-free contracts."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from core.settings import PROJECT_ROOT

SANDBOX = PROJECT_ROOT / "sandbox"
# What the host's sandbox package may import of graders/: contracts, no in-sandbox code.
HOST_CONTRACTS = {"graders.job", "graders.fork_wire", "graders.errors"}


def is_project_module(name: str) -> bool:
    path = PROJECT_ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function, by absolute name."""
    package = path.relative_to(PROJECT_ROOT).parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parent = package[: len(package) - node.level + 1] if node.level else ()
            base = ".".join([*parent, *([node.module] if node.module else [])])
            found.add(base)
            # `from sandbox import pool` imports the module sandbox.pool
            found |= {
                f"{base}.{a.name}" for a in node.names if is_project_module(f"{base}.{a.name}")
            }
    return found


def sandbox_graph() -> dict[str, set[str]]:
    modules = {f"sandbox.{path.stem}": path for path in SANDBOX.glob("*.py")}
    return {name: imported_modules(path) & modules.keys() for name, path in modules.items()}


def cycle_in(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of `graph` as the path that closes it, or [] when it has none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return []
        path.append(node)
        for target in sorted(graph[node]):
            if found := visit(target):
                return found
        path.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        if found := visit(node):
            return found
    return []


def test_the_sandbox_package_has_no_import_circle():
    graph = sandbox_graph()
    assert {"sandbox.docker_backend", "sandbox.fork_sandbox", "sandbox.base"} <= graph.keys()
    assert cycle_in(graph) == [], " -> ".join(cycle_in(graph))


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert cycle_in(graph) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) == []


def test_the_host_imports_only_contracts_from_graders():
    for path in sorted(SANDBOX.glob("*.py")):
        graders = {m for m in imported_modules(path) if m.split(".")[0] == "graders"}
        assert graders <= HOST_CONTRACTS, f"{path.name} imports {sorted(graders - HOST_CONTRACTS)}"


def test_the_fast_paths_wire_format_needs_only_the_standard_library():
    """Both the host and the in-sandbox server import it: it holds no torch, no grader code."""
    imported = imported_modules(PROJECT_ROOT / "graders" / "fork_wire.py")
    assert {m.split(".")[0] for m in imported} - {"__future__"} <= sys.stdlib_module_names
    server = imported_modules(PROJECT_ROOT / "graders" / "fork_server.py")
    assert "graders.fork_wire" in server


def test_backends_take_nothing_from_each_other():
    backends = {"sandbox.docker_backend", "sandbox.process_backend", "sandbox.fake_backend"}
    graph = sandbox_graph()
    for backend in sorted(backends):
        assert graph[backend] & backends == set(), backend
