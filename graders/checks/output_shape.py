"""`output_shape`: the shape a module gives on a seeded input of a given shape.

The module runs in eval mode without gradients, and its training flags are restored
afterwards, so observing does not change batch-norm statistics for later checks.

With `features_at` (e.g. the head), the input that reaches that submodule during the same
forward (the features the backbone gives the head) must also equal the reference's. For
that forward only, the submodule is wrapped, where its parent holds it, in a probe that
records its input and calls it. What reaches it is a behaviour of the answer's forward:
a diagnostic beside the weight-based facts of `frozen_backbone`, never the only fact
that settles a task.
"""

from __future__ import annotations

import builtins
import math

# A private copy of the builtins: what the answer's forward rebinds does not reach the
# code that reads its results.
__builtins__ = dict(builtins.__dict__)
from typing import Any, Literal  # noqa: E402

import numpy as np  # noqa: E402
from pydantic import Field, field_validator  # noqa: E402

from graders.checks.architecture import find_module  # noqa: E402
from graders.checks.base import (  # noqa: E402
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
MAX_FEATURE_ELEMENTS = 1_000_000

REASONS: dict[str, str] = {
    "raised": "the module's forward raised an exception on the seeded input",
    "too-many-outputs": "the output has the reference's leading dimensions but more outputs "
    "per sample (its last dimension: the classes, for a classifier)",
    "too-few-outputs": "the output has the reference's leading dimensions but fewer outputs "
    "per sample (at least one)",
    "no-outputs": "the output's last dimension is 0 where the reference's is not",
    "other-shape": "the output's rank or leading dimensions differ from the reference's",
    "not-called": "the forward never calls the module at `features_at`",
    "features-not-tensor": "what the forward passes to the module at `features_at` is not a "
    "plain tensor",
    "features-reshaped": "the features reaching the module at `features_at` have another shape",
    "features-differ": "the features reaching the module at `features_at` differ in value "
    "(the layers before it compute something else)",
}

# The probe's forward, compiled into a namespace of its own: the answer's forward can reach
# the probe (it is where the submodule was), and from it only the list it appends to and
# the submodule it wraps.
_PROBE = """
def forward(self, *args, **kwargs):
    record(args)
    return call(inner, *args, **kwargs)
"""


class Params(CheckBase):
    type: Literal["output_shape"]
    variable: str = Field("model", pattern=VARIABLE_PATTERN)
    module: str = Field(
        "", pattern=MODULE_PATH_PATTERN, description="Submodule path; empty: the whole model."
    )
    input_shape: list[int] = Field(
        min_length=1, max_length=6, description="Shape of the seeded random input."
    )
    features_at: str = Field(
        "",
        pattern=MODULE_PATH_PATTERN,
        description="A submodule of the variable (e.g. the head) whose input during this "
        "forward must equal the reference's.",
    )
    rtol: float = Field(1e-3, ge=0, le=1, description="Tolerance of the features' comparison.")
    atol: float = Field(1e-4, ge=0, le=1)

    @field_validator("input_shape")
    @classmethod
    def _bounded(cls, shape: list[int]) -> list[int]:
        if any(n < 1 for n in shape) or math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise ValueError(
                f"every dimension must be >= 1 and the input at most {MAX_INPUT_ELEMENTS:,} elements"
            )
        return shape


class Features(FactsBase):
    found: bool = Field(description="A module is at `features_at`.")
    calls: int = Field(0, ge=0, description="How often the forward called it.")
    shape: list[int] | None = Field(None, max_length=16, description="Of its first input.")


class Facts(FactsBase):
    shape: list[int] | None = Field(None, max_length=16)
    error: str | None = Field(None, max_length=2000)
    features: Features | None = None


def _probe(ti: Any, target: Any, box: list) -> Any:
    """A module of the grader's that records its input in box and calls target with it."""
    space: dict = {"__builtins__": {}, "record": box.append, "call": ti._module_call}
    space["inner"] = target
    exec(compile(_PROBE, "<probe>", "exec"), space)
    probe = type("FeatureProbe", (ti._Module,), {"forward": space["forward"]})()
    probe._modules["inner"] = target  # so that eval mode and the hook checks reach it
    return probe


def _holder(ti: Any, model: Any, path: str, what: str) -> tuple[Any, str, Any] | None:
    """(the dict of submodules that holds the module at path, its key there, the module)."""
    parent_path, _, name = path.rpartition(".")
    parent = find_module(ti, model, parent_path, what)
    target = None if parent is None else find_module(ti, parent, name, what)
    if target is None:
        return None
    # find_module read the parent's submodules: an exact dict, keyed by exact strings.
    return ti._field(ti._fields_of(parent, what), "_modules"), name, target


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    where = params.variable + (f".{params.module}" if params.module else "")
    model = ti.lookup(ctx.scope, params.variable)
    module = ti.submodule(model, params.module, params.variable)
    x = ti.seeded_input(params.input_shape, ctx.seed)
    holder, box, features = None, [], None
    if params.features_at:
        holder = _holder(ti, model, params.features_at, params.variable)
        features = {"found": holder is not None}
    if holder is not None:
        children, name, target = holder
        dict.__setitem__(children, name, _probe(ti, target, box))
    try:
        try:
            out = ti.forward(module, x)
        finally:
            if holder is not None:
                dict.__setitem__(children, name, target)
    except ti.AnswerRaised as exc:  # the student's module failing on the input is a fact
        return {
            "error": f"`{where}` raised {exc.kind} on an input of shape {params.input_shape}: {exc.text}"[
                :2000
            ]
        }
    facts: dict = {"shape": ti.shape_of(out)}
    if features is not None:
        if holder is not None:
            features |= _read_features(ctx, params, box)
        facts["features"] = features
    return facts


def _read_features(ctx, params: Params, box: list) -> dict:
    """How often the hook ran, and the first input it saw (exported as a tensor)."""
    ti = ctx.ti
    calls = len(box)
    first = box[0] if calls else None
    if type(first) is not tuple or len(first) == 0:
        return {"calls": calls}
    try:
        shape = ti.shape_of(first[0])
    except ObservationError:  # not a plain tensor
        return {"calls": calls}
    if ti.numel(first[0]) > MAX_FEATURE_ELEMENTS:
        raise ObservationError(
            f"the input reaching `{params.variable}.{params.features_at}` has more than "
            f"{MAX_FEATURE_ELEMENTS:,} elements: compare the features at a smaller module"
        )
    ctx.add_tensor("features", ti.to_numpy(first[0]).astype(np.float32))
    return {"calls": calls, "shape": shape}


def _judge_features(params: Params, got: Observed, expected: Observed) -> Verdict | None:
    target = f"`{params.variable}.{params.features_at}`"
    have, want = got.facts.features, expected.facts.features
    assert want is not None and want.shape is not None, "the reference's features were not read"
    if have is None or not have.found:
        return Verdict.fail(f"{target} does not exist, so no features reach it", "missing")
    if have.calls == 0:
        return Verdict.fail(
            f"the model's forward never calls {target}: the features do not reach it",
            "not-called",
        )
    if have.shape is None:
        return Verdict.fail(
            f"what the model's forward passes to {target} is not a tensor", "features-not-tensor"
        )
    if have.shape != want.shape:
        return Verdict.fail(
            f"the features reaching {target} have shape {have.shape}, expected {want.shape}: "
            "the layers before it changed",
            "features-reshaped",
        )
    mine, theirs = got.tensors.get("features"), expected.tensors.get("features")
    if mine is None or theirs is None or mine.shape != theirs.shape:
        return Verdict.fail(f"the features reaching {target} could not be compared", "unobservable")
    if not np.allclose(mine, theirs, rtol=params.rtol, atol=params.atol, equal_nan=True):
        diff = float(np.nanmax(np.abs(mine.astype(np.float64) - theirs)))
        return Verdict.fail(
            f"the features reaching {target} differ from the reference's (largest "
            f"difference {diff:.3g}): the layers before it compute something else",
            "features-differ",
        )
    return None


def _shape_reason(have: list[int] | None, want: list[int] | None) -> str:
    """How the output's shape differs: in the outputs per sample (its last dimension), or else."""
    if not have or not want or len(have) != len(want) or have[:-1] != want[:-1]:
        return "other-shape"
    if have[-1] == 0:
        return "no-outputs"
    return "too-many-outputs" if have[-1] > want[-1] else "too-few-outputs"


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    where = params.variable + (f".{params.module}" if params.module else "")
    if got.facts.error:
        return Verdict.fail(got.facts.error, "raised")
    want = expected.facts.shape
    if got.facts.shape != want:
        # What reached the head is a fact of the same forward, whatever the output's shape.
        read = expected.facts.features is not None and expected.facts.features.shape is not None
        features = _judge_features(params, got, expected) if params.features_at and read else None
        return Verdict.fail(
            f"`{where}` gives an output of shape {got.facts.shape} on an input of shape "
            f"{params.input_shape}, expected {want}",
            _shape_reason(got.facts.shape, want),
            *(features.reasons if features is not None else ()),
        )
    message = f"`{where}` gives shape {want} on an input of shape {params.input_shape}"
    if params.features_at:
        failed = _judge_features(params, got, expected)
        if failed is not None:
            return failed
        message += (
            f", and `{params.variable}.{params.features_at}` receives the reference's features"
        )
    return Verdict(True, message)
