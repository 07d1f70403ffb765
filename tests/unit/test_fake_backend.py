"""The fake backend grades through the service as a sandbox would, from a handler's frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contract.job import Job
from core.settings import Settings
from graders.facts import parse_frame
from graders.judge import Expected
from graders.spec import parse_spec
from sandbox.base import Limits, RunRequest, SandboxBackend
from sandbox.fake_backend import FakeBackend, crashed, frame, out_of_memory, timed_out
from services.answers import Answer
from services.grading import grade

SPEC = parse_spec(
    json.dumps(
        {
            "id": "fake-freeze",
            "title": "Freeze",
            "difficulty": "easy",
            "prompt": "Freeze `model`.",
            "reference": "model.requires_grad_(False)\n",
            "checks": [{"name": "frozen", "type": "trainable_params", "points": 2}],
            "limits": {"time_limit_s": 5, "memory_bytes": 512 * 2**20},
        }
    )
)
NONCE = "0123456789abcdef" * 2


def parameters(requires_grad: bool) -> dict:
    fact = {"numel": 4, "requires_grad": requires_grad}
    return {"frozen": {"facts": {"parameters": {"w": fact}, "training": True}}}


EXPECTED = Expected(facts=parse_frame(frame(NONCE, {"observations": parameters(False)}), NONCE))


def harness(job: Job) -> bytes:
    """What the harness would observe of the few answers these tests send."""
    frozen = "requires_grad_(False)" in job.code
    return frame(job.nonce, {"observations": parameters(not frozen), "stdout": "done\n"})


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path)


def graded(backend: FakeBackend, code: str, settings: Settings):
    return grade(SPEC, Answer(code=code), backend=backend, expected=EXPECTED, settings=settings)


def test_a_passing_frame_grades_as_passed(settings):
    backend = FakeBackend(harness)
    result = graded(backend, "model.requires_grad_(False)\n", settings)
    assert (result.outcome, result.score, result.max_score) == ("passed", 2.0, 2.0), result.error
    assert result.stdout == "done\n"
    assert (result.backend, result.isolated) == ("fake", True)
    [request] = backend.requests
    job = Job.model_validate_json(request.stdin)
    assert job.code == "model.requires_grad_(False)\n"
    assert request.limits.timeout_s == 5


def test_a_frame_of_a_wrong_answer_fails_its_check(settings):
    result = graded(FakeBackend(harness), "pass\n", settings)
    assert (result.outcome, result.score) == ("failed", 0.0)
    assert [(check.name, check.passed) for check in result.checks] == [("frozen", False)]


def test_a_time_out_scores_nothing(settings):
    backend = FakeBackend(lambda job: timed_out(duration_s=5.2))
    result = graded(backend, "while True:\n    pass\n", settings)
    assert (result.outcome, result.score) == ("time_limit", 0.0)
    assert "time limit of 5 s" in result.error
    assert result.checks == []


@pytest.mark.parametrize(
    ("outcome", "graded_as"),
    [(out_of_memory(), "memory_limit"), (crashed(exit_code=139), "runtime_error")],
    ids=["oom", "crash"],
)
def test_a_run_stopped_without_facts_scores_nothing(settings, outcome, graded_as):
    result = graded(FakeBackend(lambda job: outcome), "pass\n", settings)
    assert (result.outcome, result.score) == (graded_as, 0.0)


def test_output_past_the_channel_cap_is_an_overflow():
    limits = Limits(max_channel_bytes=64)
    request = RunRequest(
        stdin=Job(nonce=NONCE, task_id="t", setup="", code="", checks=[])
        .model_dump_json()
        .encode(),
        limits=limits,
    )
    result = FakeBackend(lambda job: b"x" * 100).run(request)
    assert result.channel_overflow and len(result.stdout) == 64 and result.exit_code != 0


def test_a_frame_carries_its_tensors_and_fills_the_manifest():
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    built = frame(
        NONCE, {"observations": {"frozen": {"facts": {}}}, "stdout": "héllo"}, {"frozen/w": weights}
    )
    facts = parse_frame(built, NONCE)
    assert (facts.manifest.status, facts.manifest.stdout_bytes) == ("ok", len("héllo".encode()))
    np.testing.assert_array_equal(facts.tensors["frozen"]["w"], weights)


def test_it_implements_the_backend_protocol():
    backend: SandboxBackend = FakeBackend(harness, gpu_available=True)
    assert (backend.name, backend.isolated, backend.gpu_available) == ("fake", True, True)
    assert "fake" in backend.describe()
