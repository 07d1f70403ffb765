"""`frozen_backbone`'s judge: the backbone unchanged and frozen, the head as the
reference's (the check: contract/checks/frozen_backbone.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field

from contract.checks.architecture import Setting
from contract.checks.architecture import short_name as short
from contract.checks.base import MAX_NAMES, plural, preview
from contract.checks.frozen_backbone import TYPE, Params
from graders.checks.architecture import setting_change
from graders.checks.base import FactsBase, Observed, Verdict

__all__ = ["TYPE", "REASONS", "Facts", "judge"]  # what the judge reads

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
REASONS: dict[str, str] = {
    # unchanged
    "layers-replaced": "a backbone layer is of another class than the reference's at its path",
    "layers-removed": "backbone layers of the reference's are not in the model",
    "layers-added": "the model holds layers outside the head that the reference's has not",
    "settings-changed": "a backbone layer's hyper-parameters (plain instance attributes) differ",
    "tensors-removed": "backbone parameters or buffers of the reference's are not in the model",
    "tensors-added": "the model holds parameters or buffers outside the head that the "
    "reference's has not",
    "tensors-retyped": "backbone tensors changed shape or dtype",
    "weights-changed": "backbone parameters differ in value from the reference's",
    "buffers-changed": "backbone buffers (such as batch-norm statistics) differ in value",
    "statistics-moved": "only batch-norm statistics differ, every backbone weight is the "
    "reference's (a forward pass in training mode updates them)",
    # frozen
    "backbone-replaced": "none of the backbone's parameters is in the model",
    "backbone-trainable": "backbone parameters the reference freezes require gradients",
    # head
    "head-missing": "no module is at the head's path",
    "head-not-replaced": "the module at the head's path is still the one the model came with",
    "head-no-parameters": "the module at the head's path holds no parameters",
    "head-shapes": "the head's tensors have other shapes than the reference head's",
    "head-lacks-tensors": "the head holds only some of the reference head's tensors (by "
    "shape) and nothing else",
    "head-no-bias": "every tensor the head lacks (by shape) is a bias of the reference's head",
    "head-lacks-classes": "the head does not contain the classes `contains` lists, in order",
    "head-frozen": "every tensor of the new head is frozen",
    "head-partly-frozen": "some tensors of the new head are frozen",
}


class Layer(FactsBase):
    class_name: str = Field(max_length=300)
    settings: dict[str, Setting] = Field(max_length=64)


class BackboneTensor(FactsBase):
    kind: Literal["parameter", "buffer"]
    shape: list[int] = Field(max_length=16)
    dtype: str = Field(max_length=32)
    requires_grad: bool
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class HeadTensor(FactsBase):
    name: str = Field(max_length=1100, description="Relative to the head; for messages only.")
    shape: list[int] = Field(max_length=16)
    requires_grad: bool


class Head(FactsBase):
    class_name: str = Field(max_length=300)
    given: bool = Field(description="Still the module the model had there before the answer.")
    modules: list[str] = Field(max_length=MAX_NAMES, description="Classes in it, itself first.")
    tensors: list[HeadTensor] = Field(max_length=MAX_NAMES)


class Facts(FactsBase):
    head: Head | None = Field(description="None: no module at the head's path.")
    layers: dict[str, Layer] = Field(max_length=MAX_NAMES, description="Outside the head.")
    tensors: dict[str, BackboneTensor] = Field(max_length=MAX_NAMES, description="Outside it.")


def _at(params: Params, path: str) -> str:
    return f"`{params.variable}.{path}`" if path else f"`{params.variable}`"


def _roots(paths: set[str]) -> list[str]:
    """The paths whose parent is not among them: the top of each added or removed subtree."""
    return sorted(p for p in paths if p and p.rpartition(".")[0] not in paths)


def _names(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _layer_reasons(have: Facts, want: Facts) -> list[str]:
    """Every kind of change to the backbone's layers, not only those the message names."""
    common = set(want.layers) & set(have.layers)
    retyped = {p for p in common if have.layers[p].class_name != want.layers[p].class_name}
    reasons = []
    if retyped:
        reasons.append("layers-replaced")
    if set(want.layers) - set(have.layers):
        reasons.append("layers-removed")
    if set(have.layers) - set(want.layers):
        reasons.append("layers-added")
    if any(
        setting_change(have.layers[p].settings, want.layers[p].settings) for p in common - retyped
    ):
        reasons.append("settings-changed")
    return reasons


def _tensor_reasons(have: Facts, want: Facts) -> list[str]:
    """Every kind of change to the backbone's tensors; values are compared where a tensor of
    the reference's name has its shape and dtype."""
    reasons = []
    if set(want.tensors) - set(have.tensors):
        reasons.append("tensors-removed")
    if set(have.tensors) - set(want.tensors):
        reasons.append("tensors-added")
    common = [n for n in want.tensors if n in have.tensors]
    alike = [
        n
        for n in common
        if (have.tensors[n].shape, have.tensors[n].dtype)
        == (want.tensors[n].shape, want.tensors[n].dtype)
    ]
    if len(alike) < len(common):
        reasons.append("tensors-retyped")
    altered = [n for n in alike if have.tensors[n].digest != want.tensors[n].digest]
    weights = [n for n in altered if want.tensors[n].kind == "parameter"]
    buffers = [n for n in altered if want.tensors[n].kind == "buffer"]
    if weights:
        reasons.append("weights-changed")
    if buffers:
        reasons.append("buffers-changed")
        statistics = all(n.rpartition(".")[2] in STATISTICS for n in buffers)
        if statistics and not weights and len(alike) == len(want.tensors):
            reasons.append("statistics-moved")
    return reasons


