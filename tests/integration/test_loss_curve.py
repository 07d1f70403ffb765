"""The training task's loss per iteration, recorded in the sandbox and carried by the result
beside a correct run's (`loss_curve`), graded end to end: through `gradectl grade --json`
as a user runs it, and on the process backend for the hostile losses. The values are shown,
never scored: an answer's score is the same whatever its curve holds."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import gradectl
from tests.results import assert_full_marks

pytestmark = pytest.mark.slow

TASK = "finetune-train-epoch"
BATCHES = 8  # the task's data loader: 64 images in batches of 8
EPOCH = (
    "model.train()\nfor i, (x, y) in enumerate(dataloader):\n    optimizer.zero_grad()\n"
    "    loss = criterion(model(x), y){scaled}\n    loss{wrapped}.backward()\n"
    "    optimizer.step()\n"
)
# Records a line on stdout when one of the loss's methods (or a dispatch mode's handler) is
# called straight from the grader's instrumentation: proof that it ran the answer's code.
WATCH = """
import sys as _sys
def _note(what):
    caller = _sys._getframe(2)
    if caller is not None and caller.f_code.co_filename == "<instrumentation>":
        print("TRIPWIRE " + what)
"""
SUBCLASS = """
class Loud(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        _note("__torch_function__ " + getattr(func, "__name__", "?"))
        return super().__torch_function__(func, types, args, kwargs or {})
    def __float__(self):
        _note("__float__")
        return 0.0
    def item(self):
        _note("item")
        return 0.0
"""
MODE = """
from torch.utils._python_dispatch import TorchDispatchMode
class Forged(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        _note("__torch_dispatch__ " + str(func))
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_floating_point():
            return 42.0
        return func(*args, **(kwargs or {}))
"""


def graded(tmp_answer, code: str) -> dict:
    """`gradectl grade TASK file --json`'s result, read as strict JSON (no NaN, no Infinity)."""
    proc = gradectl("grade", TASK, str(tmp_answer(code)), "--json")
    assert proc.returncode == 0, proc.stderr.decode()

    def refuse(name: str) -> float:
        raise AssertionError(f"the result holds {name}, which JSON does not")

    return json.loads(proc.stdout, parse_constant=refuse)


def test_the_result_carries_the_loss_of_each_iteration_beside_a_correct_runs(tmp_answer):
    result = graded(tmp_answer, EPOCH.format(scaled="", wrapped=""))
    assert (result["outcome"], result["score"]) == ("passed", result["max_score"])
    curve = result["loss_curve"]
    assert len(curve["answer"]) == len(curve["reference"]) == BATCHES
    assert all(isinstance(v, float) and 0 < v < 20 for v in curve["answer"]), curve
    assert curve["answer"] == pytest.approx(curve["reference"], rel=1e-5)


def test_losses_that_are_not_finite_are_shown_as_gaps_and_the_score_is_the_facts(tmp_answer):
    """A loss made infinite at the third batch: the weights diverge (NaN from then on)."""
    code = EPOCH.format(scaled=" * (math.inf if i == 2 else 1.0)", wrapped="")
    result = graded(tmp_answer, "import math\n" + code)
    answer, reference = result["loss_curve"]["answer"], result["loss_curve"]["reference"]
    assert len(answer) == BATCHES and answer[2:] == [None] * (BATCHES - 2), answer
    assert answer[:2] == pytest.approx(reference[:2], rel=1e-5)
    assert all(v is not None and math.isfinite(v) for v in reference)
    failed = {c["name"] for c in result["checks"] if not c["passed"]}
    assert {"final-weights", "loss-decreases"} <= failed


def test_a_loss_of_a_tensor_subclass_is_not_read_and_runs_none_of_its_code(grade_answer):
    """Its methods are the answer's: the curve has a gap for each iteration, none of them
    ran from the instrumentation, and the score is a correct epoch's."""
    code = WATCH + SUBCLASS + EPOCH.format(scaled="", wrapped=".as_subclass(Loud)")
    result = grade_answer(TASK, code)
    assert "TRIPWIRE" not in result.stdout, result.stdout
    assert_full_marks(result)
    assert result.loss_curve is not None
    assert result.loss_curve.answer == [None] * BATCHES
    assert len(result.loss_curve.reference) == BATCHES


def test_a_dispatch_mode_neither_forges_the_loss_nor_runs_from_the_instrumentation(grade_answer):
    """The answer's mode would answer 42 for every float read: the curve holds what the
    kernels computed (a correct epoch's losses), and the epoch is graded as one."""
    epoch = EPOCH.format(scaled="", wrapped="")
    code = (
        WATCH + MODE + "with Forged():\n" + "".join(f"    {line}\n" for line in epoch.splitlines())
    )
    result = grade_answer(TASK, code)
    assert "TRIPWIRE" not in result.stdout, result.stdout
    assert_full_marks(result)
    assert result.loss_curve is not None
    assert result.loss_curve.answer == pytest.approx(result.loss_curve.reference, rel=1e-5)
    assert 42.0 not in result.loss_curve.answer
