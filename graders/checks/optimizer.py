"""`optimizer`: the optimizer's type, which parameters it updates (by name), and their learning rates.

One `aspect` per check, so a spec can give separate points for each. Learning rates are
compared per parameter, from the group that holds it: `lr=` on the constructor and `lr`
set inside a param group are judged by their effect, not their spelling.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from graders.checks.base import (
    MAX_NAMES,
    VARIABLE_PATTERN,
    CheckBase,
    FactsBase,
    Observed,
    Verdict,
    plural,
    preview,
)

TYPE = "optimizer"
Hyper = float | bool | None | list[float]


class Params(CheckBase):
    type: Literal["optimizer"]
    aspect: Literal["type", "params", "lr"]
    variable: str = Field("optimizer", pattern=VARIABLE_PATTERN)
    model: str = Field(
        "model", pattern=VARIABLE_PATTERN, description="Variable whose parameter names are used."
    )
    rel_tol: float = Field(1e-6, ge=0, le=1)


class Group(FactsBase):
    params: list[str] = Field(max_length=MAX_NAMES)
    hyper: dict[str, Hyper] = Field(max_length=64)


class Facts(FactsBase):
    class_name: str = Field(max_length=300)
    groups: list[Group] = Field(max_length=256)
    frozen: list[str] = Field(
        default_factory=list, max_length=MAX_NAMES, description="Held but not trainable."
    )

    def lr_by_param(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for g in self.groups:
            lr = g.hyper.get("lr")
            for name in g.params:
                out.setdefault(name, lr if isinstance(lr, float) else None)
        return out


def _hyper_value(value) -> Hyper | type[Ellipsis]:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if (
        isinstance(value, tuple | list)
        and len(value) <= 8
        and all(isinstance(v, int | float) for v in value)
    ):
        return [float(v) for v in value]
    try:  # a 0-d tensor learning rate
        return float(value)
    except (TypeError, ValueError):
        return ...


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    optimizer = ti.lookup(ctx.scope, params.variable)
    groups = ti.optimizer_groups(optimizer)
    names = ti.param_ids(ti.require_module(ti.lookup(ctx.scope, params.model), params.model))
    out_groups, frozen, unknown = [], [], 0
    for group in groups[:256]:
        held = []
        for p in list(group.get("params", []))[:MAX_NAMES]:
            name = names.get(id(p))
            if name is None:
                unknown += 1
                name = f"<tensor #{unknown} not in `{params.model}`>"
            elif not ti.requires_grad(p):
                frozen.append(name)
            held.append(name)
        hyper = {}
        for key, value in list(group.items())[:64]:
            if key != "params" and isinstance(key, str) and len(key) <= 64:
                v = _hyper_value(value)
                if v is not ...:
                    hyper[key] = v
        out_groups.append({"params": held, "hyper": hyper})
    return {"class_name": ti.qualified_type_name(optimizer), "groups": out_groups, "frozen": frozen}


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    if params.aspect == "type":
        if have.class_name != want.class_name:
            return Verdict(
                False, f"the optimizer is a {have.class_name}, expected a {want.class_name}"
            )
        return Verdict(True, f"the optimizer is a {want.class_name}")
    have_lr, want_lr = have.lr_by_param(), want.lr_by_param()
    if params.aspect == "params":
        extra = [n for n in have_lr if n not in want_lr]
        missing = [n for n in want_lr if n not in have_lr]
        if not extra and not missing:
            return Verdict(
                True,
                f"the optimizer updates exactly {plural(len(want_lr), 'tensor')} ({preview(list(want_lr))})",
            )
        message = f"the optimizer updates {plural(len(have_lr), 'tensor')}, expected {len(want_lr)} ({preview(list(want_lr))})"
        frozen = [n for n in extra if n in set(have.frozen)]
        if frozen:
            message += f"; it also holds {plural(len(frozen), 'frozen tensor')} ({preview(frozen)}) that should not be updated"
        elif extra:
            message += f"; unexpected: {preview(extra)}"
        if missing:
            message += f"; missing: {preview(missing)}"
        return Verdict(False, message)
    wrong = []
    for name, lr in want_lr.items():
        got_lr = have_lr.get(name)
        if name not in have_lr:
            continue  # judged by the `params` aspect
        if (
            got_lr is None
            or lr is None
            or not math.isclose(got_lr, lr, rel_tol=params.rel_tol, abs_tol=1e-12)
        ):
            wrong.append((name, got_lr, lr))
    if not any(n in have_lr for n in want_lr):
        return Verdict(
            False,
            "the optimizer updates none of the expected parameters, so no learning rate applies to them",
        )
    if wrong:
        name, got_lr, lr = wrong[0]
        return Verdict(
            False,
            f"the learning rate for {name} is {got_lr:g}, expected {lr:g}"
            + (f" ({plural(len(wrong), 'tensor')} affected)" if len(wrong) > 1 else ""),
        )
    lrs = sorted({lr for lr in want_lr.values() if lr is not None})
    return Verdict(True, "learning rate " + ", ".join(f"{lr:g}" for lr in lrs))
