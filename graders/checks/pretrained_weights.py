"""`pretrained_weights`: the model's state equals the reference's (e.g. the pre-trained checkpoint).

Catches `pretrained=False`, `pretrained=None` or `0` (random weights), weights loaded and
then re-initialised, or a state dict for another architecture.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
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

TYPE = "pretrained_weights"


class Params(CheckBase):
    type: Literal["pretrained_weights"]
    variable: str = Field(
        "model", pattern=VARIABLE_PATTERN, description="Variable holding the model."
    )
    module: str = Field(
        "", pattern=MODULE_PATH_PATTERN, description="Submodule path; empty: the whole model."
    )
    exclude: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Glob patterns of state names to ignore, e.g. 'fc.*'.",
    )


class TensorFact(FactsBase):
    shape: list[int] = Field(max_length=16)
    dtype: str = Field(max_length=32)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class Facts(FactsBase):
    state: dict[str, TensorFact] = Field(max_length=MAX_NAMES)


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    root = ti.submodule(ti.lookup(ctx.scope, params.variable), params.module, params.variable)
    state = {}
    for name, tensor in ti.named_state(root):
        if any(fnmatchcase(name, pattern) for pattern in params.exclude):
            continue
        state[name] = {
            "shape": ti.shape_of(tensor),
            "dtype": ti.dtype_name(tensor),
            "digest": ti.digest(ti.to_numpy(tensor)),
        }
    return {"state": state}


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    want: dict[str, TensorFact] = expected.facts.state
    have: dict[str, TensorFact] = got.facts.state
    missing = set(want) - set(have)
    extra = set(have) - set(want)
    if missing or extra:
        parts = [f"expected a state of {plural(len(want), 'tensor')}, found {len(have)}"]
        if missing:
            parts.append(f"missing {preview(missing)}")
        if extra:
            parts.append(f"unexpected {preview(extra)}")
        return Verdict(False, "; ".join(parts) + ": this is not the expected architecture")
    reshaped = [n for n in sorted(want) if have[n].shape != want[n].shape]
    if reshaped:
        first = reshaped[0]
        return Verdict(
            False,
            f"{plural(len(reshaped), 'tensor')} have another shape, e.g. {first} is "
            f"{have[first].shape}, expected {want[first].shape}",
        )
    differ = [n for n in sorted(want) if have[n].digest != want[n].digest]
    if differ:
        share = "all" if len(differ) == len(want) else f"{len(differ)} of {len(want)}"
        return Verdict(
            False,
            f"{share} weight tensors differ from the pre-trained weights ({preview(differ)}): "
            "the model was not loaded with the pre-trained weights, or they were changed",
        )
    return Verdict(True, f"all {len(want)} state tensors equal the pre-trained weights")
