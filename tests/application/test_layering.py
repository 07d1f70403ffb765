"""The application layer's seams, read from the source: the front doors reach the
database and the queue only through the use cases, the use cases never reach up to a
front door, and one module opens transactions and sends messages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT

FRONT_DOORS = ("api", "web", "worker", "cli")
SOURCE = [
    p
    for folder in (*FRONT_DOORS, "usecases", "services", "db", "core")
    for p in sorted((PROJECT_ROOT / folder).rglob("*.py"))
    if "migrations" not in p.parts
]


def imports(path: Path) -> set[str]:
    """The modules `path` imports (absolute names, at its top or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def names(path: Path) -> set[str]:
    """Every name and attribute `path` uses."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }


def package(path: Path) -> str:
    return path.relative_to(PROJECT_ROOT).parts[0]


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "api" / "routers").glob("*.py")), ids=str)
def test_a_router_calls_use_cases_and_nothing_below_them(path):
    below = {m for m in imports(path) if m.split(".")[0] in ("db", "services", "sqlalchemy")}
    assert below == set(), f"{path.name} imports {sorted(below)}"
    assert not names(path) & {"commit", "session_scope", "enqueue", "send_many"}, path.name


BELOW_THE_USE_CASES = ("services", "db", "core")
ABOVE = {"usecases": FRONT_DOORS} | {
    layer: ("usecases", *FRONT_DOORS) for layer in BELOW_THE_USE_CASES
}


def test_use_cases_and_services_never_reach_up_to_a_front_door():
    for path in SOURCE:
        above = ABOVE.get(package(path), ())
        reached = {m for m in imports(path) if m.split(".")[0] in above}
        assert reached == set(), f"{path.relative_to(PROJECT_ROOT)} imports {sorted(reached)}"


def test_one_module_opens_transactions_and_sends_messages():
    opens = {
        str(p.relative_to(PROJECT_ROOT))
        for p in SOURCE
        if {"session_scope", "send_many"} & names(p) and package(p) != "db"
    }
    assert opens == {"usecases/unit_of_work.py", "services/queue.py"}
    senders = {str(p.relative_to(PROJECT_ROOT)) for p in SOURCE if "send_many" in names(p)}
    assert senders == {"services/queue.py"}  # its RedisBroker: what the unit of work sends to
