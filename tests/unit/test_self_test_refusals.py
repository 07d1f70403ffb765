"""A self-test whose sandbox cannot start: the version's fault only when the engine refuses its
limits and still starts the task's job under the defaults (then `invalid`, with the engine's
reason); otherwise the engine's, raised so that the self-test runs again later."""

from __future__ import annotations

import json

import pytest

from core.settings import Settings
from graders.spec import parse_spec
from sandbox.base import Limits, RunRequest, RunResult
from sandbox.errors import BackendUnavailable, SandboxError
from services.validation import validate

ENGINE_SAYS = "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"


def spec(**limits):
    return parse_spec(
        json.dumps(
            {
                "id": "refused-limits",
                "title": "Freeze",
                "difficulty": "easy",
                "prompt": "Freeze `model`.",
                "reference": "model.requires_grad_(False)\n",
                "checks": [{"name": "frozen", "type": "trainable_params", "points": 1}],
                "limits": limits,
            }
        )
    )


class Engine:
    """A sandbox backend that refuses what `refuses(limits)` says, and runs the rest (its runs
    produce no facts: enough to tell a sandbox that started from one that did not)."""

    name, isolated, gpu_available = "fake", True, False

    def __init__(self, refuses) -> None:
        self.refuses = refuses
        self.runs: list[Limits] = []

    def describe(self) -> str:
        return "fake engine"

    def run(self, request: RunRequest) -> RunResult:
        self.runs.append(request.limits)
        if self.refuses(request.limits):
            raise SandboxError(f"creating the sandbox container: 500 Server Error ({ENGINE_SAYS})")
        return RunResult(exit_code=0, stdout=b"", stderr=b"", duration_s=0.01)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path)


def test_limits_the_engine_refuses_make_the_version_invalid_with_its_reason(settings):
    engine = Engine(refuses=lambda limits: limits.cpus > 2)
    report = validate(spec(cpus=3), backend=engine, settings=settings, use_cache=False)
    assert not report.ok
    assert "cannot start under this version's limits" in report.text()
    assert ENGINE_SAYS in report.text() and "cpus 3" in report.text()
    assert [limits.cpus for limits in engine.runs] == [3, 1]  # its own, then the defaults'


def test_an_engine_that_starts_nothing_is_not_the_versions_fault(settings):
    engine = Engine(refuses=lambda limits: True)
    with pytest.raises(SandboxError, match="Range of CPUs"):
        validate(spec(cpus=3), backend=engine, settings=settings, use_cache=False)


def test_a_refusal_under_the_default_limits_is_the_engines(settings):
    engine = Engine(refuses=lambda limits: True)
    with pytest.raises(SandboxError):
        validate(spec(), backend=engine, settings=settings, use_cache=False)
    assert len(engine.runs) == 1  # nothing else to compare with


def test_a_worker_without_what_the_task_needs_leaves_it_to_another(settings):
    engine = Engine(refuses=lambda limits: False)
    with pytest.raises(BackendUnavailable, match="requires a GPU"):
        validate(spec(gpu="required"), backend=engine, settings=settings, use_cache=False)
