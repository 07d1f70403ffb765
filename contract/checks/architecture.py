"""`architecture`: the model's class and layer structure equal the reference's.

The structure is every submodule's path and class (known by the class's identity), its
hyper-parameters (the plain values a layer keeps, such as a convolution's stride or a
dropout's p) and every parameter's shape. A path the reference model does not have is a
fact too: the check then passes only where the answer's model has none either (no `fc`
on a MobileNetV2).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.checks.base import MODULE_PATH_PATTERN, VARIABLE_PATTERN, CheckBase

TYPE = "architecture"
# A layer's setting as the facts carry it: what the observer records, the judge compares.
Plain = bool | int | float | str | None
Setting = Plain | list[Plain]


class Params(CheckBase):
    type: Literal["architecture"]
    variable: str = Field("model", pattern=VARIABLE_PATTERN)
    module: str = Field(
        "", pattern=MODULE_PATH_PATTERN, description="Submodule path; empty: the whole model."
    )


def short_name(class_name: str) -> str:
    """torch.nn.modules.linear.Linear -> torch.nn.Linear: the name a learner writes."""
    if class_name.startswith("torch.nn.modules."):
        return "torch.nn." + class_name.rpartition(".")[2]
    return class_name
