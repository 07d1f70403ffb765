"""`pretrained_weights`'s judge: the state's tensors against the reference's, and what
differs (the check: contract/checks/pretrained_weights.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.checks.base import MAX_NAMES, plural, preview
from contract.checks.pretrained_weights import TYPE, Params
from graders.checks.base import FactsBase, Observed, Verdict

__all__ = ["TYPE", "REASONS", "Facts", "judge"]  # what the judge reads

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
REASONS: dict[str, str] = {
    "tensors-missing": "a tensor of the reference's state is not in the answer's (another "
    "architecture, or layers removed or replaced)",
    "tensors-added": "the answer's state holds tensors the reference's has not",
    "tensors-reshaped": "tensors of the same names have other shapes (e.g. another head size)",
    "tensors-retyped": "tensors of the same names have another dtype (e.g. the model cast to half)",
    "all-weights-differ": "every parameter differs from the reference's, in a state of the "
    "same names (the weights were not loaded, or all were changed)",
    "some-weights-differ": "some parameters differ from the reference's, the others are equal "
    "(layers re-initialised or changed after loading)",
    "buffers-differ": "persistent buffers (such as batch-norm statistics) differ",
    "statistics-moved": "only batch-norm statistics differ, every parameter is equal (a "
    "forward pass in training mode updates them)",
}


class TensorFact(FactsBase):
    kind: Literal["parameter", "buffer"] = "parameter"
    shape: list[int] = Field(max_length=16)
    dtype: str = Field(max_length=32)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class Facts(FactsBase):
    state: dict[str, TensorFact] = Field(max_length=MAX_NAMES)


def _reasons(have: dict[str, TensorFact], want: dict[str, TensorFact]) -> list[str]:
    """What differs. Values are compared only in a state of the reference's names (in another
    architecture, tensors that share a name are not the same weights), tensor by tensor
    where the shapes and dtypes agree."""
    reasons = []
    if set(want) - set(have):
        reasons.append("tensors-missing")
    if set(have) - set(want):
        reasons.append("tensors-added")
    if any(have[n].shape != want[n].shape for n in want if n in have):
        reasons.append("tensors-reshaped")
    if any(have[n].dtype != want[n].dtype for n in want if n in have):
        reasons.append("tensors-retyped")
    if set(want) != set(have):
        return reasons
    alike = [n for n in want if (have[n].shape, have[n].dtype) == (want[n].shape, want[n].dtype)]
    weights = [n for n in alike if want[n].kind == "parameter"]
    changed = [n for n in weights if have[n].digest != want[n].digest]
    buffers = [n for n in alike if want[n].kind == "buffer" and have[n].digest != want[n].digest]
    if changed:
        reasons.append(
            "all-weights-differ" if len(changed) == len(weights) else "some-weights-differ"
        )
    if buffers:
        reasons.append("buffers-differ")
        statistics = all(n.rpartition(".")[2] in STATISTICS for n in buffers)
        if statistics and not changed and len(alike) == len(want):
            reasons.append("statistics-moved")
    return reasons


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    want: dict[str, TensorFact] = expected.facts.state
    have: dict[str, TensorFact] = got.facts.state
    reasons = _reasons(have, want)
    missing = set(want) - set(have)
    extra = set(have) - set(want)
    if missing or extra:
        parts = [f"expected a state of {plural(len(want), 'tensor')}, found {len(have)}"]
        if missing:
            parts.append(f"missing {preview(missing)}")
        if extra:
            parts.append(f"unexpected {preview(extra)}")
        return Verdict.fail("; ".join(parts) + ": this is not the expected architecture", *reasons)
    reshaped = [n for n in sorted(want) if have[n].shape != want[n].shape]
    if reshaped:
        first = reshaped[0]
        return Verdict.fail(
            f"{plural(len(reshaped), 'tensor')} have another shape, e.g. {first} is "
            f"{have[first].shape}, expected {want[first].shape}",
            *reasons,
        )
    retyped = [n for n in sorted(want) if have[n].dtype != want[n].dtype]
    if retyped:
        first = retyped[0]
        return Verdict.fail(
            f"{plural(len(retyped), 'tensor')} have another dtype, e.g. {first} is "
            f"{have[first].dtype}, expected {want[first].dtype}: the model no longer computes "
            "with the task's data as the pre-trained one does",
            *reasons,
        )
    differ = [n for n in sorted(want) if have[n].digest != want[n].digest]
    if differ and all(want[n].kind == "buffer" for n in differ):
        # Every parameter is the reference's: the weights were loaded; buffers moved.
        text = (
            f"{len(differ)} of {len(want)} state tensors differ from the pre-trained model's, "
            f"all of them buffers ({preview(differ)}); every weight equals the pre-trained one"
        )
        if all(n.rpartition(".")[2] in STATISTICS for n in differ):
            text += ": the batch-norm statistics changed (a forward pass in training mode moves them, reset_running_stats() resets them)"
        return Verdict.fail(text, *reasons)
    if differ:
        share = "all" if len(differ) == len(want) else f"{len(differ)} of {len(want)}"
        return Verdict.fail(
            f"{share} weight tensors differ from the pre-trained weights ({preview(differ)}): "
            "the model was not loaded with the pre-trained weights, or they were changed",
            *reasons,
        )
    return Verdict(True, f"all {len(want)} state tensors equal the pre-trained weights")
