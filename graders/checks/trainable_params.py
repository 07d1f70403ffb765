"""`trainable_params`: which parameters require gradients (frozen vs trainable), by name."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from graders.checks.base import (
    MAX_NAMES,
    MODULE_PATH_PATTERN,
    VARIABLE_PATTERN,
    CheckBase,
    FactsBase,
    Observed,
    Verdict,
    plural,
    preview,
)

TYPE = "trainable_params"


class Params(CheckBase):
    type: Literal["trainable_params"]
    variable: str = Field("model", pattern=VARIABLE_PATTERN)
    module: str = Field(
        "", pattern=MODULE_PATH_PATTERN, description="Submodule path; empty: the whole model."
    )


class ParamFact(FactsBase):
    numel: int = Field(ge=0)
    requires_grad: bool


class Facts(FactsBase):
    parameters: dict[str, ParamFact] = Field(max_length=MAX_NAMES)

    def trainable(self) -> list[str]:
        return [n for n, p in self.parameters.items() if p.requires_grad]

    def count(self, names: list[str]) -> int:
        return sum(self.parameters[n].numel for n in names)


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    root = ti.submodule(ti.lookup(ctx.scope, params.variable), params.module, params.variable)
    return {
        "parameters": {
            name: {"numel": ti.numel(p), "requires_grad": ti.requires_grad(p)}
            for name, p in ti.named_parameters(root)
        }
    }


def _describe(names: list[str]) -> str:
    return f"{plural(len(names), 'trainable tensor')}" + (f" ({preview(names)})" if names else "")


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    if not have.parameters:
        return Verdict(False, f"`{params.variable}` has no parameters at all")
    want_trainable, have_trainable = want.trainable(), have.trainable()
    if set(want_trainable) == set(have_trainable) and set(want.parameters) == set(have.parameters):
        frozen = len(have.parameters) - len(have_trainable)
        return Verdict(
            True,
            f"{_describe(have_trainable)} ({have.count(have_trainable):,} parameters), "
            f"{plural(frozen, 'frozen tensor')}",
        )
    message = (
        f"expected {_describe(want_trainable)}, found {len(have_trainable)}"
        + (f" ({preview(have_trainable)})" if have_trainable else "")
        + f"; {have.count(have_trainable):,} trainable parameters, expected {want.count(want_trainable):,}"
    )
    missing = [n for n in want_trainable if n not in have_trainable]
    if missing and have_trainable:
        message += f"; should be trainable but is not: {preview(missing)}"
    return Verdict(False, message)
