"""`python`: instructor-written assertions, run in the sandbox after the student's code.

The code runs in a copy of the student's scope; an `AssertionError` fails the check with
its message. Its outcome is a fact like any other: the host only reads pass/fail, and the
reference solution must pass it. It shares the student's interpreter, so it is weaker
against tampering than the structural checks: prefer those where one fits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.checks.base import CheckBase

TYPE = "python"


class Params(CheckBase):
    type: Literal["python"]
    code: str = Field(
        min_length=1, max_length=20_000, description="Assertions over the student's variables."
    )
