"""`frozen_backbone`: the head (a module path) was replaced by a trainable layer; the backbone,
everything outside the head, is the reference's and frozen.

One `aspect` per check (`all`, the default, judges the three in this order):

- `unchanged`: the backbone's layers (paths, classes known by identity, hyper-parameters)
  and its tensors (parameters and persistent buffers such as batch-norm statistics, by
  value) equal the reference's: a swapped pooling layer, a removed dropout, an added layer,
  a re-initialised weight or a forward pass in training mode all change it;
- `frozen`: no parameter of the reference's backbone requires gradients;
- `head`: a module is at the head's path, holds tensors of the reference head's shapes
  (whatever their names or nesting: `Sequential(Dropout(), Linear())` is a head like
  `Linear()`), every one trainable, and contains the classes `contains` names.

These facts are weights and structure, read without running the answer's code; the
features the backbone gives the head are compared by `output_shape`'s `features_at`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.checks.base import MODULE_PATH_PATTERN, VARIABLE_PATTERN, CheckBase

TYPE = "frozen_backbone"


class Params(CheckBase):
    type: Literal["frozen_backbone"]
    aspect: Literal["all", "unchanged", "frozen", "head"] = "all"
    variable: str = Field("model", pattern=VARIABLE_PATTERN)
    head: str = Field(
        min_length=1,
        pattern=MODULE_PATH_PATTERN,
        description="Path of the head, e.g. fc or classifier.1.",
    )
    contains: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Classes the head must contain, in this order, e.g. torch.nn.Dropout.",
    )
