"""Fixtures for the adversarial suite: every isolating backend, a short-limit spec, a canary.

`fork` is the Docker backend's fast path: one warm container whose fork server runs
job after job, each in a fresh child; the attacks run through it one after another,
so each also attacks the jobs that follow it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.docker_backend import DockerBackend, engine_answers
from sandbox.pool import WarmPool
from services.taskbank import load_spec_file
from services.validation import validate
from tests.conftest import require_or_skip

SPEC_PATH = Path(__file__).parent / "specs" / "freeze-attacks.yaml"


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
