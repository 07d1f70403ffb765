"""`training_loop`'s judge: the event log, the loss and the weights after the epoch against
one correct epoch's (the check: contract/checks/training_loop.py).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Annotated

import numpy as np
from pydantic import Field

from contract.checks.architecture import Setting
from contract.checks.base import MAX_NAMES, plural, preview
from contract.checks.training_loop import BUFFER, MAX_BATCHES, MAX_EVENTS, START, TYPE, Params
from graders.checks.architecture import setting_change
from graders.checks.base import FactsBase, Observed, Verdict

__all__ = ["TYPE", "REASONS", "Facts", "judge", "losses"]  # what the judge reads

BACKWARD, STEP = "wW", "se"
MOVED_LOW, MOVED_HIGH = 0.9, 1.1  # how far the parameters moved, as a correct epoch's share
# The least a loop's weights must move the loss (a share of one correct epoch's fall) for
# its record (batches, order) to count, and how closely their movement must follow (or
# oppose) a correct epoch's: the cosine between the compared heads' changes. Weights moved
# at random are orthogonal to it (|cosine| about 1/sqrt(size): 0.014 for a 512-to-10 head);
# a loop that trains, however wrongly (gradients accumulated, a step twice, one batch
# only, gradients clipped, another loss, gradient ascent), follows it by 0.28 and more, in
# eval mode by 0.19; a head shrunk or zeroed (which lowers the loss on random labels)
# follows it by 0.09. A loss that fell counts only for weights that follow it too.
EFFECT_SHARE = 0.001
DIRECTION_MIN = 0.15

# What a failing verdict found (mistake triggers name them as `check-name:code`).
REASONS: dict[str, str] = {
    # batches and order: the event log
    "optimizer-replaced": "`optimizer` is another object than the optimizer the task gave",
    "model-replaced": "`model` is another object than the model the task gave",
    "no-batch": "no batch was taken from the data loader",
    "loader-unused": "optimizer.step() ran, but no batch was taken from the given data loader",
    "backward-raised": "loss.backward() was called but raised, so no gradients were computed",
    "no-gradients-reached": "backward() left no gradients on any of the optimizer's parameters, "
    "so the step had none to apply",
    "optimizer-not-model": "the optimizer holds parameters that are no longer the model's (a "
    "layer was replaced after the optimizer was made): the gradients went to the new layer",
    "no-training": "batches were taken, but neither backward() nor step() ran after any of them",
    "no-step": "backward() ran, but optimizer.step() never did",
    "no-backward": "in an iteration, optimizer.step() ran without a backward() before or after it",
    "step-before-backward": "in an iteration, optimizer.step() ran before loss.backward()",
    "backward-repeated": "in an iteration, backward() ran more than once before optimizer.step()",
    "step-repeated": "in an iteration, optimizer.step() ran more than once on one batch",
    "stale-gradients": "backward() ran while gradients of an earlier backward() were still "
    "there (not cleared since), so they accumulated",
    "gradients-cleared": "the gradients were cleared between backward() and optimizer.step(), "
    "so the step had none to apply",
    "none-trained": "no batch was followed by both backward() and optimizer.step()",
    "batches-skipped": "some batches of the epoch never fed a backward() and a step()",
    "batches-repeated": "one or more batches fed more than one backward() and step()",
    "batch-reused": "one batch, taken once from the data loader, fed backward() and step() "
    "again and again",
    "every-batch-repeated": "every batch fed the same number (more than one) of backward() and "
    "step(): more than one epoch",
    "iterator-restarted": "the data loader was iterated afresh during the epoch and its first "
    "batch trained again, while not every batch trained as often",
    "no-effect": "the record of the loop looks right, but the weights after it do not bear it "
    "out: they compute (almost) what they computed before (the loss on the epoch's data moved "
    f"by less than {EFFECT_SHARE:.1%} of one correct epoch's fall), or they did not move the "
    "way training moves them (their change is unrelated to a correct epoch's; where that "
    "cannot be compared, the loss did not fall)",
    "record-forged": "the record of the loop shows optimizer steps with gradients that did not "
    "write (or, at a learning rate above zero, move) the optimizer's parameters: the answer "
    "wrote the grader's record",
    # loss_decrease
    "loss-not-decreased": "the loss on the epoch's data did not fall (it stayed or rose)",
    "loss-decreased-too-little": "the loss fell by less than the task's share of one correct "
    "epoch's fall",
    "diverged": "the loss after the epoch is not finite",
    "not-trained": "the loss fell, but the weights did not move as training on the epoch's "
    "batches moves them (their change is unrelated to a correct epoch's): as when a head is "
    "shrunk or zeroed",
    # final_weights
    "layers-changed": "the model's parameters or buffers are not the ones it had (added, "
    "removed or reshaped)",
    "layers-altered": "a layer after the epoch is of another class, or has other settings "
    "(stride, eps, ...) or another dtype, than one correct epoch leaves",
    "trainable-changed": "the parameters that are trainable after the epoch are not those of "
    "one correct epoch (a trained layer frozen, a frozen one unfrozen)",
    "weights-differ": "the parameters after the epoch differ from one correct epoch's",
    "statistics-differ": "the parameters equal one correct epoch's, the running statistics "
    "(buffers) do not",
    "statistics-unchanged": "the running statistics did not change during the epoch, where a "
    "correct epoch moves them",
    "trained-in-eval-mode": "backward() ran during the epoch but the running statistics did not "
    "move: the forward passes ran in eval mode",
    "not-moved": "the optimizer's parameters did not change at all during the epoch",
    "moved-too-far": f"the optimizer's parameters moved more than {MOVED_HIGH:g} times as far "
    "as in one correct epoch",
    "moved-too-little": f"the optimizer's parameters moved less than {MOVED_LOW:g} times as far "
    "as in one correct epoch",
    "hyper-changed": "the optimizer's hyper-parameters (lr, momentum, ...) after the epoch "
    "differ from a correct epoch's",
}


class Decisive(FactsBase):
    """The task's final-weights comparison (the strictest, if several checks make one)."""

    heads: list[str] = Field(max_length=64)
    rtol: float = Field(ge=0, le=1)
    atol: float = Field(ge=0, le=1)


