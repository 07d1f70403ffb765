"""Mistake triggers name what a failed check found ("check:reason"), so a common mistake is
told exactly when the facts show it; a trigger that names something no check can find is
refused when the spec is read."""

from __future__ import annotations

import json

import pytest

from contract.job import frame_header
from graders.errors import SpecError
from graders.facts import parse_frame
from graders.judge import Expected, RunSummary, judge_run
from graders.spec import json_schema, parse_spec

NONCE = "ab" * 16
IS_MODULE = {"exists": True, "lineage": ["torch.nn.modules.linear.Linear", "torch.nn.Module"]}


def spec(mistakes: list[dict]) -> dict:
    return {
        "id": "trigger-demo",
        "title": "Triggers",
        "difficulty": "easy",
        "prompt": "Define `model` and `head`.",
        "reference": "model = head = 1\n",
        "checks": [
            {"name": "model", "type": "variable_type", "variable": "model",
             "expected_type": "torch.nn.Module", "points": 2},
            {"name": "head", "type": "variable_type", "variable": "head",
             "expected_type": "torch.nn.Module", "points": 2},
        ],
        "mistakes": mistakes,
    }  # fmt: skip


SPEC = parse_spec(
    json.dumps(
        spec(
            [
                {"id": "no-model", "message": "Define model.", "when": {"reasons": ["model:missing"]}},
                {"id": "forged", "message": "Do not tamper.", "when": {"reasons": ["model:tampered", "head:tampered"]}},
                {"id": "any-failure", "message": "Something failed.", "when": {"failed_checks": ["head"]}},
            ]
        )
    )
)  # fmt: skip


def graded(model: dict, head: dict):
    body = {
        "schema_version": 1, "status": "ok", "error": None, "notes": [], "stdout": "",
        "stdout_bytes": 0, "stderr": "", "stderr_bytes": 0, "device": "cpu",
        "observations": {"model": model, "head": head}, "timings": {},
    }  # fmt: skip
    data = json.dumps(body).encode()
    facts = parse_frame(frame_header(NONCE, len(data), 0) + data, NONCE)
    good = {"facts": IS_MODULE}
    expected_body = body | {"observations": {"model": good, "head": good}}
    data = json.dumps(expected_body).encode()
    expected = Expected(parse_frame(frame_header(NONCE, len(data), 0) + data, NONCE))
    return judge_run(SPEC, "v1", RunSummary(0, 0.1), facts, expected)


GOOD = {"facts": IS_MODULE}
MISSING = {"error": "there is no variable `model`", "reason": "missing"}


def test_a_mistake_is_told_when_a_failed_check_found_its_reason():
    result = graded(MISSING, GOOD)
    assert result.feedback == ["Define model."]
    model = next(c for c in result.checks if c.name == "model")
    assert (model.passed, model.reasons) == (False, ["missing"])


def test_the_same_check_failing_for_another_reason_tells_another_mistake():
    result = graded({"error": "the structure was tampered with", "reason": "tampered"}, GOOD)
    assert result.feedback == ["Do not tamper."]


def test_reasons_of_several_checks_and_other_conditions_combine():
    result = graded(MISSING, {"error": "replaced", "reason": "tampered"})
    assert result.feedback == ["Define model.", "Do not tamper.", "Something failed."]
    assert result.mistakes == ["no-model", "forged", "any-failure"]
    good = graded(GOOD, GOOD)
    assert (good.feedback, good.mistakes) == ([], [])


def test_a_reason_the_check_type_does_not_declare_is_dropped():
    result = graded({"error": "odd", "reason": "made-up"}, GOOD)
    assert next(c for c in result.checks if c.name == "model").reasons == ["unobservable"]
    assert result.feedback == []


@pytest.mark.parametrize(
    ("reasons", "fragment"),
    [
        (["ghost:missing"], "unknown check 'ghost'"),
        (["model:too-high"], "a variable_type check finds no reason 'too-high'"),
        (["model"], "is not `check-name:reason`"),
        (["Model:Missing"], "is not `check-name:reason`"),
    ],
)
def test_a_trigger_naming_what_no_check_finds_is_refused(reasons, fragment):
    bad = spec([{"id": "m", "message": "x", "when": {"reasons": reasons}}])
    with pytest.raises(SpecError, match="mistakes") as caught:
        parse_spec(json.dumps(bad))
    assert fragment in str(caught.value)


def test_the_schema_lists_what_each_check_type_can_find():
    reasons = json_schema()["x-reasons"]
    assert {"missing", "tampered"} <= reasons["variable_type"].keys()
    assert {"lr-above", "frozen-held"} <= reasons["optimizer"].keys()


def test_known_wrong_may_name_several_mistakes():
    doc = spec(
        [{"id": "no-model", "message": "Define model.", "when": {"reasons": ["model:missing"]}}]
    )
    doc["known_wrong"] = [{"name": "both", "code": "", "expect_mistake": ["no-model"]}]
    assert parse_spec(json.dumps(doc)).known_wrong[0].intended == ("no-model",)
    doc["known_wrong"][0]["expect_mistake"] = ["no-model", "ghost"]
    with pytest.raises(SpecError, match="unknown mistake 'ghost'"):
        parse_spec(json.dumps(doc))
