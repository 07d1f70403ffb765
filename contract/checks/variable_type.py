"""`variable_type`: a variable exists after the student's code and is an instance of a type."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.checks.base import VARIABLE_PATTERN, CheckBase

TYPE = "variable_type"


class Params(CheckBase):
    type: Literal["variable_type"]
    variable: str = Field(pattern=VARIABLE_PATTERN)
    expected_type: str = Field(
        pattern=r"^[A-Za-z_][\w.]{0,200}$",
        description="Qualified class name the value must be an instance of, e.g. torch.nn.Module.",
    )