Event = Annotated[str, Field(pattern=r"^(b[0-9]{1,9}|[wWsern])$")]
Summary = Annotated[list[float], Field(min_length=4, max_length=4)]


class Facts(FactsBase):
    batches_total: int = Field(ge=0)
    events: list[Event] = Field(
        max_length=MAX_EVENTS,
        description="b<i>: batch i of an iterator (i restarts for each one); w/W: backward "
        "on clean/stale gradients; r: that backward raised; n: it returned leaving none of the "
        "optimizer's parameters with gradients; s/e: step with gradients to apply/with none.",
    )
    losses: list[float | None] = Field(
        default_factory=list,
        max_length=MAX_BATCHES,
        description="The loss each backward() of the epoch started from, in order (None where "
        "it could not be read); shown beside a correct run's, never judged. Facts stored "
        "before it was recorded have none.",
    )
    loss_before: float | None
    loss_after: float | None
    loss_error: str | None = Field(max_length=1000, description="Why loss_after is missing.")
    parameters: dict[str, Summary] = Field(
        max_length=MAX_NAMES,
        description="Sum, abs sum, square sum and a sum weighted by position per parameter.",
    )
    buffers: dict[str, Summary] = Field(max_length=MAX_NAMES, description="The same per buffer.")
    buffers_moved: int = Field(ge=0, description="How many buffers changed during the epoch.")
    unchanged: list[str] | None = Field(
        None,
        max_length=MAX_NAMES,
        description="The parameters and buffers the epoch left bit for bit as they were "
        "(facts stored before it was recorded have none).",
    )
    moved: float | None = Field(
        ge=0,
        description="How far (L2) the optimizer's parameters moved during the epoch; None when "
        "one could not be read or the distance is not finite (weights gone to NaN or inf).",
    )
    parameter_writes: int | None = Field(
        ge=0,
        description="How many in-place writes the optimizer's parameters took during the "
        "epoch (their version counters); None when one could not be read.",
    )
    hyper: list[dict[str, float]] = Field(
        max_length=64, description="The optimizer's numeric hyper-parameters, per param group."
    )
    optimizer_replaced: bool
    hooked: str | None = Field(
        None,
        max_length=1000,
        description="What the model holds after the epoch that runs whenever it is used (a "
        "hook, a call set on an instance): the message that names it.",
    )
    foreign_parameters: int = Field(
        0,
        ge=0,
        description="How many of the optimizer's parameters are not the model's after "
        "the epoch (a layer replaced after the optimizer was made).",
    )
    decisive: Decisive | None = Field(
        description="What final_weights compares; its head values are this check's tensors."
    )
    # The model beyond its values after the epoch (facts stored before these have none).
    modules: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_NAMES, description="Module path to class name."
    )
    settings: dict[str, dict[str, Setting]] = Field(
        default_factory=dict, max_length=MAX_NAMES, description="Module path to its settings."
    )
    dtypes: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_NAMES, description="State tensor name to dtype."
    )
    trainable: list[str] | None = Field(
        None, max_length=MAX_NAMES, description="The parameters that require gradients."
    )


