"""The check types' parameters: spec `type` → its `Params`, and the union a spec's checks
parse into.

A check type is three modules of one name: `contract/checks/<type>.py` (`TYPE`, `Params`,
the constants both sides need), `sandboxed/observe/<type>.py` (what the sandbox records)
and `graders/checks/<type>.py` (how the host judges it). A test asserts every spec type has
all three.
"""

from __future__ import annotations

from types import ModuleType
from typing import Annotated, Union

from pydantic import Field

from contract.checks import (
    architecture,
    frozen_backbone,
    optimizer,
    output_shape,
    pretrained_weights,
    python,
    trainable_params,
    training_loop,
    variable_type,
)

_MODULES: tuple[ModuleType, ...] = (
    architecture,
    frozen_backbone,
    optimizer,
    output_shape,
    pretrained_weights,
    python,
    trainable_params,
    training_loop,
    variable_type,
)

PARAMS: dict[str, type] = {m.TYPE: m.Params for m in _MODULES}

CheckSpec = Annotated[Union[tuple(PARAMS.values())], Field(discriminator="type")]  # noqa: UP007
