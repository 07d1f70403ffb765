"""Reading a GradeResult in tests: full marks, and the failed check a mistake must fail."""

from __future__ import annotations

from graders.result import CheckResult, GradeResult


def full_marks(result: GradeResult) -> bool:
    return result.outcome == "passed" and result.score == result.max_score


def failed_check(result: GradeResult, name: str) -> CheckResult:
    found = [c for c in result.checks if c.name == name and not c.passed]
    assert found, [(c.name, c.passed, c.message) for c in result.checks]
    return found[0]