def losses(facts: Facts) -> list[float | None]:
    """The loss per iteration for display: each value not finite is None. No verdict reads it."""
    return [v if v is not None and math.isfinite(v) else None for v in facts.losses]


def _segments(events: list[str]) -> list[tuple[int, list[str]]]:
    """Each batch handed out, with the events until the next one; earlier events are dropped."""
    out: list[tuple[int, list[str]]] = []
    for e in events:
        if e.startswith("b"):
            out.append((int(e[1:]), []))
        elif out:
            out[-1][1].append(e)
    return out


def _has(ev: list[str], kinds: str) -> bool:
    return any(e in kinds for e in ev)


def _trained(ev: list[str]) -> bool:
    """Whether `ev` holds a backward and, after it, a step."""
    first = next((k for k, e in enumerate(ev) if e in STEP), None)
    return first is not None and _has(ev[:first], BACKWARD)


def _units(ev: list[str]) -> list[list[str]]:
    """A batch's events, split where a backward follows a complete backward-then-step: the
    same batch trained again (one unit per iteration on it)."""
    units: list[list[str]] = [[]]
    for e in ev:
        if e in BACKWARD and _trained(units[-1]):
            units.append([])
        units[-1].append(e)
    return units


def _iterations(events: list[str]) -> list[tuple[int, list[str]]]:
    """(batch, events) of every iteration: a unit of a batch's events with a step."""
    return [(b, u) for b, ev in _segments(events) for u in _units(ev) if _has(u, STEP)]


def _unused_loader(params: Params, events: list[str]) -> Verdict | None:
    """When steps ran but no batch was taken from the data loader: its verdict."""
    steps = sum(e in STEP for e in events)
    if _segments(events) or not steps:
        return None
    return Verdict.fail(
        f"optimizer.step() ran {plural(steps, 'time')}, but no batch was taken from "
        f"`{params.dataloader}`: train on the batches of the data loader you were given "
        "(another DataLoader's batches are not the epoch's)",
        "loader-unused",
    )


def _replaced(params: Params) -> Verdict:
    return Verdict.fail(
        f"`{params.optimizer}` was replaced by another object, so the steps of the optimizer "
        "you were given could not be followed: train with it",
        "optimizer-replaced",
    )


def _iteration_fault(i: int, ev: list[str], foreign: int = 0) -> tuple[str, str] | None:
    """What is wrong with iteration `i` (events from its batch to the next, with a step):
    (its message, its reason), or None. `foreign`: how many of the optimizer's parameters
    are not the model's. A batch that fed several rounds of backward-then-step (each with
    its own step) is one iteration trained again, not a repeated step."""
    rounds = [u for u in _units(ev) if _has(u, STEP)]
    if len(rounds) > 1:
        for unit in rounds:
            if fault := _round_fault(i, unit, foreign):
                return fault
        return (
            f"in iteration {i}, its batch fed {len(rounds)} rounds of loss.backward() and "
            f"optimizer.step(), each in order: the same batch was trained on {len(rounds)} "
            "times; take a new batch from the loop over the data loader for each step",
            "batch-reused",
        )
    return _round_fault(i, ev, foreign)


