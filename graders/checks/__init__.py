"""The judges: spec `type` → the module that judges that check's facts on the host.

A check type is three modules of one name: its parameters in `contract/checks/` (shared
with the sandbox), its observer in `sandboxed/observe/` (run beside the answer) and its
judge here (`REASONS`, `Facts`, `judge`), with one entry in `_MODULES` of each package's
registry. A test asserts that every spec type has all three and every module a spec type.
"""

from __future__ import annotations

from types import ModuleType

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


def module_for(check_type: str) -> ModuleType:
    return REGISTRY[check_type]


def reasons_of(check_type: str) -> dict[str, str]:
    """The reason codes a check type's verdicts can carry (`REASONS` of its module and the
    reasons common to every type), with what each means."""
    return {**COMMON_REASONS, **getattr(REGISTRY[check_type], "REASONS", {})}
