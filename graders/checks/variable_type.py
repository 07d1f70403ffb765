"""`variable_type`'s judge: whether the variable is an instance of the expected type (the
check: contract/checks/variable_type.py).
"""

from __future__ import annotations

from pydantic import Field

from contract.checks.variable_type import TYPE, Params
from graders.checks.base import FactsBase, Observed, Verdict

__all__ = ["TYPE", "REASONS", "Facts", "judge"]  # what the judge reads

REASONS: dict[str, str] = {
    "wrong-type": "the variable exists but is not an instance of the expected type",
}


class Facts(FactsBase):
    exists: bool
    lineage: list[str] = Field(default_factory=list, max_length=200)


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    facts = got.facts
    if not facts.exists:
        return Verdict.fail(
            f"no variable named `{params.variable}` exists after your code ran", "missing"
        )
    if params.expected_type in facts.lineage:
        return Verdict(True, f"`{params.variable}` is a {facts.lineage[0]}")
    return Verdict.fail(
        f"`{params.variable}` is a {facts.lineage[0] if facts.lineage else '?'}, expected a {params.expected_type}",
        "wrong-type",
    )
