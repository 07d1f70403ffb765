"""The grading core end to end on finetune-freeze: real sandbox runs, graded by behaviour.

Correct answers in any style get full marks, wrong ones get less with feedback naming the
mistake, and tampering with what the student's own process sees earns nothing.
"""

from __future__ import annotations

import json

import pytest

from core.settings import PROJECT_ROOT
from sandbox.process_backend import ProcessBackend
from services.taskbank import get_task
from tests.conftest import gradectl

pytestmark = pytest.mark.slow

TASK = "finetune-freeze"
FULL_MARKS = 10.0
RESULT_KEYS = {"outcome", "score", "max_score", "checks", "stdout", "stderr", "duration_s"}
CHECK_KEYS = {"name", "passed", "points", "max_points", "message"}


@pytest.fixture(scope="module")
def mistakes(settings) -> dict[str, str]:
    """The task's common-mistake feedback by id, as a result reports it."""
    return {m.id: m.message for m in get_task(settings.tasks_dir, TASK).mistakes}


def check(result, name: str):
    return next(c for c in result.checks if c.name == name)


CORRECT = {
    "requires-grad-method": "model.requires_grad_(False)\n",
    "attribute-loop": "for p in model.parameters(): p.requires_grad = False\n",
    "list-comprehension": "[p.requires_grad_(False) for p in model.parameters()]\n",
    "named-parameters": "for name, param in model.named_parameters():\n    param.requires_grad = False\n",
    "helper-function": (
        "def freeze(module):\n"
        "    for parameter in module.parameters():\n"
        "        parameter.requires_grad = False\n"
        "    return module\n"
        "\n"
        "model = freeze(model)\n"
    ),
    "per-module": (
        "for m in model.modules():\n"
        "    for p in m.parameters(recurse=False):\n"
        "        p.requires_grad = False\n"
    ),
}


@pytest.mark.parametrize("code", CORRECT.values(), ids=CORRECT.keys())
def test_correct_answers_in_any_style_get_full_marks(grade_answer, code):
    result = grade_answer(TASK, code)
    assert (result.outcome, result.score, result.max_score) == ("passed", FULL_MARKS, FULL_MARKS), (
        result
    )
    assert all(c.passed for c in result.checks)
    assert result.feedback == []


def test_assigning_grad_is_a_runtime_error_naming_the_mistake(grade_answer, mistakes):
    result = grade_answer(TASK, "for param in model.parameters():\n    param.grad = False\n")
    assert result.outcome == "runtime_error"
    assert result.score < FULL_MARKS
    assert "line 2" in result.error and "grad" in result.error
    assert mistakes["grad-attribute"] in result.feedback


def test_setting_train_on_parameters_has_no_effect(grade_answer, mistakes):
    result = grade_answer(TASK, "for param in model.parameters():\n    param.train = False\n")
    assert (result.outcome, result.score) == ("failed", 0.0)
    assert "expected 0 trainable tensors, found 62" in check(result, "frozen").message
    assert mistakes["no-effect-attribute"] in result.feedback


def test_freezing_only_the_head_is_not_enough(grade_answer):
    result = grade_answer(
        TASK, "for param in model.fc.parameters():\n    param.requires_grad = False\n"
    )
    assert result.outcome == "failed"
    assert result.score < FULL_MARKS
    frozen = check(result, "frozen")
    assert "found 60" in frozen.message and "conv1.weight" in frozen.message


def test_freezing_all_but_the_head_is_wrong_for_this_task(grade_answer):
    code = (
        "for name, p in model.named_parameters():\n    p.requires_grad = name.startswith('fc.')\n"
    )
    result = grade_answer(TASK, code)
    assert result.outcome == "failed"
    assert result.score < FULL_MARKS
    assert "found 2 (fc.weight, fc.bias)" in check(result, "frozen").message


# Each answer makes the model look frozen to the student's own code, then gets nothing:
# the observers read through accessors captured before the answer ran.
TAMPERING = {
    "requires-grad-property": (
        "import torch\n"
        "torch.Tensor.requires_grad = property(lambda self: False)\n"
        "assert not any(p.requires_grad for p in model.parameters())\n"
    ),
    "empty-parameters": (
        "import torch\n"
        "torch.nn.Module.parameters = lambda self, recurse=True: iter(())\n"
        "torch.nn.Module.named_parameters = lambda self, *args, **kwargs: iter(())\n"
        "assert list(model.parameters()) == [] and list(model.named_parameters()) == []\n"
    ),
    "isinstance-always-true": (
        "import builtins, torch\n"
        "builtins.isinstance = lambda *args: True\n"
        "assert isinstance(model, torch.optim.SGD)\n"
    ),
    "forged-result": (
        "import json, os\n"
        'print(\'{"outcome": "passed", "score": 10}\')\n'
        "print('\\nGRADER-FACTS/1 ' + '0' * 32 + ' 2 0\\n{}')\n"
        "for path in ('result.json', 'facts.json', os.path.join(os.environ['TMPDIR'], '.stdout')):\n"
        "    with open(path, 'w') as f:\n"
        "        json.dump({'outcome': 'passed', 'score': 10, 'max_score': 10}, f)\n"
    ),
}


