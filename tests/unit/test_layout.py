"""The layout's seams, read from the source: the trust boundary (what runs in the sandbox
beside the answer, what judges on the host, the contract between them) holds in both
directions, the sandbox package has no import circle, and the host's backends take nothing
from the in-sandbox code."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from core.settings import PROJECT_ROOT

SANDBOX = PROJECT_ROOT / "sandbox"
# Runs inside the sandbox, beside the answer.
IN_SANDBOX = ("sandboxed",)
# Shared by both sides: the job, the fast path's wire format, the checks' parameters.
CONTRACT = ("contract",)
# Runs on the host only: judges facts, stores results, starts sandboxes.
HOST = ("graders", "services", "usecases", "api", "db", "worker", "cli", "sandbox", "bench", "core")
# What the contract may import besides itself.
CONTRACT_LIBRARIES = {"pydantic"}


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


def modules_of(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Every module file under the top-level `packages` (path relative to the project root)
    → what it imports; a folder that holds none fails the test that walks it."""
    found = {}
    for package in packages:
        paths = sorted((PROJECT_ROOT / package).rglob("*.py"))
        assert paths, f"{package}/ holds no module"
        for path in paths:
            found[path.relative_to(PROJECT_ROOT).as_posix()] = imported_modules(path)
    return found


def crossings(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """The modules under `packages` that import from a `forbidden` package, with what."""
    out = {}
    for path, imported in modules_of(packages).items():
        bad = sorted(m for m in imported if m.split(".")[0] in forbidden)
        if bad:
            out[path] = bad
    return out


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


def test_the_in_sandbox_code_and_the_contract_never_import_the_host():
    assert crossings(IN_SANDBOX + CONTRACT, HOST) == {}


def test_the_host_never_imports_the_in_sandbox_code():
    assert crossings(HOST, IN_SANDBOX) == {}


def foreign(packages: tuple[str, ...], allowed: set[str]) -> dict[str, list[str]]:
    """The modules under `packages` that import a top-level module outside `allowed`."""
    out = {}
    for path, imported in modules_of(packages).items():
        bad = sorted(m for m in imported if m.split(".")[0] not in allowed)
        if bad:
            out[path] = bad
    return out


def test_the_contract_imports_only_the_standard_library_pydantic_and_itself():
    """No torch, no numpy, nothing of the project outside `contract/`: both sides import it."""
    allowed = set(sys.stdlib_module_names) | CONTRACT_LIBRARIES | set(CONTRACT)
    assert foreign(CONTRACT, allowed) == {}


def test_the_boundary_tests_find_an_import_where_there_is_one():
    """The same walks over imports that do cross: the in-sandbox code imports the contract
    and torch, the host's judges the contract, the contract pydantic."""
    assert "contract.job" in crossings(IN_SANDBOX, CONTRACT)["sandboxed/harness.py"]
    assert "contract.checks" in crossings(("graders",), CONTRACT)["graders/spec.py"]
    allowed = set(sys.stdlib_module_names) | CONTRACT_LIBRARIES | set(CONTRACT)
    assert "torch" in foreign(IN_SANDBOX, allowed)["sandboxed/introspect.py"]
    assert "pydantic" in modules_of(CONTRACT)["contract/job.py"]


def test_the_sandbox_package_takes_only_the_contract_of_the_grader():
    """The backends start sandboxes and read their bytes: of the grader's packages they import
    the contract alone (the job, the frame, the fast path's wire format)."""
    grader = ("graders", "sandboxed")
    assert crossings(("sandbox",), grader) == {}
    assert crossings(("sandbox",), CONTRACT)["sandbox/fork_sandbox.py"] == ["contract.fork_wire"]


def test_the_fast_paths_wire_format_needs_only_the_standard_library():
    """Both the host and the in-sandbox server import it: it holds no torch, no grader code."""
    imported = imported_modules(PROJECT_ROOT / "contract" / "fork_wire.py")
    assert {m.split(".")[0] for m in imported} - {"__future__"} <= sys.stdlib_module_names
    server = imported_modules(PROJECT_ROOT / "sandboxed" / "fork_server.py")
    assert "contract.fork_wire" in server


def test_backends_take_nothing_from_each_other():
    backends = {"sandbox.docker_backend", "sandbox.process_backend", "sandbox.fake_backend"}
    graph = sandbox_graph()
    for backend in sorted(backends):
        assert graph[backend] & backends == set(), backend