def _judge_layers(params: Params, have: Facts, want: Facts) -> list[str]:
    problems = []
    common = sorted(set(want.layers) & set(have.layers))
    for p in [p for p in common if have.layers[p].class_name != want.layers[p].class_name][:2]:
        problems.append(
            f"{_at(params, p)} is a {short(have.layers[p].class_name)}, "
            f"expected a {short(want.layers[p].class_name)}"
        )
    removed = _roots(set(want.layers) - set(have.layers))
    if removed:
        gone = [f"{_at(params, p)} (a {short(want.layers[p].class_name)})" for p in removed]
        problems.append(f"{_names(gone)} {'was' if len(gone) == 1 else 'were'} removed")
    added = _roots(set(have.layers) - set(want.layers))
    if added:
        new = [f"{_at(params, p)} (a {short(have.layers[p].class_name)})" for p in added]
        problems.append(
            f"{_names(new)} {'was' if len(new) == 1 else 'were'} added, "
            "which the model you were given does not have"
        )
    for p in common:
        mine, theirs = have.layers[p], want.layers[p]
        change = mine.class_name == theirs.class_name and setting_change(
            mine.settings, theirs.settings
        )
        if change:
            problems.append(f"{_at(params, p)} {change}")
            break
    return problems


def _differ(names: list[str]) -> str:
    return "differs" if len(names) == 1 else "differ"


def _judge_unchanged(params: Params, have: Facts, want: Facts) -> Verdict:
    head = _at(params, params.head)
    reasons = _layer_reasons(have, want) + _tensor_reasons(have, want)
    problems = _judge_layers(params, have, want)
    if problems:
        return Verdict.fail(
            f"the backbone's layers changed: {'; '.join(problems)}. Only {head} is to be replaced",
            *reasons,
        )
    missing = set(want.tensors) - set(have.tensors)
    extra = set(have.tensors) - set(want.tensors)
    if missing or extra:
        parts = [f"missing {preview(missing)}"] if missing else []
        parts += [f"unexpected {preview(extra)}"] if extra else []
        return Verdict.fail(f"the backbone's tensors changed: {'; '.join(parts)}", *reasons)
    retyped = [
        n
        for n in want.tensors
        if (have.tensors[n].shape, have.tensors[n].dtype)
        != (want.tensors[n].shape, want.tensors[n].dtype)
    ]
    if retyped:
        n, mine, theirs = retyped[0], have.tensors[retyped[0]], want.tensors[retyped[0]]
        return Verdict.fail(
            f"{plural(len(retyped), 'backbone tensor')} changed shape or dtype, e.g. {n} is "
            f"{mine.dtype} {mine.shape}, expected {theirs.dtype} {theirs.shape}",
            *reasons,
        )
    altered = [n for n in want.tensors if have.tensors[n].digest != want.tensors[n].digest]
    weights = [n for n in altered if want.tensors[n].kind == "parameter"]
    buffers = [n for n in altered if want.tensors[n].kind == "buffer"]
    problems = []
    if weights:
        problems.append(
            f"{plural(len(weights), 'backbone weight tensor')} {_differ(weights)} from the "
            f"pre-trained weights ({preview(weights)})"
        )
    if buffers:
        text = (
            f"{plural(len(buffers), 'backbone buffer')} {_differ(buffers)} from the pre-trained "
            f"model's ({preview(buffers)})"
        )
        if all(n.rpartition(".")[2] in STATISTICS for n in buffers):
            text += ": the batch-norm statistics changed (a forward pass in training mode moves them, reset_running_stats() resets them)"
        problems.append(text)
    if problems:
        return Verdict.fail("; ".join(problems), *reasons)
    return Verdict(
        True,
        f"the backbone is unchanged ({plural(len(want.layers), 'layer')}, "
        f"{plural(len(want.tensors), 'tensor')})",
    )


