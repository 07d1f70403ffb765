"""`output_shape`: the shape a module gives on a seeded input of a given shape.

The module runs in eval mode without gradients, and its training flags are restored
afterwards, so observing does not change batch-norm statistics for later checks.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from graders.checks.base import (
    MODULE_PATH_PATTERN,
    VARIABLE_PATTERN,
    CheckBase,
    FactsBase,
    ObservationError,
    Observed,
    Verdict,
)

TYPE = "output_shape"
EXECUTES_ANSWER = True  # it calls the module's forward, which the answer may have written
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

    @field_validator("input_shape")
    @classmethod
    def _bounded(cls, shape: list[int]) -> list[int]:
        if any(n < 1 for n in shape) or math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise ValueError(
                f"every dimension must be >= 1 and the input at most {MAX_INPUT_ELEMENTS:,} elements"
            )
        return shape


class Facts(FactsBase):
    shape: list[int] | None = Field(None, max_length=16)
    error: str | None = Field(None, max_length=2000)


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    where = params.variable + (f".{params.module}" if params.module else "")
    module = ti.submodule(ti.lookup(ctx.scope, params.variable), params.module, params.variable)
    x = ti.seeded_input(params.input_shape, ctx.seed)
    flags = ti.set_training(module, False)
    try:
        with ti.no_grad():
            out = ti.call_module(module, x)
    except Exception as exc:  # the student's module failing on the input is a fact
        return {
            "error": f"`{where}` raised {type(exc).__name__} on an input of shape {params.input_shape}: {exc}"[
                :2000
            ]
        }
    finally:
        ti.restore_training(module, flags)
    if not ti.is_tensor(out):
        raise ObservationError(f"`{where}` returned a {ti.qualified_type_name(out)}, not a tensor")
    return {"shape": ti.shape_of(out)}


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    where = params.variable + (f".{params.module}" if params.module else "")
    if got.facts.error:
        return Verdict(False, got.facts.error)
    want = expected.facts.shape
    if got.facts.shape != want:
        return Verdict(
            False,
            f"`{where}` gives an output of shape {got.facts.shape} on an input of shape "
            f"{params.input_shape}, expected {want}",
        )
    return Verdict(True, f"`{where}` gives shape {want} on an input of shape {params.input_shape}")
