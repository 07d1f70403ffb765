"""`architecture`: the model's class and layer structure equal the reference's."""

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
    preview,
)

TYPE = "architecture"


class Params(CheckBase):
    type: Literal["architecture"]
    variable: str = Field("model", pattern=VARIABLE_PATTERN)
    module: str = Field(
        "", pattern=MODULE_PATH_PATTERN, description="Submodule path; empty: the whole model."
    )


class Facts(FactsBase):
    class_name: str = Field(max_length=300)
    modules: dict[str, str] = Field(max_length=MAX_NAMES, description="Module path to class name.")
    parameters: dict[str, list[int]] = Field(
        max_length=MAX_NAMES, description="Parameter name to shape."
    )


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    root = ti.submodule(ti.lookup(ctx.scope, params.variable), params.module, params.variable)
    return {
        "class_name": ti.qualified_type_name(root),
        "modules": {path: ti.qualified_type_name(m) for path, m in ti.named_modules(root) if path},
        "parameters": {name: ti.shape_of(p) for name, p in ti.named_parameters(root)},
    }


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    where = params.variable + (f".{params.module}" if params.module else "")
    if have.class_name != want.class_name:
        return Verdict(False, f"`{where}` is a {have.class_name}, expected a {want.class_name}")
    missing = set(want.modules) - set(have.modules)
    extra = set(have.modules) - set(want.modules)
    retyped = [
        p
        for p in sorted(set(want.modules) & set(have.modules))
        if have.modules[p] != want.modules[p]
    ]
    problems = []
    if missing:
        problems.append(f"missing layers {preview(missing)}")
    if extra:
        problems.append(f"unexpected layers {preview(extra)}")
    if retyped:
        p = retyped[0]
        problems.append(f"`{p}` is a {have.modules[p]}, expected a {want.modules[p]}")
    reshaped = [
        n
        for n in sorted(want.parameters)
        if n in have.parameters and have.parameters[n] != want.parameters[n]
    ]
    if reshaped:
        n = reshaped[0]
        problems.append(f"{n} has shape {have.parameters[n]}, expected {want.parameters[n]}")
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, f"{want.class_name} with the expected {len(want.modules)} layers")