def _judge_frozen(params: Params, have: Facts, want: Facts) -> Verdict:
    """Each of the reference backbone's parameters is found by its name, or else by its
    values (a wrapped model holds the same tensors under other names)."""
    backbone = [n for n, t in want.tensors.items() if t.kind == "parameter"]
    by_value: dict[tuple, list[str]] = {}
    for name, t in have.tensors.items():
        if t.kind == "parameter" and name not in want.tensors:
            by_value.setdefault((t.digest, tuple(t.shape)), []).append(name)
    found: dict[str, str] = {}
    for name in backbone:
        same = by_value.get((want.tensors[name].digest, tuple(want.tensors[name].shape)))
        if name in have.tensors:
            found[name] = name
        elif same:
            found[name] = same.pop(0)
    if backbone and not found:
        return Verdict.fail(
            f"none of the backbone's {plural(len(backbone), 'parameter')} is in `{params.variable}`"
            f" (e.g. {backbone[0]}): the model was replaced",
            "backbone-replaced",
        )
    trainable = [found[n] for n in backbone if n in found and have.tensors[found[n]].requires_grad]
    if trainable:
        return Verdict.fail(
            f"{plural(len(trainable), 'backbone tensor')} still trainable "
            f"({preview(trainable)}): the backbone must stay frozen",
            "backbone-trainable",
        )
    return Verdict(True, f"the backbone is frozen ({plural(len(found), 'parameter')})")


def _shapes(shapes: list[list[int]]) -> str:
    return ", ".join(str(s) for s in shapes) if shapes else "none"


def _contains_in_order(wanted: list[str], classes: list[str]) -> bool:
    found = iter(classes)
    return all(any(w in (c, short(c)) for c in found) for w in wanted)


def _only_biases(head: Head, lacking: Counter) -> bool:
    """Whether every tensor the head lacks (by shape, counted) is a bias of the reference's
    head: a tensor named `bias` there (the reference's naming, not the answer's)."""
    biases = Counter(tuple(t.shape) for t in head.tensors if t.name.rpartition(".")[2] == "bias")
    return not lacking - biases


def _judge_head(params: Params, have: Facts, want: Facts) -> Verdict:
    head = _at(params, params.head)
    assert want.head is not None, "the reference's model has no head at this path"
    if have.head is None:
        parent = params.head
        while parent and parent not in have.layers:
            parent = parent.rpartition(".")[0]
        context = ""
        if parent and parent in want.layers:
            mine, theirs = have.layers[parent].class_name, want.layers[parent].class_name
            context = f" ({_at(params, parent)} is a {short(mine)}" + (
                f", expected a {short(theirs)})" if mine != theirs else ")"
            )
        return Verdict.fail(
            f"{head} does not exist{context}: replace the layer at that path", "head-missing"
        )
    mine = [t.shape for t in have.head.tensors]
    theirs = [t.shape for t in want.head.tensors]
    if sorted(mine) != sorted(theirs):
        if have.head.given and not want.head.given:
            return Verdict.fail(
                f"{head} is still the layer the model came with (tensors of shapes "
                f"{_shapes(mine)}): assign a new layer with tensors of shapes {_shapes(theirs)}",
                "head-not-replaced",
                "head-shapes",
            )
        if not mine:
            return Verdict.fail(
                f"{head} (a {short(have.head.class_name)}) holds no parameters: expected a "
                f"trainable layer with tensors of shapes {_shapes(theirs)}",
                "head-no-parameters",
                "head-shapes",
            )
        text = f"{head} holds tensors of shapes {_shapes(mine)}, expected {_shapes(theirs)}"
        reasons = ["head-shapes"]
        lacking = Counter(map(tuple, theirs)) - Counter(map(tuple, mine))
        if not Counter(map(tuple, mine)) - Counter(map(tuple, theirs)) and lacking:
            names = [t.name for t in want.head.tensors if tuple(t.shape) in lacking]
            text += f": it has no {_names(names)} (the reference's head has)"
            reasons.append("head-lacks-tensors")
            if _only_biases(want.head, lacking):
                reasons.append("head-no-bias")
        return Verdict.fail(text, *reasons)
    if not _contains_in_order(params.contains, have.head.modules):
        return Verdict.fail(
            f"{head} should contain {' then '.join(params.contains)}; it holds "
            f"{', '.join(short(c) for c in have.head.modules)}",
            "head-lacks-classes",
        )
    frozen = [t.name for t in have.head.tensors if not t.requires_grad]
    if frozen:
        total = len(have.head.tensors)
        what = (
            f"the new head {head} is frozen"
            if len(frozen) == total
            else f"{len(frozen)} of the {total} tensors of the new head {head} are frozen"
        )
        return Verdict.fail(
            f"{what} ({preview(frozen)}: requires_grad is False): its parameters must be trainable",
            "head-frozen" if len(frozen) == total else "head-partly-frozen",
        )
    return Verdict(
        True,
        f"{head} is a new, trainable {short(have.head.class_name)} (tensors of shapes {_shapes(mine)})",
    )


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    if params.aspect == "unchanged":
        return _judge_unchanged(params, have, want)
    if params.aspect == "frozen":
        return _judge_frozen(params, have, want)
    if params.aspect == "head":
        return _judge_head(params, have, want)
    verdicts = [
        _judge_unchanged(params, have, want),
        _judge_frozen(params, have, want),
        _judge_head(params, have, want),
    ]
    failed = next((v for v in verdicts if not v.passed), None)
    if failed is None:
        return Verdict(True, "; ".join(v.message for v in verdicts))
    # The first failure's message; what every failed aspect found.
    found = frozenset().union(*(v.reasons for v in verdicts if not v.passed))
    return Verdict(False, failed.message, found)
