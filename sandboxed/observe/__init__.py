"""The observers: spec `type` → the module that observes that check in the sandbox.

An observer module has `observe` (and optionally `prepare`, run before the answer, and
`EXECUTES_ANSWER` or `RUNS_TORCH`, which order the observers); a test asserts every spec
type has one.
"""

from __future__ import annotations

from types import ModuleType

from sandboxed.observe import (
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

OBSERVERS: dict[str, ModuleType] = {m.TYPE: m for m in _MODULES}
