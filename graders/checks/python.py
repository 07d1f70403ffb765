"""`python`: instructor-written assertions, run in the sandbox after the student's code.

The code runs in a copy of the student's scope; an `AssertionError` fails the check with
its message. Its outcome is a fact like any other: the host only reads pass/fail, and the
reference solution must pass it. It shares the student's interpreter, so it is weaker
against tampering than the structural checks: prefer those where one fits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from graders.checks.base import CheckBase, FactsBase, Observed, Verdict

TYPE = "python"
EXECUTES_ANSWER = True  # the assertions touch the answer's objects, whose methods are its code

REASONS: dict[str, str] = {
    "assertion-failed": "an instructor's assertion did not hold",
    "raised": "the assertions raised an exception other than AssertionError",
}


class Params(CheckBase):
    type: Literal["python"]
    code: str = Field(
        min_length=1, max_length=20_000, description="Assertions over the student's variables."
    )


class Facts(FactsBase):
    passed: bool
    message: str = Field("", max_length=2000)
    raised: bool = Field(False, description="An exception other than AssertionError ended them.")


def observe(ctx, params: Params) -> dict:
    code = compile(params.code, f"<check {params.name}>", "exec")
    namespace = dict(ctx.scope)
    try:
        ctx.ti.call_answer(exec, code, namespace, grad=True)
    except ctx.ti.AnswerRaised as exc:
        if exc.assertion:
            return {"passed": False, "message": exc.text[:2000] or "an assertion failed"}
        return {"passed": False, "message": f"{exc.kind}: {exc.text}"[:2000], "raised": True}
    return {"passed": True}


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    if got.facts.passed:
        return Verdict(True, "the instructor's assertions hold")
    return Verdict.fail(got.facts.message, "raised" if got.facts.raised else "assertion-failed")
