"""The check registry: spec `type` → the module holding both halves of that check.

A new check type is one module here (with `TYPE`, `Params`, `Facts`, `observe`, `judge`
and optionally `prepare` and `REASONS`) and one entry in `_MODULES`. A test asserts that every spec
type has a module and every module a spec type.
"""

from __future__ import annotations

from types import ModuleType
from typing import Annotated, Union

from pydantic import Field

from graders.checks import (
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
from graders.checks.base import COMMON_REASONS

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

REGISTRY: dict[str, ModuleType] = {m.TYPE: m for m in _MODULES}

CheckSpec = Annotated[Union[tuple(m.Params for m in _MODULES)], Field(discriminator="type")]  # noqa: UP007


def module_for(check_type: str) -> ModuleType:
    return REGISTRY[check_type]


def reasons_of(check_type: str) -> dict[str, str]:
    """The reason codes a check type's verdicts can carry (`REASONS` of its module and the
    reasons common to every type), with what each means."""
    return {**COMMON_REASONS, **getattr(REGISTRY[check_type], "REASONS", {})}
