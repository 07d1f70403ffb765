"""Spec parsing: YAML and JSON give the same model, and every error names the field at fault."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from graders.checks import REGISTRY
from graders.errors import SpecError
from graders.spec import ChoiceTask, CodeTask, parse_spec, spec_digest
from services.taskbank import load_spec_file
from tests.conftest import gradectl

CODE_SPEC = {
    "id": "freeze-demo",
    "title": "Freeze a model",
    "difficulty": "easy",
    "prompt": "Freeze `model`.",
    "template": {
        "code": "for p in model.parameters():\n    p.[1] = False\n",
        "blanks": [{"id": 1, "options": {"A": "grad", "B": "requires_grad"}}],
    },
    "setup": "import torch\nmodel = torch.nn.Linear(2, 2)\n",
    "reference": "model.requires_grad_(False)\n",
    "checks": [
        {"name": "frozen", "type": "trainable_params", "points": 3},
        {"name": "same", "type": "architecture", "points": 1},
    ],
    "mistakes": [
        {
            "id": "grad",
            "message": "Set requires_grad, not grad.",
            "when": {"outcomes": ["runtime_error"], "failed_checks": ["frozen"]},
        }
    ],
    "known_wrong": [{"name": "grad", "blanks": {1: "A"}, "expect_mistake": "grad"}],
    "limits": {"time_limit_s": 5},
}

CHOICE_SPEC = {
    "kind": "choice",
    "id": "quiz-demo",
    "title": "A question",
    "difficulty": "easy",
    "prompt": "Which one?",
    "options": {"A": "this", "B": "that"},
    "answer": "B",
    "option_feedback": {"A": "Not this."},
}


def spec_with(change) -> dict:
    data = copy.deepcopy(CODE_SPEC)
    change(data)
    return data


def error_of(data: dict) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(yaml.safe_dump(data))
    return str(info.value)


def test_yaml_and_json_parse_to_the_same_code_task():
    from_yaml = parse_spec(yaml.safe_dump(CODE_SPEC))
    from_json = parse_spec(json.dumps(CODE_SPEC))
    assert isinstance(from_yaml, CodeTask)
    assert from_yaml == from_json
    assert from_yaml.kind == "code"
    assert from_yaml.max_score == 4.0
    assert [c.type for c in from_yaml.checks] == ["trainable_params", "architecture"]
    assert from_yaml.limits.time_limit_s == 5


def test_choice_task_parses_by_its_kind():
    spec = parse_spec(json.dumps(CHOICE_SPEC))
    assert isinstance(spec, ChoiceTask)
    assert spec.max_score == 1.0


def test_bundled_task_parses(settings):
    spec = load_spec_file(settings.tasks_dir / "finetune-freeze.yaml")
    assert spec.id == "finetune-freeze"
    assert spec.template is not None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda d: d["checks"][1].update(type="nope"), ["checks[1]", "'nope'"], id="unknown-type"
        ),
        pytest.param(lambda d: d["checks"][0].pop("type"), ["checks[0]", "'type'"], id="no-type"),
        pytest.param(
            lambda d: d.pop("reference"), ["reference: Field required"], id="no-reference"
        ),
        pytest.param(lambda d: d.update(colour="red"), ["colour: Extra inputs"], id="extra-field"),
        pytest.param(
            lambda d: d["checks"][1].update(colour="red"),
            ["checks[1].colour: Extra inputs"],
            id="extra-field-in-check",
        ),
        pytest.param(
            lambda d: d.update(optimizer="sgd"),
            ["optimizer: Extra inputs"],
            id="extra-field-named-like-a-check-type",
        ),
        pytest.param(
            lambda d: d["checks"][0].update(points=-1),
            ["checks[0].points: Input should be greater than 0"],
            id="negative-points",
        ),
        pytest.param(
            lambda d: d["checks"][0].update(module="not a path"),
            ["checks[0].module"],
            id="bad-check-parameter",
        ),
        pytest.param(
            lambda d: d["template"].update(code="p.[2] = False\n"),
            ["template", "writes blanks [2] but declares [1]"],
            id="template-blanks-mismatch",
        ),
        pytest.param(
            lambda d: d["mistakes"][0]["when"].update(failed_checks=["frozen", "ghost"]),
            ["mistakes[0].when.failed_checks", "'ghost'"],
            id="trigger-names-unknown-check",
        ),
        pytest.param(
            lambda d: d["mistakes"][0].update(when={}),
            ["mistakes[0].when", "at least one of"],
            id="empty-trigger",
        ),
        pytest.param(
            lambda d: d["mistakes"][0]["when"].update(error_matches="("),
            ["mistakes[0].when", "not a valid regex"],
            id="bad-regex",
        ),
        pytest.param(
            lambda d: d["checks"][1].update(name="frozen"),
            ["checks[1].name", "'frozen'"],
            id="duplicate-check-names",
        ),
        pytest.param(
            lambda d: d["known_wrong"][0].update(expect_mistake="ghost"),
            ["known_wrong[0].expect_mistake", "'ghost'"],
            id="known-wrong-names-unknown-mistake",
        ),
        pytest.param(
            lambda d: d.update(limits={"time_limit_s": 0}),
            ["limits.time_limit_s"],
            id="zero-time-limit",
        ),
        pytest.param(
            lambda d: d.update(checks=[]), ["checks: List should have at least 1"], id="no-checks"
        ),
    ],
)
def test_errors_name_the_offending_field(change, expected):
    message = error_of(spec_with(change))
    for fragment in expected:
        assert fragment in message


def test_choice_answer_must_be_an_option():
    message = error_of({**CHOICE_SPEC, "answer": "Z"})
    assert "answer 'Z' is not one of the options ['A', 'B']" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("checks: [unclosed", "not valid YAML or JSON"), ("- a\n- b\n", "must be a mapping")],
)
def test_unreadable_documents_are_refused(text, expected):
    with pytest.raises(SpecError, match=expected):
        parse_spec(text)


def _reversed_keys(value):
    if isinstance(value, dict):
        return {k: _reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value


def test_digest_is_stable_under_key_order_and_formatting():
    compact = spec_digest(parse_spec(json.dumps(CODE_SPEC)))
    reordered = spec_digest(parse_spec(json.dumps(_reversed_keys(CODE_SPEC), indent=4)))
    block_yaml = spec_digest(parse_spec(yaml.safe_dump(CODE_SPEC, default_flow_style=False)))
    assert compact == reordered == block_yaml
    changed = spec_with(lambda d: d["checks"][0].update(points=4))
    assert spec_digest(parse_spec(json.dumps(changed))) != compact


def test_gradectl_schema_describes_both_task_kinds_and_every_check_type():
    proc = gradectl("schema")
    assert proc.returncode == 0, proc.stderr.decode()
    schema = json.loads(proc.stdout)
    assert set(schema["discriminator"]["mapping"]) == {"code", "choice"}
    defs = schema["$defs"]
    assert defs["CodeTask"]["properties"]["reference"]["description"]
    assert defs["ChoiceTask"]["properties"]["answer"]["description"]
    assert defs["Limits"]["properties"]["time_limit_s"]["description"]
    check_types = {
        d["properties"]["type"]["const"] for d in defs.values() if "type" in d.get("properties", {})
    }
    assert check_types == set(REGISTRY)
