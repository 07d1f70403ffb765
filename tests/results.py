"""Reading a GradeResult in tests, one way for every table of answers: full marks, the
checks that failed and their messages, the mistakes an answer was told."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from graders.result import CheckResult, GradeResult


def full_marks(result: GradeResult) -> bool:
    return result.outcome == "passed" and result.score == result.max_score


def failures(result: GradeResult) -> dict[str, str]:
    """Each failed check's name and message."""
    return {c.name: c.message for c in result.checks if not c.passed}


def messages(result: GradeResult) -> dict[str, str]:
    """Each check's name and message, marked PASS or FAIL."""
    return {c.name: ("PASS " if c.passed else "FAIL ") + c.message for c in result.checks}


def failed_check(result: GradeResult, name: str) -> CheckResult:
    found = [c for c in result.checks if c.name == name and not c.passed]
    assert found, [(c.name, c.passed, c.message) for c in result.checks]
    return found[0]


def assert_full_marks(result: GradeResult) -> None:
    """Every point, and no mistake told."""
    assert full_marks(result), (result.error, failures(result))
    assert result.feedback == [] and result.mistakes == [], result.feedback


def assert_fails(
    result: GradeResult, check: str, fragment: str, outcome: str | None = None
) -> None:
    """Fewer than all points (with `outcome`, when given), and `check` failed with a
    message holding `fragment`."""
    assert result.outcome != "passed" and result.score < result.max_score, result.model_dump()
    assert outcome in (None, result.outcome), result.model_dump()
    message = failed_check(result, check).message
    assert fragment in message, message


def assert_wrong(
    result: GradeResult,
    failing: Iterable[str],
    fragments: Mapping[str, str],
    mistakes: Iterable[str],
) -> None:
    """Exactly the checks `failing` fail, each named in `fragments` with a message holding
    its fragment, and the answer is told exactly `mistakes` (the task's mistake ids)."""
    failed = failures(result)
    assert result.score < result.max_score, result.model_dump()
    assert set(failed) == set(failing), (result.error, messages(result))
    for name, fragment in fragments.items():
        assert fragment in failed[name], (name, failed[name])
    assert sorted(result.mistakes) == sorted(mistakes), (
        result.mistakes,
        {c.name: c.reasons for c in result.checks if not c.passed},
    )
    assert len(result.feedback) == len(result.mistakes), result.feedback
