"""Fixtures for the adversarial suite: both isolating backends, a short-limit spec, a canary."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from sandbox.docker_backend import DockerBackend, engine_answers
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


@pytest.fixture(scope="session", params=["process", "docker"])
def backend(request, process_backend, canary, scratch_root):
    """Each attack runs on both isolating backends; the unnamespaced process backend is not one."""
    if request.param == "docker":
        return request.getfixturevalue("docker_backend")
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
