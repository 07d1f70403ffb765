"""`python`'s judge: whether the instructor's assertions held (the check:
contract/checks/python.py).
"""

from __future__ import annotations

from pydantic import Field

from contract.checks.python import TYPE, Params
from graders.checks.base import FactsBase, Observed, Verdict

__all__ = ["TYPE", "REASONS", "Facts", "judge"]  # what the judge reads

# What it judges is what the answer's own objects answered: it does not, alone, earn the
# points of the checks an empty answer passes (see the judge).
SELF_REPORTED = True

REASONS: dict[str, str] = {
    "assertion-failed": "an instructor's assertion did not hold",
    "raised": "the assertions raised an exception other than AssertionError",
}


class Facts(FactsBase):
    passed: bool
    message: str = Field("", max_length=2000)
    raised: bool = Field(False, description="An exception other than AssertionError ended them.")


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    if got.facts.passed:
        return Verdict(True, "the instructor's assertions hold")
    return Verdict.fail(got.facts.message, "raised" if got.facts.raised else "assertion-failed")
