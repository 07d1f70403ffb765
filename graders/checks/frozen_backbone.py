"""`frozen_backbone`: the head (a module path) is trainable; everything else is frozen and unchanged.

"Unchanged" means equal to the reference's backbone after the reference solution ran,
e.g. the pre-trained weights for a head-replacement task.
"""

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

TYPE = "frozen_backbone"


class Params(CheckBase):
    type: Literal["frozen_backbone"]
    variable: str = Field("model", pattern=VARIABLE_PATTERN)
    head: str = Field(
        min_length=1,
        pattern=MODULE_PATH_PATTERN,
        description="Path of the head, e.g. fc or classifier.1.",
    )


class BackboneTensor(FactsBase):
    requires_grad: bool
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class HeadTensor(FactsBase):
    requires_grad: bool
    shape: list[int] = Field(max_length=16)


class Facts(FactsBase):
    backbone: dict[str, BackboneTensor] = Field(max_length=MAX_NAMES)
    head: dict[str, HeadTensor] = Field(max_length=MAX_NAMES)


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    model = ti.require_module(ti.lookup(ctx.scope, params.variable), params.variable)
    ti.submodule(model, params.head, params.variable)  # the head must exist
    prefix = params.head + "."
    backbone, head = {}, {}
    for name, p in ti.named_parameters(model):
        if name.startswith(prefix):
            head[name] = {"requires_grad": ti.requires_grad(p), "shape": ti.shape_of(p)}
        else:
            backbone[name] = {
                "requires_grad": ti.requires_grad(p),
                "digest": ti.digest(ti.to_numpy(p)),
            }
    return {"backbone": backbone, "head": head}


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    head = f"{params.variable}.{params.head}"
    if set(have.backbone) != set(want.backbone):
        changed = set(have.backbone) ^ set(want.backbone)
        return Verdict(
            False,
            f"the backbone's layers changed ({preview(changed)}): only `{head}` should be replaced",
        )
    trainable = [n for n, t in have.backbone.items() if t.requires_grad]
    if trainable:
        return Verdict(
            False,
            f"{plural(len(trainable), 'backbone tensor')} still trainable ({preview(trainable)}): "
            "the backbone must stay frozen",
        )
    altered = [n for n in want.backbone if have.backbone[n].digest != want.backbone[n].digest]
    if altered:
        return Verdict(
            False,
            f"{plural(len(altered), 'backbone tensor')} differ from the pre-trained weights ({preview(altered)})",
        )
    if set(have.head) != set(want.head):
        return Verdict(
            False,
            f"`{head}` holds {preview(list(have.head)) or 'no parameters'}, expected {preview(list(want.head))}",
        )
    reshaped = [n for n in want.head if have.head[n].shape != want.head[n].shape]
    if reshaped:
        n = reshaped[0]
        return Verdict(False, f"{n} has shape {have.head[n].shape}, expected {want.head[n].shape}")
    frozen = [n for n, t in have.head.items() if not t.requires_grad]
    if frozen:
        return Verdict(
            False, f"the new head is frozen ({preview(frozen)}): its parameters must be trainable"
        )
    return Verdict(
        True,
        f"backbone frozen and unchanged ({plural(len(have.backbone), 'tensor')}); `{head}` trainable",
    )
