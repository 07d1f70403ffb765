"""`pretrained_weights`: the model's state equals the reference's (e.g. the pre-trained checkpoint).

Catches `pretrained=False`, `pretrained=None` or `0` (random weights), weights loaded and
then re-initialised, or a state dict for another architecture. Each tensor is recorded as
a parameter or a buffer, so that weights that all differ (not loaded) are told apart from
some layers changed, and from batch-norm statistics that moved while every weight is intact.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.checks.base import MODULE_PATH_PATTERN, VARIABLE_PATTERN, CheckBase

TYPE = "pretrained_weights"


class Params(CheckBase):
    type: Literal["pretrained_weights"]
    variable: str = Field(
        "model", pattern=VARIABLE_PATTERN, description="Variable holding the model."
    )
    module: str = Field(
        "", pattern=MODULE_PATH_PATTERN, description="Submodule path; empty: the whole model."
    )
    exclude: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Glob patterns of state names to ignore, e.g. 'fc.*'.",
    )
