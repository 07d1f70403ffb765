"""`optimizer`'s judge: the class, the parameters the steps change and how, against the
reference's probe (the check: contract/checks/optimizer.py).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from contract.checks.base import MAX_NAMES, plural, preview
from contract.checks.optimizer import IMPLEMENTATION, TYPE, Params
from graders.checks.base import FactsBase, Observed, Verdict

__all__ = ["TYPE", "REASONS", "Facts", "judge"]  # what the judge reads

REASONS = {
    "other-class": "the optimizer is of another class than the reference's",
    "left-out": "a parameter the reference's step changes is not changed (not held, frozen, or lr 0)",
    "extra-updated": "the step changes parameters the reference's step leaves unchanged",
    "frozen-held": "it holds frozen parameters (which never change): not only the trainable ones",
    "idle-held": "it holds trainable parameters that its step does not change",
    "foreign": "it holds tensors that are not parameters of the model",
    "held-twice": "it holds a parameter more times than the reference (each step updates it again)",
    "lr-above": "a parameter's step is larger than the reference's: a higher effective learning rate",
    "lr-below": "a parameter's step is smaller than the reference's: a lower effective learning rate",
    "lr-zero": "a parameter's step does not move it: learning rate 0",
    "ascent": "a step goes along the gradient: gradient ascent (maximize=True, or a negative lr)",
    "not-a-multiple": "a step from zero is not a multiple of the reference's (another update rule)",
    "settings": "the step depends on a parameter's value: settings such as weight_decay differ",
    "step-differs": "one step changes a parameter differently from the reference's step",
    "out-of-range": "a setting is outside the range SGD at the task's learning rate allows "
    "(momentum not in [0, 0.99], dampening not in [0, 1) or above momentum, a negative "
    "weight_decay): the steps after the first are not those of SGD at that learning rate",
}
# The settings the first step does not show (SGD's first step with momentum is plain SGD's)
# and the values they may take (torch checks some when the optimizer is built, none when a
# param group is changed later): (low, high, whether high is allowed, what else does).
RANGES = {
    # momentum m steps by about lr / (1 - m) once the gradients agree: up to 100 times lr
    "momentum": (
        0.0, 0.99, True,
        "the steps after the first average the gradients of more than a hundred steps, which "
        "multiplies the learning rate by as much",
    ),
    # dampening 1 keeps the first gradient in the momentum buffer and adds none after it
    "dampening": (0.0, 1.0, False, "the steps after the first scale the gradient by 1 - dampening"),
    "weight_decay": (0.0, math.inf, False, "each step pushes the parameters away from zero"),
}  # fmt: skip
Hyper = float | bool | None | list[float]
MULTIPLE_TOL = 1e-4  # how close a change must be to a multiple of the reference's


class Group(FactsBase):
    params: list[str] = Field(max_length=MAX_NAMES)
    hyper: dict[str, Hyper] = Field(max_length=64)


Summary = list[float]  # sum, absolute sum and sum of squares of a change


class Change(FactsBase):
    """What one step did to one tensor the optimizer holds."""

    held: int = Field(ge=1, description="How many times the optimizer holds it.")
    trainable: bool = Field(description="Requires grad in the model: the probe gave it a gradient.")
    in_model: bool
    step: Summary = Field(min_length=3, max_length=3, description="From the model's values.")
    along: float = Field(description="The step along the gradient, per unit of gradient.")
    zero: Summary = Field(min_length=3, max_length=3, description="From zero.")
    zero_along: float


class Facts(FactsBase):
    class_name: str = Field(max_length=300)
    groups: list[Group] = Field(max_length=256)
    frozen: list[str] = Field(
        default_factory=list, max_length=MAX_NAMES, description="Held but not trainable."
    )
    changes: dict[str, Change] = Field(default_factory=dict, max_length=MAX_NAMES)
    tampering: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list,
        max_length=8,
        description="What the answer attached to the optimizer (or to every optimizer) that a "
        "new one does not have: attributes of its own, hooks, state. The probe steps a new one.",
    )
    probe_error: str | None = Field(None, max_length=2000)
    probe_reason: Literal["unobservable", "tampered", "unusable"] = "unobservable"

    def lr_by_param(self) -> dict[str, float | None]:
        return {name: _lr(hyper) for name, hyper in self.hyper_by_param().items()}

    def hyper_by_param(self) -> dict[str, dict[str, Hyper]]:
        out: dict[str, dict[str, Hyper]] = {}
        for g in self.groups:
            for name in g.params:
                out.setdefault(name, g.hyper)
        return out

    def moving(self, probe: str) -> list[str]:
        """The model's parameters the probe's step changed (a NaN change counts)."""
        return [n for n, c in self.changes.items() if c.in_model and getattr(c, probe)[1] != 0]


def _lr(hyper: dict[str, Hyper]) -> float | None:
    lr = hyper.get("lr")
    return lr if isinstance(lr, float) else None


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    if want.probe_error is not None:  # the reference's step is the grader's to probe
        raise ValueError(f"the reference's optimizer could not be probed: {want.probe_error}")
    if have.tampering:  # the probe's new optimizer is not the one the answer left
        more = have.tampering[1:3]
        return Verdict.fail(
            have.tampering[0] + "".join(f"; {text}" for text in more),
            "tampered",
        )
    if params.aspect == "type":
        if have.class_name != want.class_name:
            return Verdict.fail(
                f"the optimizer is a {have.class_name}, expected a {want.class_name}", "other-class"
            )
        return Verdict(True, f"the optimizer is a {want.class_name}")
    if params.aspect == "params":
        return _judge_params(have, want)
    if params.aspect == "lr":
        if have.class_name != want.class_name:
            return _judge_lr_values(params, have, want)
        if have.probe_error is not None:
            return Verdict.fail(have.probe_error, have.probe_reason)
        return _judge_lr(params, got, expected)
    if have.probe_error is not None:
        return Verdict.fail(have.probe_error, have.probe_reason)
    verdict = _judge_update(params, got, expected)
    outside = _out_of_range(have, want)
    if outside is None:
        return verdict
    if verdict.passed:
        return Verdict.fail(outside, "out-of-range")
    return Verdict(False, f"{outside}; and {verdict.message}", verdict.reasons | {"out-of-range"})


def _out_of_range(have: Facts, want: Facts) -> str | None:
    """A setting outside what the task allows (`RANGES`), for a parameter the reference's
    optimizer holds with another value (the probe's steps may not show it: SGD's first step
    with momentum is plain SGD's, whatever its momentum and dampening)."""
    theirs = want.hyper_by_param()
    for name, mine in have.hyper_by_param().items():
        for key, (low, high, closed, effect) in RANGES.items():
            value = mine.get(key)
            if value is None or isinstance(value, list) or value == theirs.get(name, {}).get(key):
                continue
            number = float(value)
            if low <= number < high or (closed and number == high):
                continue
            if low == high:
                bounds = f"only {low:g}"
            elif high == math.inf:
                bounds = f"at least {low:g}"
            else:
                bounds = f"[{low:g}, {high:g}{']' if closed else ')'}"
            return (
                f"the optimizer's {key} for {name} is {_plain(value)}, outside what the task "
                f"allows ({bounds}): {effect}"
            )
        momentum, dampening = mine.get("momentum"), mine.get("dampening")
        if (
            isinstance(momentum, float | int)
            and isinstance(dampening, float | int)
            and 0 < momentum < dampening
        ):
            # once the gradients agree, a step is lr (1 - dampening) / (1 - momentum) times
            # the gradient: below plain SGD's lr as soon as dampening passes momentum
            return (
                f"the optimizer's dampening for {name} is {float(dampening):.9g}, above its "
                f"momentum {float(momentum):.9g}: the steps after the first are "
                f"{(1 - dampening) / (1 - momentum):.3g} times plain SGD's"
            )
    return None


def _judge_update(params: Params, got: Observed, expected: Observed) -> Verdict:
    have, want = got.facts, expected.facts
    wanted, moved = want.moving("step"), have.moving("step")
    problems: list[tuple[str, str]] = []
    for name in wanted:
        if name not in moved:
            problems.append((f"{name} does not change{_why_still(have, name)}", "left-out"))
        elif not _same(params, got, expected, name, "step"):
            size = _step_size(params, got, expected, name)
            problems.append(
                size
                if size is not None
                else (
                    _unlike(have, want, name) + _differences(have, want, name, lr=False),
                    "settings" if have.class_name == want.class_name else "other-class",
                )
            )
    problems += [
        (f"{n} changes, which the reference's step leaves unchanged", "extra-updated")
        for n in moved
        if n not in wanted
    ]
    if problems:
        more = f" ({plural(len(problems), 'tensor')} differ)" if len(problems) > 1 else ""
        return Verdict(
            False,
            f"after {_steps(params)} from the same gradients, {problems[0][0]}{more}",
            frozenset({"step-differs", *(reason for _, reason in problems)}),
        )
    return Verdict(
        True,
        f"one step from seeded gradients changes {plural(len(wanted), 'tensor')} "
        f"({preview(wanted)}) as the reference's step does",
    )


def _judge_params(have: Facts, want: Facts) -> Verdict:
    wanted = _union(want.moving("step"), want.moving("zero"))
    holds, reference_holds = _holdings(have), _holdings(want)
    if have.probe_error is None:
        moved = _union(have.moving("step"), have.moving("zero"))
    else:  # what it would update, from what it holds
        moved = [n for n, (_, trainable, _) in holds.items() if trainable]
    problems, reasons = [], set()
    missing = [n for n in wanted if n not in moved]
    if missing:
        problems.append(f"it leaves {preview(missing)} unchanged{_why_still(have, missing[0])}")
        reasons.update(_still_reason(have, n) for n in missing)
    extra = [n for n in moved if n not in wanted]
    if extra:
        problems.append(f"it also updates {preview(extra)}, which the reference leaves unchanged")
        reasons.add("extra-updated")
    idle = [n for n in holds if n not in moved and n not in reference_holds and n not in wanted]
    frozen = [n for n in idle if holds[n][2] and not holds[n][1]]
    if frozen:
        problems.append(
            f"it also holds {plural(len(frozen), 'frozen tensor')} ({preview(frozen)}) that never change: "
            "an optimizer over the trainable parameters holds only those"
        )
        reasons.add("frozen-held")
    still = [n for n in idle if holds[n][2] and holds[n][1]]
    if still:
        problems.append(f"it also holds {preview(still)}, which its step does not change")
        reasons.add("idle-held")
    foreign = [n for n in holds if not holds[n][2]]
    if foreign:
        reasons.add("foreign")
        problems.append(
            f"it holds {plural(len(foreign), 'tensor')} that {'is' if len(foreign) == 1 else 'are'} "
            "not a parameter of the model (made after the optimizer, or by another model?)"
        )
    repeats = [n for n in wanted if n in holds and holds[n][0] != reference_holds[n][0]]
    if repeats:
        times, once = holds[repeats[0]][0], reference_holds[repeats[0]][0]
        problems.append(
            f"it holds {repeats[0]} {plural(times, 'time')}, expected {plural(once, 'time')}: "
            f"each step updates it {plural(times, 'time')}"
            + (f" ({plural(len(repeats), 'tensor')} affected)" if len(repeats) > 1 else "")
        )
        reasons.add("held-twice")
    if not problems:
        return Verdict(
            True,
            f"the optimizer updates exactly {plural(len(wanted), 'tensor')} ({preview(wanted)})",
        )
    head = f"the optimizer updates {plural(len(moved), 'tensor')}"
    head += f" ({preview(moved)})" if moved else ""
    return Verdict(
        False,
        f"{head}, expected {len(wanted)} ({preview(wanted)}); " + "; ".join(problems),
        frozenset(reasons),
    )


def _holdings(facts: Facts) -> dict[str, tuple[int, bool, bool]]:
    """Each tensor the optimizer holds: how many times, whether trainable, whether the
    model's (from the probe's facts, else from the param groups)."""
    if facts.changes:
        return {n: (c.held, c.trainable, c.in_model) for n, c in facts.changes.items()}
    out: dict[str, tuple[int, bool, bool]] = {}
    for name in (n for g in facts.groups for n in g.params):
        count, _, _ = out.get(name, (0, False, False))
        in_model = not name.startswith("<tensor #")
        out[name] = (count + 1, in_model and name not in facts.frozen, in_model)
    return out


def _judge_lr(params: Params, got: Observed, expected: Observed) -> Verdict:
    have, want = got.facts, expected.facts
    wanted, moved = want.moving("zero"), have.moving("zero")
    compared = [n for n in wanted if n in moved]
    still = [
        n for n in wanted if n not in moved and n in have.changes and have.changes[n].trainable
    ]
    if not compared and not still:
        return Verdict.fail(
            "the optimizer updates none of the expected parameters, so no learning rate applies to them",
            "left-out",
        )
    wrong = [size for n in compared if (size := _step_size(params, got, expected, n)) is not None]
    others = [text for text, reason in wrong if reason == "settings"]
    wrong = [(text, reason) for text, reason in wrong if reason != "settings"]
    wrong += [
        (f"one step leaves {n} unchanged{_why_still(have, n)}", _still_reason(have, n))
        for n in still
    ]
    if wrong:
        more = f" ({plural(len(wrong), 'tensor')} affected)" if len(wrong) > 1 else ""
        return Verdict(False, wrong[0][0] + more, frozenset(reason for _, reason in wrong))
    lrs = sorted({lr for n in wanted if (lr := want.lr_by_param().get(n)) is not None})
    if others:
        return Verdict(
            True,
            "learning rate " + ", ".join(f"{lr:g}" for lr in lrs) + " as expected; another "
            "setting changes the size of the step (see the update check)",
        )
    return Verdict(
        True,
        "learning rate "
        + ", ".join(f"{lr:g}" for lr in lrs)
        + ": one step moves each parameter as far as the reference's",
    )


def _judge_lr_values(params: Params, have: Facts, want: Facts) -> Verdict:
    """Another class's step cannot be compared with the reference's: its `lr`, by value."""
    have_lr, want_lr = have.lr_by_param(), want.lr_by_param()
    note = f" (compared by value: a {have.class_name} steps differently from a {want.class_name})"
    held = [n for n in want_lr if n in have_lr]
    if not held:
        return Verdict.fail(
            "the optimizer updates none of the expected parameters, so no learning rate applies to them",
            "left-out",
        )
    for name in held:
        got_lr, lr = have_lr[name], want_lr[name]
        if got_lr is None:
            return Verdict.fail(
                f"the learning rate for {name} is not a plain number", "unobservable"
            )
        if lr is None or not math.isclose(got_lr, lr, rel_tol=params.rel_tol, abs_tol=1e-12):
            return Verdict.fail(
                f"the learning rate for {name} is {got_lr:g}, expected {lr}{note}",
                _compared(got_lr, lr),
            )
    lrs = sorted({lr for n in held if (lr := want_lr[n]) is not None})
    return Verdict(True, "learning rate " + ", ".join(f"{lr:g}" for lr in lrs) + note)


def _steps(params: Params) -> str:
    return "one step" if params.steps == 1 else f"{params.steps} steps"


def _unlike(have: Facts, want: Facts, name: str) -> str:
    """How the steps of `name` differ, when its first step from zero is the reference's."""
    mine, theirs = have.hyper_by_param().get(name, {}), want.hyper_by_param().get(name, {})
    if mine.get("weight_decay") != theirs.get("weight_decay"):
        return f"the change of {name} depends on its value, not only on its gradient"
    return f"the second step of {name} differs from the reference's: the optimizer carries a state from one step to the next"


def _union(a: list[str], b: list[str]) -> list[str]:
    return list(dict.fromkeys([*a, *b]))


def _why_still(have: Facts, name: str) -> str:
    held = _holdings(have).get(name)
    if held is None:
        return ": the optimizer does not hold it"
    if not held[1]:
        return ": it does not require grad, so it gets no gradient"
    lr = have.lr_by_param().get(name)
    return f": its step does not move it (learning rate {lr:g})" if lr is not None else ""


def _compared(got: float, want: float | None) -> str:
    if want is None:
        return "step-differs"
    if got == 0:
        return "lr-zero"
    if got < 0:
        return "ascent"
    return "lr-above" if got > want else "lr-below"


def _still_reason(have: Facts, name: str) -> str:
    held = _holdings(have).get(name)
    return "lr-zero" if held is not None and held[1] else "left-out"


def _step_size(
    params: Params, got: Observed, expected: Observed, name: str
) -> tuple[str, str] | None:
    """How the step from zero of `name` differs from the reference's, and the reason that
    names it (None: it does not differ)."""
    if _same(params, got, expected, name, "zero"):
        return None
    have, want = got.facts, expected.facts
    factor = _factor(got, expected, name)
    if factor is None:
        text = f"the step of {name} is not a multiple of the reference's"
        other = have.class_name != want.class_name
        return text + _differences(have, want, name, lr=True), (
            "other-class" if other else "not-a-multiple"
        )
    lr = want.lr_by_param().get(name)
    times, once = have.changes[name].held, want.changes[name].held
    size = abs(factor)
    if lr is not None:
        text = f"the effective learning rate for {name} is {size * lr:g}, expected {lr:g}"
    else:
        text = f"the step of {name} is {size:.3g} times the reference's"
    if factor < 0:
        maximize = have.hyper_by_param().get(name, {}).get("maximize") is True
        ascent = (
            f"the step of {name} goes along its gradient instead of against it: gradient ascent"
            + (" (maximize=True)" if maximize else "")
        )
        if math.isclose(size, 1, rel_tol=MULTIPLE_TOL):
            return ascent, "ascent"
        return f"{ascent}, and {text}", "ascent"
    if times != once and math.isclose(size, times / once, rel_tol=MULTIPLE_TOL):
        held = (
            f"it is held {plural(times, 'time')}, so each step updates it {plural(times, 'time')}"
        )
        return f"{text}: {held}", "held-twice"
    set_lr = have.lr_by_param().get(name)
    if lr is not None and set_lr is not None and math.isclose(set_lr, lr, rel_tol=1e-9):
        text = (
            f"the step of {name} is {size:.3g} times the reference's, with the learning rate "
            f"{lr:g} as expected"
        )
        return text + _differences(have, want, name, lr=False), "settings"
    return text + _differences(have, want, name, lr=False), "lr-above" if size > 1 else "lr-below"


def _differences(have: Facts, want: Facts, name: str, lr: bool) -> str:
    """The settings of the group holding `name` that differ from the reference's."""
    if have.class_name != want.class_name:
        return f": a {have.class_name} steps differently from a {want.class_name}"
    mine, theirs = have.hyper_by_param().get(name, {}), want.hyper_by_param().get(name, {})
    keys = [
        k
        for k in dict.fromkeys([*theirs, *mine])
        if k not in IMPLEMENTATION and (lr or k != "lr") and mine.get(k) != theirs.get(k)
    ]
    if not keys:
        return ""
    shown = ", ".join(
        f"{k}={_plain(mine.get(k))} (expected {_plain(theirs.get(k))})" for k in keys[:3]
    )
    return f": its settings differ: {shown}"


def _plain(value: Hyper) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    return str(value)


def _same(params: Params, got: Observed, expected: Observed, name: str, probe: str) -> bool:
    """Whether the probe changed `name` as it changed the reference's, within the tolerance:
    element-wise where both exported the change, else by its summary."""
    mine, theirs = got.tensors.get(f"{probe}/{name}"), expected.tensors.get(f"{probe}/{name}")
    if mine is not None and theirs is not None and mine.shape == theirs.shape:
        a, b = mine.astype(np.float64), theirs.astype(np.float64)
        return bool(np.linalg.norm(a - b) <= params.rel_tol * np.linalg.norm(b) + 1e-30)
    have, want = (
        getattr(got.facts.changes[name], probe),
        getattr(expected.facts.changes[name], probe),
    )
    scales = (want[1], want[1], want[2])
    return all(
        abs(h - w) <= params.rel_tol * s + 1e-30 for h, w, s in zip(have, want, scales, strict=True)
    )


def _factor(got: Observed, expected: Observed, name: str) -> float | None:
    """r where the step from zero of `name` is r times the reference's, else None."""
    mine, theirs = got.facts.changes[name], expected.facts.changes[name]
    if not theirs.zero_along or not math.isfinite(mine.zero_along):
        return None
    r = mine.zero_along / theirs.zero_along
    a, b = got.tensors.get(f"zero/{name}"), expected.tensors.get(f"zero/{name}")
    if a is not None and b is not None and a.shape == b.shape:
        a, b = a.astype(np.float64), b.astype(np.float64)
        close = np.linalg.norm(a - r * b) <= MULTIPLE_TOL * abs(r) * np.linalg.norm(b)
        return r if close else None
    h, w = mine.zero, theirs.zero
    close = (
        abs(h[0] - r * w[0]) <= MULTIPLE_TOL * abs(r) * w[1]
        and math.isclose(h[1], abs(r) * w[1], rel_tol=MULTIPLE_TOL)
        and math.isclose(h[2], r * r * w[2], rel_tol=MULTIPLE_TOL)
    )
    return r if close else None
