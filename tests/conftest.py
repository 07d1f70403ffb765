"""Shared fixtures. Service markers skip when the service is missing, unless CI demands it.

Set GRADER_REQUIRE_SERVICES=1 (CI does) to turn every "service missing, skip" into a
failure, so a green run proves the Docker sandbox, Redis and PostgreSQL were exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT, get_settings
from graders.result import GradeResult
from sandbox.checkpoints import ensure_checkpoints
from sandbox.process_backend import ProcessBackend
from services.answers import Answer
from services.grading import grade
from services.taskbank import get_task
from services.validation import validate

REQUIRE_SERVICES = os.environ.get("GRADER_REQUIRE_SERVICES") == "1"
# The Redis server whose numbered DBs the tests' stacks use (each kind of stack has its own
# range of DBs): another server lets a second test run on the same machine keep apart.
TEST_REDIS = os.environ.get("GRADER_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")
CANARY_NAME = "GRADER_SECRET_TOKEN"
CHROMIUM = Path("/usr/bin/chromium")


def require_or_skip(available: bool, what: str) -> None:
    """Skip when `what` is missing; fail instead when CI requires every service."""
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (GRADER_REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="session")
def chromium() -> Path:
    require_or_skip(CHROMIUM.exists(), f"Chromium ({CHROMIUM}; scripts/bootstrap.sh installs it)")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict, chromium: Path) -> dict:
    """pytest-playwright's one browser per test process (a second Playwright started in the
    same process fails): Debian's Chromium, never a downloaded build; as root it runs
    without its sandbox."""
    return {
        **browser_type_launch_args,
        "executable_path": str(chromium),
        "headless": True,
        "args": ["--no-sandbox"] if os.geteuid() == 0 else [],
    }


@pytest.fixture(scope="session")
def settings():
    s = get_settings()
    ensure_checkpoints(s.torch_home)
    return s


@pytest.fixture(scope="session")
def process_backend(settings):
    return ProcessBackend(project_root=PROJECT_ROOT, torch_home=settings.torch_home)


@pytest.fixture(scope="session")
def expected_for(settings, process_backend):
    """Expected facts per task, computed (or read from the cache) once per session."""
    cache: dict[str, object] = {}

    def get(task_id: str):
        if task_id not in cache:
            spec = get_task(settings.tasks_dir, task_id)
            report = validate(spec, backend=process_backend, settings=settings)
            assert report.ok, report.text()
            cache[task_id] = report.expected
        return cache[task_id]

    return get


@pytest.fixture(scope="session")
def fast_backend(settings, process_backend):
    """The fast path where an engine answers (a warm fork server, the bank's setups run once
    in its zygotes), else the process backend: for tables of many answers to bundled tasks."""
    from sandbox.docker_backend import DockerBackend, engine_answers
    from sandbox.pool import WarmPool

    if not engine_answers():
        yield process_backend
        return
    pool = WarmPool(DockerBackend.from_settings(settings), 1, jobs=1000)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def grade_fast(grade_answer, fast_backend):
    """`grade_answer` on the fast backend: for tables of many answers to bundled tasks."""

    def run(task_id: str, code: str | None = None, **kwargs) -> GradeResult:
        return grade_answer(task_id, code, backend=fast_backend, **kwargs)

    return run


@pytest.fixture(scope="session")
def grade_answer(settings, process_backend, expected_for):
    """Grade code (or blanks, or a choice) for a bundled task on the process backend."""

    def run(
        task_id: str,
        code: str | None = None,
        *,
        blanks: dict[int, str] | None = None,
        choice: str | None = None,
        backend=None,
    ) -> GradeResult:
        spec = get_task(settings.tasks_dir, task_id)
        expected = expected_for(task_id) if spec.kind == "code" else None
        return grade(
            spec,
            Answer(code=code, blanks=blanks, choice=choice),
            backend=backend or process_backend,
            expected=expected,
            settings=settings,
        )

    return run


def gradectl(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "cli.gradectl", *args],
        cwd=PROJECT_ROOT, input=input, capture_output=True, timeout=600,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture
def tmp_answer(tmp_path: Path):
    def write(text: str | bytes, name: str = "answer.py") -> Path:
        path = tmp_path / name
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    return write


@pytest.fixture(scope="session")
def canary() -> str:
    """A secret planted in the test process's environment: no answer may ever print it."""
    value = f"canary-{uuid.uuid4().hex}"
    previous = os.environ.get(CANARY_NAME)
    os.environ[CANARY_NAME] = value
    yield value
    if previous is None:
        os.environ.pop(CANARY_NAME, None)
    else:
        os.environ[CANARY_NAME] = previous


@pytest.fixture(scope="session")
def scratch_root(tmp_path_factory) -> Path:
    """A private base for the process backend's scratch dirs, so leftovers are attributable."""
    root = tmp_path_factory.mktemp("scratch")
    previous = tempfile.tempdir
    tempfile.tempdir = str(root)
    yield root
    tempfile.tempdir = previous