def _round_fault(i: int, ev: list[str], foreign: int) -> tuple[str, str] | None:
    """What is wrong with one round of iteration `i` (a backward-then-step of its batch)."""
    first = next(k for k, e in enumerate(ev) if e in STEP)
    backwards = [e for e in ev[:first] if e in BACKWARD]
    if not backwards:
        if _has(ev[first:], BACKWARD):
            return (
                f"in iteration {i}, optimizer.step() ran before loss.backward()",
                "step-before-backward",
            )
        applied = (
            "there were no gradients for it to apply"
            if ev[first] == "e"
            else "it applied the gradients an earlier backward left"
        )
        return (
            f"in iteration {i}, optimizer.step() ran without loss.backward() before it: {applied}",
            "no-backward",
        )
    if len(backwards) > 1:
        return (
            f"in iteration {i}, loss.backward() ran {len(backwards)} times before "
            "optimizer.step(): one backward per batch",
            "backward-repeated",
        )
    if backwards[0] == "W":
        return (
            f"in iteration {i}, gradients from an earlier batch were still there when backward() ran: "
            "call optimizer.zero_grad() once per iteration, before loss.backward()",
            "stale-gradients",
        )
    if ev[first] == "e" and "r" in ev[:first]:
        return (
            f"in iteration {i}, loss.backward() raised, so optimizer.step() had no gradients "
            "to apply",
            "backward-raised",
        )
    if ev[first] == "e" and "n" in ev[:first]:
        if foreign:
            return (
                f"in iteration {i}, loss.backward() left no gradients on the optimizer's "
                f"parameters, so step() had nothing to apply: {plural(foreign, 'parameter')} "
                "the optimizer holds are no longer the model's (a layer replaced after the "
                "optimizer was made); the gradients went to the model's new parameters, which "
                "the optimizer does not hold",
                "optimizer-not-model",
            )
        return (
            f"in iteration {i}, loss.backward() left no gradients on the optimizer's "
            "parameters, so step() had nothing to apply",
            "no-gradients-reached",
        )
    if ev[first] == "e":
        return (
            f"in iteration {i}, the gradients were cleared after loss.backward() and before "
            "optimizer.step(), so step() had nothing to apply: call optimizer.zero_grad() "
            "before loss.backward() (or after step()), never between them",
            "gradients-cleared",
        )
    steps = sum(e in STEP for e in ev)
    if steps > 1:
        return (
            f"in iteration {i}, optimizer.step() ran {steps} times on one batch: one step per batch",
            "step-repeated",
        )
    return None


def _judge_order(params: Params, have: Facts) -> Verdict:
    if have.optimizer_replaced:
        return _replaced(params)
    unused = _unused_loader(params, have.events)
    if unused is not None:
        return unused
    segments = _segments(have.events)
    iterations = [ev for _, ev in segments if _has(ev, STEP)]
    if not iterations:
        if not segments:
            return Verdict.fail(
                "no batch was taken from the data loader, so no training step ran", "no-batch"
            )
        after = [e for _, ev in segments for e in ev]
        if _has(after, BACKWARD) and sum(e in BACKWARD for e in after) == after.count("r"):
            return Verdict.fail(
                "loss.backward() was called but raised, so no gradients were computed and "
                "optimizer.step() was never called",
                "backward-raised",
            )
        if any(_has(ev, BACKWARD) for _, ev in segments):
            return Verdict.fail(
                "loss.backward() ran but optimizer.step() was never called: the gradients were "
                "computed and never applied to the weights",
                "no-step",
            )
        return Verdict.fail(
            f"neither loss.backward() nor optimizer.step() was called for the "
            f"{_count(len(segments))} taken from the data loader: nothing was trained",
            "no-training",
        )
    # The message names the first faulty iteration; the reasons, what every iteration shows.
    foreign = have.foreign_parameters
    faults = [
        f for i, ev in enumerate(iterations, start=1) if (f := _iteration_fault(i, ev, foreign))
    ]
    if faults:
        return Verdict.fail(faults[0][0], *{reason for _, reason in faults})
    n = len(iterations)
    where = "the one iteration" if n == 1 else f"all {n} iterations"
    return Verdict(True, f"zero_grad, backward and step in order in {where}")


