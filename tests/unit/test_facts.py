"""The host's side of a run: the facts frame is parsed strictly, and the judge scores facts alone."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from safetensors.numpy import save as save_tensors

from contract.job import MAX_MANIFEST_BYTES, MAX_TENSOR_BYTES, frame_header, ready_marker
from graders.errors import FactsError
from graders.facts import Facts, parse_frame
from graders.judge import Expected, RunSummary, judge_run
from graders.spec import parse_spec

NONCE = "0123456789abcdef" * 2
OTHER_NONCE = "f" * 32


def manifest(**changes) -> dict:
    base = {
        "schema_version": 1,
        "status": "ok",
        "error": None,
        "notes": [],
        "stdout": "hello\n",
        "stdout_bytes": 6,
        "stderr": "",
        "stderr_bytes": 0,
        "observations": {"frozen": {"facts": {"parameters": {}}}},
        "timings": {"student_s": 0.1},
        "device": "cpu",
    }
    return base | changes


def frame(
    body: dict | bytes, tensors: dict[str, np.ndarray] | None = None, nonce: str = NONCE
) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    blob = save_tensors(tensors) if tensors else b""
    return frame_header(nonce, len(data), len(blob)) + data + blob


def noisy(channel: bytes) -> bytes:
    """The frame as a backend reads it: the ready marker and stray bytes come first."""
    return b"stray\x00bytes" + ready_marker(NONCE) + channel


def test_a_well_formed_frame_is_parsed_with_its_tensors():
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    facts = parse_frame(noisy(frame(manifest(), {"frozen/fc.weight": weights})), NONCE)
    assert facts.manifest.stdout == "hello\n"
    assert facts.manifest.observations["frozen"].facts == {"parameters": {}}
    np.testing.assert_array_equal(facts.tensors["frozen"]["fc.weight"], weights)


def test_a_diverged_loss_survives_as_nan():
    body = json.dumps(manifest(timings={"student_s": float("nan")})).encode()
    assert np.isnan(parse_frame(frame(body), NONCE).manifest.timings["student_s"])


def _oversized(manifest_len: int, tensors_len: int) -> bytes:
    return frame_header(NONCE, manifest_len, tensors_len) + b"{}"


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        pytest.param(b"GRADER-READY\n{}", "no facts frame", id="no-frame"),
        pytest.param(frame(manifest(), nonce=OTHER_NONCE), "no facts frame", id="wrong-nonce"),
        pytest.param(frame(manifest())[:-10], "truncated", id="truncated"),
        pytest.param(
            frame(manifest(), {"frozen/w": np.ones(4, np.float32)})[:-3],
            "truncated",
            id="truncated-tensors",
        ),
        pytest.param(_oversized(MAX_MANIFEST_BYTES + 1, 0), "too large", id="huge-manifest"),
        pytest.param(_oversized(2, MAX_TENSOR_BYTES + 1), "too large", id="huge-tensors"),
        pytest.param(frame(b"{not json"), "malformed facts manifest", id="not-json"),
        pytest.param(frame(manifest(score=10)), "malformed facts manifest", id="unknown-field"),
        pytest.param(frame(manifest(status="passed")), "malformed facts manifest", id="bad-status"),
        pytest.param(
            frame(manifest(observations={"frozen": {"facts": {}, "passed": True}})),
            "malformed facts manifest",
            id="unknown-field-in-observation",
        ),
        pytest.param(
            frame(manifest(), {"ghost/w": np.ones(2, np.float32)}),
            "belongs to no check",
            id="tensor-of-unknown-check",
        ),
        pytest.param(
            frame(manifest(), {"w": np.ones(2, np.float32)}),
            "belongs to no check",
            id="tensor-without-check",
        ),
        pytest.param(
            frame_header(NONCE, 2, 8) + b"{}" + b"\xff" * 8, "malformed facts", id="garbage-tensors"
        ),
    ],
)
def test_bad_frames_are_refused(stdout, expected):
    with pytest.raises(FactsError, match=expected):
        parse_frame(stdout, NONCE)


SPEC = parse_spec(
    json.dumps(
        {
            "id": "judge-demo",
            "title": "Judge",
            "difficulty": "easy",
            "prompt": "Freeze `model`.",
            "reference": "model.requires_grad_(False)\n",
            "checks": [
                {
                    "name": "frozen",
                    "type": "trainable_params",
                    "points": 6,
                    "feedback": "Freeze every parameter.",
                },
                {"name": "asserts", "type": "python", "points": 3, "code": "assert True"},
                {
                    "name": "is-module",
                    "type": "variable_type",
                    "variable": "model",
                    "expected_type": "torch.nn.Module",
                },
            ],
            "mistakes": [
                {
                    "id": "grad-attribute",
                    "message": "Set requires_grad, not grad.",
                    "when": {"outcomes": ["runtime_error"], "error_matches": "grad"},
                }
            ],
            "limits": {"time_limit_s": 5, "memory_bytes": 512 * 2**20, "max_output_bytes": 2048},
        }
    )
)
FROZEN = {
    "parameters": {
        "w": {"numel": 4, "requires_grad": False},
        "b": {"numel": 2, "requires_grad": False},
    }
}
TRAINABLE = {
    "parameters": {
        "w": {"numel": 4, "requires_grad": True},
        "b": {"numel": 2, "requires_grad": True},
    }
}
IS_MODULE = {
    "exists": True,
    "lineage": ["torch.nn.modules.linear.Linear", "torch.nn.Module", "builtins.object"],
}
GOOD = {
    "frozen": {"facts": FROZEN},
    "asserts": {"facts": {"passed": True}},
    "is-module": {"facts": IS_MODULE},
}
RUN = RunSummary(exit_code=0, duration_s=1.5, backend="test")


def facts(observations: dict | None = None, **changes) -> Facts:
    return parse_frame(frame(manifest(observations=observations or GOOD, **changes)), NONCE)


EXPECTED = Expected(facts=facts(), baseline_passing=frozenset({"is-module"}))


def judged(
    observations: dict | None = None,
    run: RunSummary = RUN,
    expected: Expected = EXPECTED,
    **changes,
):
    return judge_run(SPEC, "v1", run, facts(observations, **changes), expected)


def check(result, name: str):
    return next(c for c in result.checks if c.name == name)


def with_observation(name: str, observation: dict) -> dict:
    observations = copy.deepcopy(GOOD)
    observations[name] = observation
    return observations


def test_good_facts_get_full_marks():
    result = judged()
    assert (result.outcome, result.score, result.max_score) == ("passed", 10.0, 10.0)
    assert [c.passed for c in result.checks] == [True, True, True]
    assert result.stdout == "hello\n"
    assert result.task_version == "v1"


@pytest.mark.parametrize(
    ("run", "outcome", "message"),
    [
        pytest.param(
            RunSummary(None, 6.0, timed_out=True), "time_limit", "time limit of 5 s", id="time"
        ),
        pytest.param(
            RunSummary(None, 2.0, oom_killed=True),
            "memory_limit",
            "memory limit of 512 MiB",
            id="memory",
        ),
        pytest.param(
            RunSummary(None, 2.0, channel_overflow=True), "output_limit", "more output", id="output"
        ),
        pytest.param(RunSummary(1, 2.0), "runtime_error", "exit status 1", id="no-frame"),
    ],
)
def test_runs_stopped_by_a_limit_score_nothing(run, outcome, message):
    result = judge_run(SPEC, "v1", run, None, EXPECTED)
    assert (result.outcome, result.score, result.max_score) == (outcome, 0.0, 10.0)
    assert message in result.error
    assert result.checks == []


def test_printing_past_the_output_limit_is_an_output_limit():
    result = judged(stdout="x" * 2048, stdout_bytes=5000)
    assert (result.outcome, result.score) == ("output_limit", 0.0)
    assert "5,000 bytes; the limit is 2,048" in result.error


def test_a_compile_error_reports_the_compiler_message():
    error = {"message": "SyntaxError: expected ':' (line 3, column 28)", "traceback": "..."}
    result = judged(observations={}, status="compile_error", error=error)
    assert (result.outcome, result.score) == ("compile_error", 0.0)
    assert result.error == error["message"]


def test_a_failing_task_setup_is_our_error_not_the_students():
    error = {"message": "ImportError: no torchvision", "traceback": "..."}
    result = judged(observations={}, status="setup_error", error=error)
    assert result.outcome == "internal_error"
    assert result.retryable


def test_a_runtime_error_still_judges_the_checks_and_matches_mistakes():
    error = {
        "message": "TypeError: assigned grad expected to be a Tensor",
        "traceback": "line 2 ...",
    }
    observations = with_observation("frozen", {"facts": TRAINABLE})
    result = judged(observations, status="runtime_error", error=error)
    assert result.outcome == "runtime_error"
    assert not check(result, "frozen").passed
    assert check(result, "asserts").passed
    assert result.feedback == ["Set requires_grad, not grad."]
    assert result.error == "line 2 ..."


def test_mistakes_do_not_fire_when_their_trigger_does_not_hold():
    result = judged(with_observation("frozen", {"facts": TRAINABLE}))
    assert result.outcome == "failed"
    assert result.feedback == []


def test_an_observation_error_fails_its_check_with_that_message():
    observations = with_observation(
        "frozen", {"error": "no variable named `model` exists after your code ran"}
    )
    result = judged(observations)
    frozen = check(result, "frozen")
    assert (frozen.passed, frozen.points) == (False, 0.0)
    assert (
        frozen.message
        == "no variable named `model` exists after your code ran. Freeze every parameter."
    )
    assert (result.outcome, result.score) == ("failed", 3.0)  # see the baseline rule below


@pytest.mark.parametrize(
    "bad_facts",
    [
        pytest.param({"parameters": "all frozen"}, id="wrong-type"),
        pytest.param({"parameters": {}, "passed": True}, id="unknown-field"),
        pytest.param(
            {"parameters": {"w": {"numel": -1, "requires_grad": False}}}, id="out-of-range"
        ),
        pytest.param(None, id="null"),
    ],
)
def test_malformed_facts_fail_their_check_without_crashing(bad_facts):
    result = judged(with_observation("frozen", {"facts": bad_facts}))
    frozen = check(result, "frozen")
    assert not frozen.passed
    assert "malformed" in frozen.message
    assert check(result, "asserts").passed


def test_a_check_that_was_not_observed_fails():
    observations = {k: v for k, v in GOOD.items() if k != "asserts"}
    result = judged(observations)
    assert check(result, "asserts").message == "this check was not observed"
    assert result.score == 7.0


def test_the_judge_compares_with_the_expected_facts():
    result = judged(with_observation("frozen", {"facts": TRAINABLE}))
    assert "expected 0 trainable tensors, found 2 (w, b)" in check(result, "frozen").message


def test_passing_only_checks_an_empty_answer_passes_scores_nothing():
    observations = {
        "frozen": {"facts": TRAINABLE},
        "asserts": {"facts": {"passed": False, "message": "not frozen"}},
        "is-module": {"facts": IS_MODULE},
    }
    result = judged(observations)
    assert check(result, "is-module").passed
    assert (result.outcome, result.score) == ("failed", 0.0)
    assert all(c.points == 0.0 for c in result.checks)
    assert any("no points" in note and "is-module" in note for note in result.notes)

    without_baseline = Expected(facts=EXPECTED.facts)
    assert judged(observations, expected=without_baseline).score == 1.0


def test_a_check_the_answers_own_code_answers_does_not_unlock_the_baseline_checks():
    """`asserts` (instructor assertions over the answer's objects, whose methods are the
    answer's code) passes, the one check read from the model's state fails: the check an
    empty answer passes too earns nothing, the assertions keep their points."""
    observations = with_observation("frozen", {"facts": TRAINABLE})
    result = judged(observations)
    points = {c.name: c.points for c in result.checks}
    assert points == {"frozen": 0.0, "asserts": 3.0, "is-module": 0.0}, result.checks
    assert result.score == 3.0
    assert any("every check read from the model's state failed (frozen)" in n for n in result.notes)


def test_an_answer_that_raised_earns_nothing_though_its_state_is_reported():
    error = {"message": "RuntimeError: not finished", "traceback": "RuntimeError: not finished"}
    result = judged(status="runtime_error", error=error)
    assert (result.outcome, result.score) == ("runtime_error", 0.0)
    assert all(c.passed and c.points == 0 for c in result.checks)
    assert all("raised an exception before it finished" in c.message for c in result.checks)
