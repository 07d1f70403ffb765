"""Fixtures for the adversarial suite: every isolating backend, a short-limit spec, a canary.

`fork` is the Docker backend's fast path: one warm container whose fork server runs
job after job, each in a fresh child; the attacks run through it one after another,
so each also attacks the jobs that follow it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from sandbox.docker_backend import DockerBackend, engine_answers
from sandbox.pool import WarmPool
from services.taskbank import load_spec_file
from services.validation import validate
from tests.conftest import require_or_skip

SPEC_PATH = Path(__file__).parent / "specs" / "freeze-attacks.yaml"
CANARY_NAME = "GRADER_SECRET_TOKEN"


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


@pytest.fixture(scope="session")
def docker_backend(settings, canary):
    require_or_skip(engine_answers(), "Docker engine")
    return DockerBackend.from_settings(settings)


@pytest.fixture(scope="session")
def fork_backend(settings, canary):
    """A backend of its own, so that its waiting container is told apart from leftovers."""
    require_or_skip(engine_answers(), "Docker engine")
    pool = WarmPool(DockerBackend.from_settings(settings), 1, jobs=1000)
    yield pool
    pool.close()


@pytest.fixture(scope="session", params=["process", "docker", "fork"])
def backend(request, process_backend, canary, scratch_root):
    """Each attack runs on every isolating backend; the unnamespaced process backend is not one."""
    if request.param in ("docker", "fork"):
        return request.getfixturevalue(f"{request.param}_backend")
    # Without bubblewrap the process backend is for trusted code only: no attacks on it.
    require_or_skip(bool(process_backend.bwrap), "bubblewrap (bwrap)")
    return process_backend


@pytest.fixture(scope="session")
def attack_spec():
    return load_spec_file(SPEC_PATH)


@pytest.fixture(scope="session")
def attack_expected(attack_spec, settings, process_backend):
    report = validate(attack_spec, backend=process_backend, settings=settings)
    assert report.ok, report.text()
    return report.expected
