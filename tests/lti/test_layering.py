"""lti/ sits below the use cases, as services/ does: it takes a database session and opens
none, sends no message, and imports neither a use case nor a front door (nor, as no host
package does, the code that runs in the sandbox)."""

from __future__ import annotations

import pytest

from core.settings import PROJECT_ROOT
from tests.application.test_layering import imports, names

LTI = sorted((PROJECT_ROOT / "lti").rglob("*.py"))
ABOVE = ("usecases", "api", "web", "worker", "cli", "fastapi", "starlette", "sandboxed")


@pytest.mark.parametrize("path", LTI, ids=lambda p: p.name)
def test_lti_reaches_neither_up_nor_into_transactions(path):
    reached = {m for m in imports(path) if m.split(".")[0] in ABOVE}
    assert reached == set(), f"{path.name} imports {sorted(reached)}"
    assert not names(path) & {"commit", "session_scope", "unit_of_work", "send_many"}, path.name