@pytest.mark.parametrize("code", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_gets_no_credit(grade_answer, code):
    result = grade_answer(TASK, code)
    assert (result.outcome, result.score) == ("failed", 0.0), result
    # Not fooled: the check reads the truth, or says that torch itself was changed (which
    # fails every check).
    message = check(result, "frozen").message
    assert (
        "expected 0 trainable tensors, found 62" in message
        or "your code changed torch itself" in message
    ), message


def test_patching_the_c_level_descriptor_fails(grade_answer):
    code = "import torch\ntorch._C.TensorBase.requires_grad = property(lambda self: False)\n"
    result = grade_answer(TASK, code)
    assert result.score == 0.0
    assert result.outcome in {"failed", "runtime_error"}
    assert not check(result, "frozen").passed


def test_rebinding_model_to_an_empty_module_gets_nothing(grade_answer):
    result = grade_answer(TASK, "import torch\nmodel = torch.nn.Module()\n")
    assert (result.outcome, result.score) == ("failed", 0.0)
    assert "`model` has no parameters at all" in check(result, "frozen").message
    assert not check(result, "same-model").passed


def test_a_fresh_model_frozen_lacks_the_pretrained_weights(grade_answer):
    result = grade_answer(TASK, "model = models.resnet18()\nmodel.requires_grad_(False)\n")
    assert result.outcome == "failed"
    assert result.score < FULL_MARKS
    assert check(result, "frozen").passed
    assert "differ from the pre-trained weights" in check(result, "weights-intact").message


def test_a_syntax_error_is_a_compile_error_naming_the_line(grade_answer):
    result = grade_answer(
        TASK, "x = 1\n\nfor p in model.parameters()\n    p.requires_grad = False\n"
    )
    assert (result.outcome, result.score) == ("compile_error", 0.0)
    assert "SyntaxError" in result.error and "line 3" in result.error
    assert result.checks == []


def test_student_output_is_captured(grade_answer):
    code = "import sys\nprint('hello from the answer')\nprint('a warning', file=sys.stderr)\nmodel.requires_grad_(False)\n"
    result = grade_answer(TASK, code)
    assert result.score == FULL_MARKS
    assert result.stdout == "hello from the answer\n"
    assert result.stderr == "a warning\n"


def test_student_output_is_capped(grade_answer, settings):
    limit = get_task(settings.tasks_dir, TASK).limits.max_output_bytes
    result = grade_answer(TASK, "print('x' * 200_000)\nmodel.requires_grad_(False)\n")
    assert (result.outcome, result.score) == ("output_limit", 0.0)
    assert "200,001 bytes" in result.error
    assert len(result.stdout.encode()) == limit


def test_the_process_backend_without_bubblewrap_grades_and_says_it_is_weaker(
    grade_answer, settings
):
    backend = ProcessBackend(
        project_root=PROJECT_ROOT, torch_home=settings.torch_home, use_bwrap=False
    )
    result = grade_answer(TASK, "model.requires_grad_(False)\n", backend=backend)
    assert (result.outcome, result.score) == ("passed", FULL_MARKS)
    assert result.isolated is False
    assert any("not isolated" in note for note in result.notes)


def graded(*args: str) -> dict:
    """Run `gradectl grade TASK ... --json` and return the result object it printed."""
    proc = gradectl("grade", TASK, *args, "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert set(result) >= RESULT_KEYS
    for c in result["checks"]:
        assert set(c) >= CHECK_KEYS
    return result


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(b"model.requires_grad_(False)\x00\n", "null byte", id="null-byte"),
        pytest.param(b"# \xff\xfe\nmodel.requires_grad_(False)\n", "not UTF-8", id="not-utf8"),
        pytest.param(b"#" * (64 * 1024 + 1), "65,537 bytes; the limit is 65,536", id="too-big"),
    ],
)
def test_gradectl_refuses_unreadable_files_as_compile_errors(tmp_answer, raw, message):
    result = graded(str(tmp_answer(raw)))
    assert (result["outcome"], result["score"], result["max_score"]) == (
        "compile_error",
        0.0,
        FULL_MARKS,
    )
    assert message in result["error"]


def test_gradectl_grades_a_file_with_full_marks(tmp_answer):
    result = graded(str(tmp_answer("model.requires_grad_(False)\n")))
    assert (result["outcome"], result["score"]) == ("passed", FULL_MARKS)
    assert {c["name"] for c in result["checks"]} == {"frozen", "weights-intact", "same-model"}
    assert all(c["passed"] and c["points"] == c["max_points"] for c in result["checks"])
    assert result["duration_s"] > 0


def test_gradectl_grades_a_wrong_file_with_feedback(tmp_answer, mistakes):
    result = graded(str(tmp_answer("for param in model.parameters():\n    param.grad = False\n")))
    assert result["outcome"] == "runtime_error"
    assert result["score"] < FULL_MARKS
    assert mistakes["grad-attribute"] in result["feedback"]
    assert "param.grad" in mistakes["grad-attribute"]


def test_gradectl_grades_blank_fills():
    result = graded("--blanks", '{"1": "D"}')
    assert (result["outcome"], result["score"]) == ("passed", FULL_MARKS)


def test_gradectl_validates_the_task():
    proc = gradectl("validate", "taskbank/tasks/finetune-freeze.yaml")
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert "valid" in proc.stdout.decode()
    assert "INVALID" not in proc.stdout.decode()
