"""Observers never run a line of the answer outside the calls they make into it on purpose.

A correct answer, then one kind of structure the observers read replaced with tripwire
look-alikes (tests/adversarial/tripwires.py): no tripwire may fire while the checks
observe, and every check that reads the tampered structure fails. Run on every isolating
backend, each kind on the fork server (where the jobs also follow each other).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.answers import Answer
from services.grading import grade
from services.taskbank import get_task, load_spec_file
from services.validation import validate
from tests.adversarial.tripwires import FAILS, KINDS, TRIPWIRE_MARK, tripwire_answer

pytestmark = [pytest.mark.slow]

SPEC_PATH = Path(__file__).parent / "specs" / "every-check.yaml"
EPOCH = (
    "model.train()\n"
    "for inputs, labels in dataloader:\n"
    "    optimizer.zero_grad()\n"
    "    criterion(model(inputs), labels).backward()\n"
    "    optimizer.step()\n"
)


@pytest.fixture(scope="module")
def every_check(settings, process_backend):
    spec = load_spec_file(SPEC_PATH)
    report = validate(spec, backend=process_backend, settings=settings)
    assert report.ok, report.text()
    return spec, report.expected


def tripped(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(TRIPWIRE_MARK)]


def failed(result) -> set[str]:
    return {c.name for c in result.checks if not c.passed}


def assert_contained(result, kind: str) -> None:
    assert "ARMED" in result.stdout, result.model_dump_json(indent=2)
    assert tripped(result) == [], result.stdout
    assert FAILS[kind] <= failed(result), (kind, [(c.name, c.message) for c in result.checks])
    if not FAILS[kind]:
        assert result.outcome == "passed", result.model_dump_json(indent=2)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_tampered_structure_fails_its_checks_and_runs_nothing(
    kind, fork_backend, every_check, settings
):
    spec, expected = every_check
    result = grade(
        spec, Answer(code=tripwire_answer(kind)), backend=fork_backend, expected=expected,
        settings=settings,
    )  # fmt: skip
    assert_contained(result, kind)


@pytest.mark.parametrize("kind", ["parameters", "module-classes", "optimizer-class", "builtins"])
def test_tripwires_on_every_backend(kind, backend, every_check, settings):
    spec, expected = every_check
    result = grade(
        spec, Answer(code=tripwire_answer(kind)), backend=backend, expected=expected,
        settings=settings,
    )  # fmt: skip
    assert_contained(result, kind)


@pytest.mark.parametrize("kind", ["parameters", "builtins", "training-flags"])
def test_tripwires_on_a_training_epoch(kind, fork_backend, settings, expected_for):
    """The training loop's observers, whose loss runs the model's forward on purpose."""
    spec = get_task(settings.tasks_dir, "finetune-train-epoch")
    code = tripwire_answer(kind, correct=EPOCH)
    result = grade(
        spec, Answer(code=code), backend=fork_backend,
        expected=expected_for("finetune-train-epoch"), settings=settings,
    )  # fmt: skip
    assert "ARMED" in result.stdout and tripped(result) == [], result.stdout
    verdicts = {c.name: c.passed for c in result.checks}
    if kind == "builtins":
        assert result.outcome == "passed", result.model_dump_json(indent=2)
    elif kind == "parameters":
        assert verdicts["final-weights"] is False, result.model_dump_json(indent=2)
    else:
        assert verdicts["loss-decreases"] is False, result.model_dump_json(indent=2)