def _count(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


def _numbers(batches: list[int]) -> str:
    return ("batch " if len(batches) == 1 else "batches ") + preview([str(b + 1) for b in batches])


def _judge_batches(params: Params, have: Facts) -> Verdict:
    if have.optimizer_replaced:
        return _replaced(params)
    unused = _unused_loader(params, have.events)
    if unused is not None:
        return unused
    n = have.batches_total
    segments = _segments(have.events)
    trained = Counter(b for b, ev in _iterations(have.events) if _has(ev, BACKWARD))
    reused = sorted({b for b, ev in segments if sum(_trained(u) for u in _units(ev)) > 1})
    if trained == Counter(range(n)):
        return Verdict(True, f"each of the {n} batches fed one backward and one step")
    if not trained:
        return Verdict.fail(
            f"no batch was followed by both loss.backward() and optimizer.step() "
            f"({_count(len(segments))} taken from the data loader): one epoch "
            f"trains on each of the {n} batches once",
            "none-trained",
        )
    total = sum(trained.values())
    missing = [b for b in range(n) if b not in trained]
    repeated = sorted(b for b, count in trained.items() if count > 1)
    if not repeated:
        return Verdict.fail(
            f"training consumed {total} of {n} batches: {_numbers(missing)} never fed a "
            "backward and a step; one epoch trains on every batch once",
            "batches-skipped",
        )
    counts = set(trained.values())
    if not missing and len(counts) == 1 and not reused:
        return Verdict.fail(
            f"training consumed {total} batches: each of the {n} batches fed {counts.pop()} "
            "training steps; one epoch trains on every batch once",
            "batches-repeated",
            "every-batch-repeated",
        )
    reasons = {"batches-repeated"} | ({"batches-skipped"} if missing else set())
    found = ", ".join(f"batch {b + 1} fed {trained[b]} steps" for b in repeated[:3])
    done = f"ran {total} steps on" if reused else f"consumed {total} batches but"
    message = (
        f"training {done} only {len(trained)} of the {n} distinct ones "
        f"({found}{f', {_numbers(missing)} none' if missing else ''}): one epoch trains on "
        "every batch once"
    )
    if reused:
        message += (
            f"; {_numbers(reused)} {'was' if len(reused) == 1 else 'were'} taken from the data "
            "loader once and trained on again and again: train on each batch the loop over the "
            "data loader yields, once"
        )
        reasons.add("batch-reused")
    if 0 in repeated and sum(e == "b0" for e in have.events) > 1:
        message += (
            "; each iter(dataloader) starts again from the first batch, so take the batches "
            "from one loop over the data loader"
        )
        reasons.add("iterator-restarted")
    return Verdict.fail(message, *reasons)


def _judge_loss(params: Params, have: Facts, want: Facts) -> Verdict:
    if have.loss_after is None and have.loss_error:
        return Verdict.fail(
            f"the loss after the epoch could not be measured: {have.loss_error}", "unobservable"
        )
    if (
        have.loss_before is None
        or have.loss_after is None
        or want.loss_before is None
        or want.loss_after is None
    ):
        return Verdict.fail("the loss could not be measured on the epoch's data", "unobservable")
    gained, target = have.loss_before - have.loss_after, want.loss_before - want.loss_after
    summary = (
        f"the loss on the epoch's data went from {have.loss_before:.4f} to {have.loss_after:.4f}"
    )
    if not np.isfinite(have.loss_after):
        return Verdict.fail(summary + ": training diverged", "diverged")
    if gained > 0 and gained >= params.min_decrease_ratio * target:
        return Verdict(True, summary)
    return Verdict.fail(
        summary + f"; one correct epoch brings it to {want.loss_after:.4f}",
        "loss-decreased-too-little" if gained > 0 else "loss-not-decreased",
    )


def _differ(n: int, what: str) -> str:
    return f"{plural(n, what)} {'differs' if n == 1 else 'differ'}"


def _differing(have: dict, want: dict, rtol: float, atol: float) -> list[str]:
    return [n for n in want if not np.allclose(have[n], want[n], rtol=rtol, atol=atol)]


def _causes(params: Params, have: Facts, want: Facts) -> tuple[str, set[str]]:
    """What else the facts show about weights that differ: clauses to append (the first
    three) and the reasons of every one."""
    out: list[tuple[str, str]] = []
    if have.optimizer_replaced:
        out.append(
            (f"`{params.optimizer}` was replaced by another optimizer", "optimizer-replaced")
        )
    for group, (mine, theirs) in enumerate(zip(have.hyper, want.hyper, strict=False)):
        for key in sorted(theirs):
            if key in mine and not np.isclose(mine[key], theirs[key], rtol=1e-6, atol=0):
                where = f" (param group {group + 1})" if len(want.hyper) > 1 else ""
                out.append(
                    (
                        f"the optimizer's {key}{where} is {mine[key]:g} after the epoch, where "
                        f"a correct epoch leaves it at {theirs[key]:g}",
                        "hyper-changed",
                    )
                )
    if have.moved is not None and want.moved:
        ratio = have.moved / want.moved
        if have.moved == 0:
            out.append(
                ("the optimizer's parameters did not change at all during the epoch", "not-moved")
            )
        elif not MOVED_LOW <= ratio <= MOVED_HIGH:
            out.append(
                (
                    f"the optimizer's parameters moved {ratio:.3g} times as far from their start "
                    "as in one correct epoch",
                    "moved-too-far" if ratio > MOVED_HIGH else "moved-too-little",
                )
            )
    if have.buffers_moved == 0 and want.buffers_moved > 0:
        out.append(
            (
                "the running statistics did not change during the epoch, as they do when the "
                "model trains in train mode (model.train())",
                "statistics-unchanged",
            )
        )
    reasons = {reason for _, reason in out}
    if "statistics-unchanged" in reasons and any(e in BACKWARD for e in have.events):
        # A backward follows a forward pass with gradients: forward passes ran, in eval mode.
        reasons.add("trained-in-eval-mode")
    return "".join(f"; {clause}" for clause, _ in out[:3]), reasons


def _altered(have: Facts, want: Facts) -> Verdict | None:
    """The model left otherwise than one correct epoch leaves it, beyond its values: a
    layer's class, settings or dtype, or which parameters are trainable."""
    where = {"": "the model"}
    for path in sorted(set(want.modules) & set(have.modules)):
        name = where.get(path, f"`{path}`")
        if have.modules[path] != want.modules[path]:
            return Verdict.fail(
                f"after the epoch, {name} is a {have.modules[path]}, where a correct epoch leaves "
                f"a {want.modules[path]}",
                "layers-altered",
            )
        change = setting_change(have.settings.get(path, {}), want.settings.get(path, {}))
        if change:
            return Verdict.fail(f"after the epoch, {name} {change}", "layers-altered")
    if set(want.modules) != set(have.modules):
        changed = set(want.modules) ^ set(have.modules)
        return Verdict.fail(f"the model's layers changed ({preview(changed)})", "layers-changed")
    retyped = sorted(n for n in want.dtypes if have.dtypes.get(n, want.dtypes[n]) != want.dtypes[n])
    if retyped:
        first = retyped[0]
        return Verdict.fail(
            f"after the epoch, {first} is {have.dtypes[first]}, where a correct epoch leaves "
            f"{want.dtypes[first]}"
            + (f" ({plural(len(retyped), 'tensor')} differ)" if len(retyped) > 1 else ""),
            "layers-altered",
        )
    if want.trainable is not None and have.trainable is not None:
        frozen = sorted(set(want.trainable) - set(have.trainable))
        unfrozen = sorted(set(have.trainable) - set(want.trainable))
        if frozen or unfrozen:
            parts = [f"{preview(frozen)} frozen"] if frozen else []
            parts += [f"{preview(unfrozen)} trainable"] if unfrozen else []
            return Verdict.fail(
                "after the epoch, " + " and ".join(parts) + ", unlike what a correct epoch "
                "leaves: what is computed after training must leave the model as it was trained",
                "trainable-changed",
            )
    return None


def _judge_weights(
    rtol: float, atol: float, params: Params, got: Observed, expected: Observed
) -> Verdict:
    have, want = got.facts, expected.facts
    if have.hooked and not want.hooked:
        return Verdict.fail(f"after the epoch, {have.hooked}", "tampered")
    changed = (set(have.parameters) ^ set(want.parameters)) | (
        set(have.buffers) ^ set(want.buffers)
    )
    if changed:
        return Verdict.fail(f"the model's layers changed ({preview(changed)})", "layers-changed")
    altered = _altered(have, want)
    if altered is not None:
        return altered
    touched = _touched(have, want)
    if touched is not None:
        return touched
    for name, values in expected.tensors.items():
        if name.startswith((START, BUFFER)):  # the heads before the epoch; buffers: below
            continue
        mine = got.tensors.get(name)
        if mine is None or mine.shape != values.shape:
            return Verdict.fail(
                f"{name} is missing or has another shape after the epoch", "layers-changed"
            )
        if not np.allclose(mine, values, rtol=rtol, atol=atol):
            diff = float(np.max(np.abs(mine.astype(np.float64) - values)))
            causes, reasons = _causes(params, have, want)
            return Verdict.fail(
                f"after the epoch, {name} differs from one correct epoch from the same start and batches "
                f"(largest difference {diff:.3g}){causes}",
                "weights-differ",
                *reasons,
            )
    off = _differing(have.parameters, want.parameters, rtol * 10, atol * 10)
    if off:
        causes, reasons = _causes(params, have, want)
        return Verdict.fail(
            f"after the epoch, {_differ(len(off), 'parameter')} from one correct epoch "
            f"({preview(off)}){causes}",
            "weights-differ",
            *reasons,
        )
    off = _differing(have.buffers, want.buffers, rtol * 10, atol * 10)
    off += [n for n in _differing_buffers(got, expected, rtol * 10, atol * 10) if n not in off]
    if off:
        return Verdict.fail(
            f"the parameters after the epoch equal one correct epoch's, but "
            f"{_differ(len(off), 'buffer')} ({preview(off)}): running statistics move with every forward pass in "
            "train mode, so evaluate (or measure a loss) in model.eval() mode",
            "statistics-differ",
        )
    return Verdict(True, "the weights after the epoch equal one correct epoch from the same start")


def _differing_buffers(got: Observed, expected: Observed, rtol: float, atol: float) -> list[str]:
    """The buffers a correct epoch moved whose values, element by element, the answer's
    epoch did not leave (within the tolerance). A buffer the answer left as it was exports
    none (it is then among its unchanged ones, which `_touched` and the summaries judge)."""
    off = []
    for name, values in expected.tensors.items():
        if not name.startswith(BUFFER):
            continue
        mine = got.tensors.get(name)
        if mine is not None and (
            mine.shape != values.shape or not np.allclose(mine, values, rtol=rtol, atol=atol)
        ):
            off.append(name.removeprefix(BUFFER))
    return off


def _touched(have: Facts, want: Facts) -> Verdict | None:
    """Tensors a correct epoch leaves bit for bit as they were (a frozen backbone) that the
    answer's changed, by however little: compared exactly, not within the tolerance."""
    if want.unchanged is None or have.unchanged is None:
        return None
    kept = set(have.unchanged)
    params = sorted(n for n in want.unchanged if n in want.parameters and n not in kept)
    if params:
        return Verdict.fail(
            f"the epoch changed {plural(len(params), 'parameter')} that a correct epoch leaves "
            f"exactly as they were ({preview(params)}): only what the optimizer trains may move",
            "weights-differ",
        )
    buffers = sorted(n for n in want.unchanged if n in want.buffers and n not in kept)
    if buffers:
        return Verdict.fail(
            f"the epoch changed {plural(len(buffers), 'buffer')} that a correct epoch leaves "
            f"exactly as they were ({preview(buffers)}): running statistics move with every "
            "forward pass in train mode, so evaluate in model.eval() mode",
            "statistics-differ",
        )
    return None


def _forged_record(have: Facts) -> Verdict | None:
    """When the event log is not what the loop did: its verdict. The log is written by the
    instrumentation the answer's loop calls, so the answer's code can reach it; every step
    with gradients it records is a real `optimizer.step()` only if it wrote at least one of
    the optimizer's parameters in place, which the version counters (that no code lowers)
    count, and, at a learning rate above zero, moved it."""
    steps = have.events.count("s")
    if not steps:
        return None
    if have.parameter_writes is None:
        return Verdict.fail(
            "the optimizer's parameters could not be read after the epoch, so the steps "
            "recorded could not be verified",
            "tampered",
        )
    recorded = f"the record of the loop shows {plural(steps, 'optimizer step')} with gradients"
    if steps > have.parameter_writes:
        found = f"the optimizer's parameters were written {plural(have.parameter_writes, 'time')}"
    elif have.moved == 0 and have.hyper and all(g.get("lr", 0) > 0 for g in have.hyper):
        found = "the optimizer's parameters did not move, at a learning rate above zero"
    else:
        return None
    return Verdict.fail(
        f"{recorded}, but {found}: the record was written by the answer, not by "
        "optimizer.step(), so the loop's steps cannot be judged",
        "tampered",
        "record-forged",
    )


def _without_effect(verdict: Verdict, got: Observed, expected: Observed) -> Verdict | None:
    """When a record that passes is not borne out by the weights: its verdict. The record is
    within the answer's reach (its code can write the log, call the hooks and bump the
    version counters), the weights are not: the loss they compute (by the setup's code)
    must have moved, and their change must follow (or oppose) a correct epoch's, which only
    a loop that computed gradients on the epoch's data can do; weights moved at random, or
    to infinity, beside a written record earn nothing. Where the heads' changes cannot be
    compared, the loss must have fallen."""
    have, want = got.facts, expected.facts
    if want.loss_before is None or want.loss_after is None:
        return None
    learned = want.loss_before - want.loss_after
    if learned <= 0:
        return None
    correct = f"one correct epoch takes it from {want.loss_before:.4f} to {want.loss_after:.4f}"
    if have.loss_after is None or have.loss_before is None:
        why = have.loss_error or "no batch"
        found = f"the loss after the epoch could not be measured ({why}), where {correct}"
    else:
        fell = have.loss_before - have.loss_after
        went = f"the loss on the epoch's data went from {have.loss_before:.4f} to {have.loss_after:.4f}"
        direction = _direction(got, expected)
        if not math.isfinite(fell):
            found = f"they compute no finite loss: {went}, where {correct}"
        elif abs(fell) < EFFECT_SHARE * learned:
            found = f"they compute what they did before: {went}, where {correct}"
        elif direction is None:
            if fell > 0:
                return None
            found = f"they compute a higher loss than before: {went}, where {correct}"
        elif abs(direction) >= DIRECTION_MIN:
            return None
        else:
            found = (
                f"they moved, but not as training on the epoch's batches moves them: their "
                f"change is unrelated to a correct epoch's (cosine {round(direction, 2) + 0.0:.2f}); {went}"
            )
    return Verdict.fail(
        f"{verdict.message}, but the weights after it do not bear that out: {found}",
        "no-effect",
    )


def _untrained_fall(verdict: Verdict, got: Observed, expected: Observed) -> Verdict | None:
    """When a loss that fell is not borne out by how the weights moved: its verdict. On the
    epoch's data a loss falls without training too (a head shrunk towards uniform scores);
    it counts only for heads that moved along a correct epoch's change."""
    direction = _direction(got, expected)
    if direction is None or direction >= DIRECTION_MIN:
        return None
    return Verdict.fail(
        f"{verdict.message}, but the weights did not move as training on the epoch's batches "
        f"moves them: their change is unrelated to a correct epoch's (cosine "
        f"{round(direction, 2) + 0.0:.2f}), as when a head is shrunk or zeroed",
        "not-trained",
    )


def _direction(got: Observed, expected: Observed) -> float | None:
    """The cosine between how the compared heads moved in the answer's epoch and in a
    correct one, from their values before and after; None when a run did not export them
    or a correct epoch does not move them."""
    mine, theirs = [], []
    for name, before in expected.tensors.items():
        if not name.startswith(START):
            continue
        after_name = name.removeprefix(START)
        want_after = expected.tensors.get(after_name)
        have_before, have_after = got.tensors.get(name), got.tensors.get(after_name)
        arrays = (before, want_after, have_before, have_after)
        if any(a is None or a.shape != before.shape for a in arrays):
            return None
        theirs.append((want_after.astype(np.float64) - before).ravel())
        mine.append((have_after.astype(np.float64) - have_before).ravel())
    if not theirs:
        return None
    a, b = np.concatenate(mine), np.concatenate(theirs)
    with np.errstate(all="ignore"):
        norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
        if float(np.linalg.norm(b)) == 0:
            return None
        cosine = float(np.dot(a, b)) / norms if norms else 0.0
    return cosine if math.isfinite(cosine) else 0.0


_SETTLED = {
    "batches": "every batch was trained on once: the weights after the epoch equal one correct epoch's",
    "order": "the steps trained as a correct loop's do: the weights after the epoch equal one correct epoch's",
    "loss_decrease": "the weights after the epoch equal one correct epoch's",
}


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    if params.aspect == "final_weights":
        return _judge_weights(params.rtol, params.atol, params, got, expected)
    if params.aspect in ("batches", "order") and (forged := _forged_record(have)) is not None:
        verdict = forged
    elif params.aspect == "batches":
        verdict = _judge_batches(params, have)
    elif params.aspect == "order":
        verdict = _judge_order(params, have)
    else:
        verdict = _judge_loss(params, have, want)
    if params.aspect in ("batches", "order") and verdict.passed:
        verdict = _without_effect(verdict, got, expected) or verdict
    elif verdict.passed:
        verdict = _untrained_fall(verdict, got, expected) or verdict
    # The decisive fact, as the task's final_weights check establishes it (from the reference
    # run's facts): a loop whose weights are right loses no points to its diagnostics, nor to
    # a loss its forward kept from being measured (a hook, a forward set on the instance).
    decisive = want.decisive
    if verdict.passed or decisive is None:
        return verdict
    if _judge_weights(decisive.rtol, decisive.atol, params, got, expected).passed:
        return Verdict(True, _SETTLED[params.aspect])
    return verdict
