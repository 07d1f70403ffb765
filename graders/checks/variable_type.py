"""`variable_type`: a variable exists after the student's code and is an instance of a type."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from graders.checks.base import VARIABLE_PATTERN, CheckBase, FactsBase, Observed, Verdict

TYPE = "variable_type"

REASONS: dict[str, str] = {
    "wrong-type": "the variable exists but is not an instance of the expected type",
}


class Params(CheckBase):
    type: Literal["variable_type"]
    variable: str = Field(pattern=VARIABLE_PATTERN)
    expected_type: str = Field(
        pattern=r"^[A-Za-z_][\w.]{0,200}$",
        description="Qualified class name the value must be an instance of, e.g. torch.nn.Module.",
    )


class Facts(FactsBase):
    exists: bool
    lineage: list[str] = Field(default_factory=list, max_length=200)


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    try:
        value = ti.lookup(ctx.scope, params.variable)
    except ti.Missing:
        return {"exists": False}
    return {"exists": True, "lineage": ti.type_lineage(value)}


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
