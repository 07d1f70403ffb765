"""`trainable_params`: which parameters require gradients (frozen vs trainable), by name.

Besides each parameter's `requires_grad` and size, the observer records the module's own
`training` flag (a plain bool read from its instance dictionary), so that a model put in
evaluation mode with nothing frozen is told apart from one left as it was.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.checks.base import MODULE_PATH_PATTERN, VARIABLE_PATTERN, CheckBase

TYPE = "trainable_params"


class Params(CheckBase):
    type: Literal["trainable_params"]
    variable: str = Field("model", pattern=VARIABLE_PATTERN)
    module: str = Field(
        "", pattern=MODULE_PATH_PATTERN, description="Submodule path; empty: the whole model."
    )
