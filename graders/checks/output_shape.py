"""`output_shape`'s judge: the output's shape, and the features at `features_at`, against
the reference's (the check: contract/checks/output_shape.py).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from contract.checks.base import MAX_NAMES
from contract.checks.output_shape import TYPE, Params
from graders.checks.base import FactsBase, Observed, Verdict

__all__ = ["TYPE", "REASONS", "Facts", "judge"]  # what the judge reads

# What it judges is what the answer's own forward returned: it does not, alone, earn the
# points of the checks an empty answer passes (see the judge).
SELF_REPORTED = True

REASONS: dict[str, str] = {
    "raised": "the module's forward raised an exception on the seeded input",
    "too-many-outputs": "the output has the reference's leading dimensions but more outputs "
    "per sample (its last dimension: the classes, for a classifier)",
    "too-few-outputs": "the output has the reference's leading dimensions but fewer outputs "
    "per sample (at least one)",
    "no-outputs": "the output's last dimension is 0 where the reference's is not",
    "other-shape": "the output's rank or leading dimensions differ from the reference's",
    "cannot-learn": "one gradient step does not change the module's output: no gradient "
    "reaches its weights (a layer after them that outputs a constant, or drops everything "
    "in training mode)",
    "ignores-input": "a gradient step reaches none of the module's weights, only biases: "
    "what learns does not depend on the input",
    "batch-dependent": "what the module gives a sample depends on the other samples of its "
    "batch, in eval mode",
    "not-called": "the forward never calls the module at `features_at`",
    "features-not-tensor": "what the forward passes to the module at `features_at` is not a "
    "plain tensor",
    "features-reshaped": "the features reaching the module at `features_at` have another shape",
    "features-differ": "the features reaching the module at `features_at` differ in value "
    "(the layers before it compute something else)",
}


class Features(FactsBase):
    found: bool = Field(description="A module is at `features_at`.")
    calls: int = Field(0, ge=0, description="How often the forward called it.")
    shape: list[int] | None = Field(None, max_length=16, description="Of its first input.")


class Learns(FactsBase):
    error: str | None = Field(
        None,
        max_length=2000,
        description="Why the step could not be taken; else the outputs before and after "
        "it are the check's tensors.",
    )
    weights_reached: list[str] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        description="The trainable parameters of two dimensions or more (weights, not "
        "biases) to which the step's gradient was not zero everywhere.",
    )


class PerSample(FactsBase):
    error: str | None = Field(
        None,
        max_length=2000,
        description="Why the other batch gave no output; else the first sample's outputs in "
        "both batches are the check's tensors.",
    )


class Facts(FactsBase):
    shape: list[int] | None = Field(None, max_length=16)
    error: str | None = Field(None, max_length=2000)
    features: Features | None = None
    per_sample: PerSample | None = Field(
        None, description="With `per_sample`: the first sample run beside other companions."
    )
    learns: Learns | None = Field(
        None, description="With `learns`: the gradient step taken (None: nothing trainable)."
    )


def _learning(got: Observed) -> tuple[bool, bool] | None:
    """(the step changed the output beyond float noise, a gradient reached a weight). A
    head whose weights get none (a `Dropout(p=1)` before them, a dead layer before its
    only trainable one) learns only its bias, alike for every input."""
    learns = got.facts.learns
    before, after = got.tensors.get("before-step"), got.tensors.get("after-step")
    if learns is None or before is None or after is None or before.shape != after.shape:
        return None
    a, b = after.astype(np.float64), before.astype(np.float64)
    largest = max(np.nanmax(np.abs(a), initial=0.0), np.nanmax(np.abs(b), initial=0.0), 1.0)
    changed = np.nanmax(np.abs(a - b), initial=0.0) > 1e-6 * largest  # float32 rounding
    return bool(changed), bool(learns.weights_reached)


def _alone(got: Observed) -> bool | None:
    """Whether the first sample's output is the same beside other companions."""
    first, again = got.tensors.get("first-sample"), got.tensors.get("first-sample-again")
    if got.facts.per_sample is None or first is None or again is None:
        return None
    if first.shape != again.shape:
        return False
    scale = max(float(np.nanmax(np.abs(first.astype(np.float64)), initial=0.0)), 1.0)
    return bool(np.allclose(first, again, rtol=1e-4, atol=1e-6 * scale, equal_nan=True))


def _judge_per_sample(where: str, got: Observed, expected: Observed) -> Verdict | None:
    if _alone(expected) is not True or got.facts.per_sample is None:
        return None
    if got.facts.per_sample.error:
        return Verdict.fail(got.facts.per_sample.error, "batch-dependent")
    if _alone(got) is not True:
        return Verdict.fail(
            f"what `{where}` gives a sample depends on the other samples of its batch (the same "
            "sample beside others gets another output): it normalises or mixes over the batch "
            "even in eval mode, so one image's prediction changes with its companions",
            "batch-dependent",
        )
    return None


def _judge_learning(where: str, got: Observed, expected: Observed) -> Verdict | None:
    want = _learning(expected)
    if want is None or got.facts.learns is None:  # nothing trainable: the head's checks tell
        return None
    if got.facts.learns.error:
        return Verdict.fail(got.facts.learns.error, "cannot-learn")
    have = _learning(got)
    if have is None:
        return Verdict.fail(f"`{where}` could not be trained for one step", "unobservable")
    if want[0] and not have[0]:
        return Verdict.fail(
            f"one gradient step on `{where}`'s trainable parameters does not change its "
            "output: no gradient reaches them, so training would leave it as it is",
            "cannot-learn",
        )
    if want[1] and not have[1]:
        return Verdict.fail(
            f"a gradient step on `{where}` reaches none of its weights, only biases: what "
            "learns does not depend on the input, so it would learn the same for every input",
            "ignores-input",
        )
    return None


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
    if params.per_sample:
        failed = _judge_per_sample(where, got, expected)
        if failed is not None:
            return failed
    if params.learns:
        failed = _judge_learning(where, got, expected)
        if failed is not None:
            return failed
        if got.facts.learns is not None:
            message += ", and learns from a gradient step"
    if params.features_at:
        failed = _judge_features(params, got, expected)
        if failed is not None:
            return failed
        message += (
            f", and `{params.variable}.{params.features_at}` receives the reference's features"
        )
    return Verdict(True, message)
