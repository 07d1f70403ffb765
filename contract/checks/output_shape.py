"""`output_shape`: the shape a module gives on a seeded input of a given shape.

The module runs in eval mode without gradients, and its training flags are restored
afterwards, so observing does not change batch-norm statistics for later checks.

With `features_at` (e.g. the head), the input that reaches that submodule during the same
forward (the features the backbone gives the head) must also equal the reference's. For
that forward only, the submodule is wrapped, where its parent holds it, in a probe that
records its input and calls it. What reaches it is a behaviour of the answer's forward:
a diagnostic beside the weight-based facts of `frozen_backbone`, never the only fact
that settles a task.

With `per_sample`, what the module gives the first sample must be the same beside other
samples (another seeded batch with that sample first), as the reference's is: a layer that
normalises over the batch in eval mode (a batch norm without running statistics) fails.

With `learns` (for a new layer the answer makes, e.g. the head), the module must also be
able to learn: one plain gradient step (SGD, learning rate 1) on the cross-entropy of its
train-mode output on the same input must change its eval-mode output and reach one of its
weights (not only biases) where the reference's does. A layer after the weights that
outputs a constant (`Threshold(1e9, 0)`) or drops everything in training (`Dropout(p=1)`)
fails, and so does one whose weights get no gradient (a `Dropout(p=1)` before them); a
zero-initialised layer, constant until its first step, passes. The module's trainable
parameters and buffers are put back as they were afterwards.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from contract.checks.base import MODULE_PATH_PATTERN, VARIABLE_PATTERN, CheckBase

TYPE = "output_shape"
MAX_INPUT_ELEMENTS = 4_000_000


class Params(CheckBase):
    type: Literal["output_shape"]
    variable: str = Field("model", pattern=VARIABLE_PATTERN)
    module: str = Field(
        "", pattern=MODULE_PATH_PATTERN, description="Submodule path; empty: the whole model."
    )
    input_shape: list[int] = Field(
        min_length=1, max_length=6, description="Shape of the seeded random input."
    )
    features_at: str = Field(
        "",
        pattern=MODULE_PATH_PATTERN,
        description="A submodule of the variable (e.g. the head) whose input during this "
        "forward must equal the reference's.",
    )
    per_sample: bool = Field(
        False,
        description="What the module gives a sample must not depend on the other samples "
        "of its batch (eval mode): the first sample is run again beside other companions.",
    )
    learns: bool = Field(
        False,
        description="One gradient step on the module's trainable parameters must change "
        "its output and reach one of its weights, not only biases (a 2-D output: a "
        "classifier's scores).",
    )
    rtol: float = Field(1e-3, ge=0, le=1, description="Tolerance of the features' comparison.")
    atol: float = Field(1e-4, ge=0, le=1)

    @field_validator("input_shape")
    @classmethod
    def _bounded(cls, shape: list[int]) -> list[int]:
        if any(n < 1 for n in shape) or math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise ValueError(
                f"every dimension must be >= 1 and the input at most {MAX_INPUT_ELEMENTS:,} elements"
            )
        return shape
