"""The training loop's judge on hand-made facts. An iteration is a batch followed by a
backward and a step; batches taken without one (a peek, an evaluation pass) are neither
iterations nor faults. The final weights decide: a diagnostic aspect passes whenever they
equal a correct epoch's (as the reference run's facts say the task compares them), and
otherwise names the mistake its facts show.

The observer that produces these facts is run at the end on a small in-process model."""

from __future__ import annotations

import gc
import math
import re

import numpy as np
import pytest
from pydantic import ValidationError

from contract.checks.base import ObservationError
from graders.checks import training_loop
from graders.checks.base import COMMON_REASONS, REASON_PATTERN, Observed
from graders.checks.training_loop import Facts, Params
from sandboxed import observe


def batches(*indices: int, then: tuple[str, ...] = ("w", "s")) -> list[str]:
    """Events of a loop that takes the given batches, each followed by `then`."""
    return [e for b in indices for e in (f"b{b}", *then)]


EPOCH = batches(*range(8))
HEAD = {
    "fc.weight": np.linspace(-0.5, 0.5, 20, dtype=np.float32).reshape(2, 10),
    "fc.bias": np.array([0.1, -0.2], dtype=np.float32),
}
OTHER_HEAD = {name: values + np.float32(0.05) for name, values in HEAD.items()}


def facts(**changes) -> dict:
    """The facts of one correct epoch (the reference's); keyword arguments replace fields."""
    base = {
        "batches_total": 8,
        "events": EPOCH,
        "loss_before": 2.8146,
        "loss_after": 2.3321,
        "loss_error": None,
        "parameters": {
            "conv.weight": [1.5, 20.0, 3.0, 0.25],
            "fc.weight": [0.0, 5.26, 1.84, 0.25],
            "fc.bias": [-0.1, 0.3, 0.05, 0.25],
        },
        "buffers": {
            "bn.running_mean": [0.2, 0.4, 0.06, 0.25],
            "bn.num_batches_tracked": [8, 8, 64, 0.25],
        },
        "buffers_moved": 2,
        "moved": 0.5,
        "hyper": [{"lr": 0.01, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0}],
        "optimizer_replaced": False,
        "decisive": {"heads": ["fc"], "rtol": 1e-4, "atol": 1e-5},
    }
    out = base | changes
    # Every real step with gradients writes the head's two parameters in place.
    out.setdefault("parameter_writes", 2 * out["events"].count("s"))
    return out


def wrong_weights(**changes) -> dict:
    """An answer's facts whose head and summaries differ from a correct epoch's."""
    parameters = facts()["parameters"] | {"fc.weight": [0.0, 6.3, 2.6, 0.25]}
    return facts(parameters=parameters, moved=1.2) | changes


def judge(
    aspect: str,
    have: dict,
    tensors: dict | None = None,
    want: dict | None = None,
    want_tensors: dict | None = None,
    **params,
):
    check = Params(name="c", type="training_loop", aspect=aspect, **params)
    return training_loop.judge(
        check,
        Observed(Facts.model_validate(have), OTHER_HEAD if tensors is None else tensors),
        Observed(
            Facts.model_validate(want or facts()), HEAD if want_tensors is None else want_tensors
        ),
    )


# --- batches: which distinct batches fed a backward and a step -----------------------


@pytest.mark.parametrize(
    ("events", "passed", "fragment"),
    [
        (EPOCH, True, "each of the 8 batches fed one backward and one step"),
        (["b0", *EPOCH], True, "each of the 8 batches"),  # a peek before the loop
        (EPOCH + [f"b{i}" for i in range(8)], True, "each of the 8 batches"),  # an eval pass
        (EPOCH + batches(0, then=("w",)), True, "each of the 8 batches"),  # a backward, no step
        (batches(*range(8), then=("e", "w")), True, "each of the 8 batches"),  # order is `order`'s
        (["w", "s", *EPOCH], True, "each of the 8 batches"),  # before any batch: not counted
        (batches(0), False, "training consumed 1 of 8 batches: batches 2, 3, 4, 5, ... (+3 more) never fed"),
        (batches(0, 2, 4, 6), False, "consumed 4 of 8 batches: batches 2, 4, 6, 8 never fed a backward"),
        (EPOCH + EPOCH, False, "consumed 16 batches: each of the 8 batches fed 2 training steps"),
        (batches(*[0] * 8), False, "only 1 of the 8 distinct ones (batch 1 fed 8 steps, batches 2, 3"),
        (batches(*range(8), then=("w",)), False, "no batch was followed by both loss.backward() and optimizer.step() (8 batches taken"),
        ([f"b{i}" for i in range(8)], False, "no batch was followed by both"),
        ([], False, "(0 batches taken from the data loader)"),
    ],
    ids=[
        "epoch", "peek-before", "eval-pass-after", "backward-only-after", "wrong-order-covers",
        "events-before-any-batch", "one-batch", "half", "two-epochs", "first-batch-8-times",
        "no-step", "no-training", "nothing-taken",
    ],
)  # fmt: skip
def test_batches_counts_the_batches_that_fed_a_backward_and_a_step(events, passed, fragment):
    verdict = judge("batches", wrong_weights(events=events))
    assert verdict.passed is passed and fragment in verdict.message, verdict.message


def test_a_fresh_iterator_for_every_step_is_named():
    # `for x, y in dataloader: x, y = next(iter(dataloader))`: the loop's own batch is not used.
    events = [e for i in range(8) for e in (f"b{i}", "b0", "w", "s")]
    verdict = judge("batches", wrong_weights(events=events))
    assert not verdict.passed
    assert "batch 1 fed 8 steps" in verdict.message
    assert "each iter(dataloader) starts again from the first batch" in verdict.message


def test_a_replaced_optimizer_is_named_by_the_aspects_that_follow_its_steps():
    for aspect in ("batches", "order"):
        verdict = judge(
            aspect, wrong_weights(events=batches(*range(8), then=("w",)), optimizer_replaced=True)
        )
        assert (
            not verdict.passed and "`optimizer` was replaced by another object" in verdict.message
        )


# --- order: within each iteration --------------------------------------------------


@pytest.mark.parametrize(
    ("events", "passed", "fragment"),
    [
        (EPOCH, True, "zero_grad, backward and step in order in all 8 iterations"),
        (["b0", *EPOCH, *[f"b{i}" for i in range(8)]], True, "in all 8 iterations"),  # peek, eval pass
        ([e for i in range(8) for e in (f"b{i}", "b0", "w", "s")], True, "in all 8 iterations"),  # a peek inside
        (EPOCH + ["b0", "w"], True, "in all 8 iterations"),  # gradients computed after the epoch
        (batches(0), True, "in order in the one iteration"),
        (batches(0) + batches(*range(1, 8), then=("W", "s")), False, "in iteration 2, gradients from an earlier batch were still there"),
        (batches(*range(8), then=("e", "w")), False, "in iteration 1, optimizer.step() ran before loss.backward()"),
        (batches(*range(8), then=("w", "e")), False, "in iteration 1, the gradients were cleared after loss.backward() and before optimizer.step(), so step() had nothing to apply"),
        (batches(*range(8), then=("w",)), False, "loss.backward() ran but optimizer.step() was never called"),
        (batches(*range(8), then=("e",)), False, "in iteration 1, optimizer.step() ran without loss.backward() before it"),
        ([f"b{i}" for i in range(8)], False, "neither loss.backward() nor optimizer.step() was called for the 8 batches"),
        ([], False, "no batch was taken from the data loader"),
        (batches(*range(8), then=("w", "W", "s")), False, "in iteration 1, loss.backward() ran 2 times before optimizer.step()"),
        (batches(*range(8), then=("w", "s", "s")), False, "in iteration 1, optimizer.step() ran 2 times on one batch"),
        (batches(0, then=("w",)) + batches(1, then=("W", "s")), False, "in iteration 1, gradients from an earlier batch"),  # accumulation
    ],
    ids=[
        "epoch", "peek-and-eval-pass", "peek-inside", "backward-after", "one-iteration",
        "no-zero-grad", "step-first", "zero-grad-between", "no-step", "no-backward",
        "no-training", "no-batch", "backward-twice", "step-twice", "accumulation",
    ],
)  # fmt: skip
def test_order_reads_each_iteration(events, passed, fragment):
    verdict = judge("order", wrong_weights(events=events))
    assert verdict.passed is passed and fragment in verdict.message, verdict.message


# --- loss_decrease -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "params", "passed", "fragment"),
    [
        ({}, {}, True, "went from 2.8146 to 2.3321"),
        ({"loss_after": 2.55}, {}, True, "to 2.5500"),  # more than half of a correct epoch's fall
        ({"loss_after": 2.70}, {}, False, "went from 2.8146 to 2.7000; one correct epoch brings it to 2.3321"),
        ({"loss_after": 2.70}, {"min_decrease_ratio": 0.2}, True, "to 2.7000"),
        ({"loss_after": 2.8146}, {}, False, "one correct epoch brings it to 2.3321"),
        ({"loss_after": 47.1}, {}, False, "to 47.1000"),
        ({"loss_after": float("nan")}, {}, False, "training diverged"),
        ({"loss_after": None, "loss_error": "the model's forward raised ValueError: no"}, {}, False,
         "the loss after the epoch could not be measured: the model's forward raised ValueError: no"),
        ({"loss_before": None, "loss_after": None}, {}, False, "the loss could not be measured"),
    ],
    ids=["correct", "enough", "too-little", "ratio-param", "unchanged", "rose", "diverged", "error", "none"],
)  # fmt: skip
def test_loss_decrease_compares_with_one_correct_epoch(changes, params, passed, fragment):
    verdict = judge("loss_decrease", wrong_weights(**changes), **params)
    assert verdict.passed is passed and fragment in verdict.message, verdict.message


# --- final_weights: the decisive aspect, and what else its facts show ----------------


@pytest.mark.parametrize(
    ("have", "tensors", "fragment"),
    [
        (wrong_weights(), OTHER_HEAD, "after the epoch, fc.weight differs from one correct epoch from the same start and batches (largest difference 0.05)"),
        (wrong_weights(hyper=[{"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0}], moved=6.7), OTHER_HEAD,
         "the optimizer's lr is 0.1 after the epoch, where a correct epoch leaves it at 0.01; the optimizer's parameters moved 13.4 times as far"),
        (wrong_weights(moved=0.0), OTHER_HEAD, "the optimizer's parameters did not change at all during the epoch"),
        (wrong_weights(buffers_moved=0), OTHER_HEAD, "the running statistics did not change during the epoch"),
        (wrong_weights(optimizer_replaced=True), OTHER_HEAD, "`optimizer` was replaced by another optimizer"),
        (wrong_weights(), HEAD, "after the epoch, 1 parameter differs from one correct epoch (fc.weight)"),
        (facts(buffers={"bn.running_mean": [0.3, 0.5, 0.08, 0.25], "bn.num_batches_tracked": [9, 9, 81, 0.25]}), HEAD,
         "the parameters after the epoch equal one correct epoch's, but 2 buffers differ (bn.running_mean, bn.num_batches_tracked): running statistics move with every forward pass in train mode"),
        (facts(parameters=facts()["parameters"] | {"fc.extra": [0.0, 0.0, 0.0, 0.25]}), HEAD, "the model's layers changed (fc.extra)"),
        (facts(), {"fc.weight": HEAD["fc.weight"]}, "fc.bias is missing or has another shape after the epoch"),
        # the same elements in another order: the same sums, another sum weighted by position
        (facts(parameters=facts()["parameters"] | {"conv.weight": [1.5, 20.0, 3.0, -0.4]}), HEAD,
         "after the epoch, 1 parameter differs from one correct epoch (conv.weight)"),
    ],
    ids=["head", "lr", "no-change", "eval-mode", "replaced", "summaries", "buffers", "layers", "missing", "reordered"],
)  # fmt: skip
def test_final_weights_names_what_differs(have, tensors, fragment):
    verdict = judge("final_weights", have, tensors, head="fc")
    assert not verdict.passed and fragment in verdict.message, verdict.message


# A correct epoch leaves the frozen conv and the buffers of an eval-mode backbone bit for
# bit as they were; the summaries of a tensor changed by a rounding error are the same.
UNCHANGED = ["conv.weight", "bn.running_mean", "bn.num_batches_tracked"]


@pytest.mark.parametrize(
    ("kept", "passed", "reason", "fragment"),
    [
        (UNCHANGED, True, None, "equal one correct epoch"),
        (UNCHANGED + ["fc.bias"], True, None, "equal one correct epoch"),  # more kept: no matter
        (None, True, None, "equal one correct epoch"),  # facts stored before it was recorded
        (["bn.running_mean", "bn.num_batches_tracked"], False, "weights-differ",
         "the epoch changed 1 parameter that a correct epoch leaves exactly as they were (conv.weight)"),
        (["conv.weight"], False, "statistics-differ",
         "the epoch changed 2 buffers that a correct epoch leaves exactly as they were"),
    ],
    ids=["same", "more-kept", "not-recorded", "frozen-weight-touched", "statistics-touched"],
)  # fmt: skip
def test_what_a_correct_epoch_leaves_as_it_was_is_compared_exactly(kept, passed, reason, fragment):
    verdict = judge(
        "final_weights", facts(unchanged=kept), HEAD, facts(unchanged=UNCHANGED), head="fc"
    )
    assert verdict.passed is passed and fragment in verdict.message, verdict.message
    assert (reason in verdict.reasons) if reason else not verdict.reasons


def test_running_statistics_a_correct_epoch_moves_are_compared_element_by_element():
    """Rearranged statistics keep every sum (and so the summaries); not their elements."""
    stats = {"buffer:bn.running_mean": np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)}
    want = HEAD | stats
    assert judge("final_weights", facts(), want, want_tensors=want, head="fc").passed
    swapped = HEAD | {"buffer:bn.running_mean": np.array([0.2, 0.1, 0.3, 0.4], dtype=np.float32)}
    verdict = judge("final_weights", facts(), swapped, want_tensors=want, head="fc")
    assert not verdict.passed and "statistics-differ" in verdict.reasons, verdict.message
    assert "1 buffer differs (bn.running_mean)" in verdict.message


def test_code_set_on_the_model_after_the_epoch_fails_the_final_weights():
    hooked = "a hook is registered on `fc`: it changes what the model computes"
    verdict = judge("final_weights", facts(hooked=hooked), HEAD, head="fc")
    assert not verdict.passed and "tampered" in verdict.reasons
    assert verdict.message.startswith("after the epoch, a hook is registered on `fc`")
    assert judge("final_weights", facts(hooked=None), HEAD, head="fc").passed


def test_a_distance_moved_like_a_correct_epochs_is_not_reported():
    verdict = judge("final_weights", wrong_weights(moved=0.52), head="fc")
    assert not verdict.passed and "times as far" not in verdict.message


def test_final_weights_passes_within_its_own_tolerance():
    assert judge("final_weights", facts(), HEAD, head="fc").passed
    close = {name: values + np.float32(1e-3) for name, values in HEAD.items()}
    assert not judge("final_weights", facts(), close, head="fc").passed
    assert judge("final_weights", facts(), close, head="fc", atol=1e-2).passed


# --- the decisive fact settles the diagnostics ---------------------------------------

# A loop the event log cannot follow batch by batch (all batches fetched first, then eight
# steps), or whose loss rose by some measurement, but whose weights are a correct epoch's.
ODD = [f"b{i}" for i in range(8)] + ["w", "s"] * 8


@pytest.mark.parametrize("aspect", ["batches", "order", "loss_decrease"])
def test_a_diagnostic_passes_when_the_weights_equal_a_correct_epoch(aspect):
    assert not judge(aspect, wrong_weights(events=ODD, loss_after=2.9)).passed
    verdict = judge(aspect, facts(events=ODD, loss_after=2.9), HEAD)
    assert (
        verdict.passed
        and "the weights after the epoch equal one correct epoch's" in verdict.message
    )


def test_the_decisive_comparison_is_the_reference_runs_not_the_answers():
    """The tolerance and heads come from the expected facts: an answer's facts claiming a
    looser comparison do not loosen it, and a task without final_weights has no override."""
    close = {name: values + np.float32(1e-3) for name, values in HEAD.items()}
    forged = facts(events=ODD, decisive={"heads": ["fc"], "rtol": 1.0, "atol": 1.0})
    assert not judge("order", forged, close).passed
    loose = facts(decisive={"heads": ["fc"], "rtol": 1e-4, "atol": 1e-2})
    assert judge("order", facts(events=ODD), close, want=loose).passed
    assert not judge("order", facts(events=ODD), HEAD, want=facts(decisive=None)).passed


def test_no_override_without_the_head_values_or_with_other_buffers():
    assert not judge("order", facts(events=ODD), {}).passed  # the answer exported none
    evaluated = {
        "bn.running_mean": [0.3, 0.5, 0.08, 0.25],
        "bn.num_batches_tracked": [9, 9, 81, 0.25],
    }
    verdict = judge("order", facts(events=ODD, buffers=evaluated), HEAD)
    assert not verdict.passed and "in iteration 1" in verdict.message


def test_a_loss_its_forward_kept_from_being_measured_is_settled_by_the_weights():
    """A hook or a forward set on the instance after the epoch: the loss cannot be measured
    by the model's own forward, so the weights decide; without them, the message says why."""
    have = facts(
        loss_after=None, loss_error="a hook is registered on the model: it changes its forward"
    )
    assert judge("loss_decrease", have, HEAD).passed
    verdict = judge("loss_decrease", have | {"moved": 1.2})
    assert not verdict.passed
    assert verdict.message == (
        "the loss after the epoch could not be measured: a hook is registered on the model: "
        "it changes its forward"
    )


# --- reasons: what a failing verdict found, for the task's mistake triggers -----------

SGD_01 = [{"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0}]
RESTARTED = [e for i in range(8) for e in (f"b{i}", "b0", "w", "s")]


@pytest.mark.parametrize(
    ("aspect", "have", "tensors", "reasons"),
    [
        ("order", batches(0) + batches(*range(1, 8), then=("W", "s")), None, {"stale-gradients"}),
        ("order", batches(*range(8), then=("e", "w")), None, {"step-before-backward"}),
        ("order", batches(*range(8), then=("w", "e")), None, {"gradients-cleared"}),
        ("order", batches(*range(8), then=("w",)), None, {"no-step"}),
        ("order", batches(*range(8), then=("e",)), None, {"no-backward"}),
        ("order", [f"b{i}" for i in range(8)], None, {"no-training"}),
        ("order", [], None, {"no-batch"}),
        ("order", batches(*range(8), then=("w", "W", "s")), None, {"backward-repeated"}),
        ("order", batches(*range(8), then=("w", "s", "s")), None, {"step-repeated"}),
        # every iteration's finding, though the message names the first
        ("order", batches(0, then=("w", "W", "s")) + batches(*range(1, 8), then=("W", "s")), None,
         {"backward-repeated", "stale-gradients"}),
        ("batches", batches(0), None, {"batches-skipped"}),
        ("batches", EPOCH + EPOCH, None, {"batches-repeated", "every-batch-repeated"}),
        ("batches", batches(*[0] * 8), None, {"batches-skipped", "batches-repeated", "iterator-restarted"}),
        ("batches", RESTARTED, None, {"batches-skipped", "batches-repeated", "iterator-restarted"}),
        ("batches", EPOCH + batches(3), None, {"batches-repeated"}),
        ("batches", batches(*range(8), then=("w",)), None, {"none-trained"}),
        ("loss_decrease", {"loss_after": 2.70}, None, {"loss-decreased-too-little"}),
        ("loss_decrease", {"loss_after": 2.8146}, None, {"loss-not-decreased"}),
        ("loss_decrease", {"loss_after": 47.1}, None, {"loss-not-decreased"}),
        ("loss_decrease", {"loss_after": float("nan")}, None, {"diverged"}),
        ("loss_decrease", {"loss_after": None, "loss_error": "the model's forward raised X"}, None, {"unobservable"}),
        ("final_weights", {"moved": 0.5}, OTHER_HEAD, {"weights-differ"}),
        ("final_weights", {}, OTHER_HEAD, {"weights-differ", "moved-too-far"}),
        ("final_weights", {"moved": 0.2}, HEAD, {"weights-differ", "moved-too-little"}),
        ("final_weights", {"hyper": SGD_01, "moved": 6.7}, OTHER_HEAD, {"weights-differ", "hyper-changed", "moved-too-far"}),
        ("final_weights", {"moved": 0.0}, OTHER_HEAD, {"weights-differ", "not-moved"}),
        ("final_weights", {"buffers_moved": 0, "moved": 0.5}, OTHER_HEAD,
         {"weights-differ", "statistics-unchanged", "trained-in-eval-mode"}),
        # no backward ran: the statistics did not move, but no forward pass shows eval mode
        ("final_weights", {"buffers_moved": 0, "moved": 0.0, "events": [f"b{i}" for i in range(8)]}, OTHER_HEAD,
         {"weights-differ", "statistics-unchanged", "not-moved"}),
        ("final_weights", {"optimizer_replaced": True, "moved": 0.5}, OTHER_HEAD, {"weights-differ", "optimizer-replaced"}),
    ],
    ids=[
        "stale", "step-first", "cleared", "no-step", "no-backward", "no-training", "no-batch",
        "backward-twice", "step-twice", "several-findings", "one-batch", "two-epochs",
        "first-batch-8-times", "fresh-iterator-inside", "one-batch-twice", "none-trained",
        "too-little", "unchanged", "rose", "diverged", "unmeasured", "head", "moved-far",
        "moved-little", "lr", "not-moved", "eval-mode", "no-forward", "replaced",
    ],
)  # fmt: skip
def test_a_failing_verdict_names_what_its_facts_show(aspect, have, tensors, reasons):
    facts_ = wrong_weights(events=have) if isinstance(have, list) else wrong_weights(**have)
    verdict = judge(aspect, facts_, tensors, head="fc")
    assert not verdict.passed and verdict.reasons == reasons, (verdict.reasons, verdict.message)
    assert verdict.reasons <= training_loop.REASONS.keys() | COMMON_REASONS.keys()


@pytest.mark.parametrize(
    ("have", "tensors", "reasons"),
    [
        (facts(buffers={"bn.running_mean": [0.3, 0.5, 0.08, 0.25], "bn.num_batches_tracked": [9, 9, 81, 0.25]}), HEAD,
         {"statistics-differ"}),
        (facts(parameters=facts()["parameters"] | {"fc.extra": [0.0, 0.0, 0.0, 0.25]}), HEAD, {"layers-changed"}),
        (facts(), {"fc.weight": HEAD["fc.weight"]}, {"layers-changed"}),
    ],
    ids=["buffers", "layers", "head-missing"],
)  # fmt: skip
def test_final_weights_names_a_changed_state(have, tensors, reasons):
    verdict = judge("final_weights", have, tensors, head="fc")
    assert not verdict.passed and verdict.reasons == reasons, verdict.message


def test_a_step_without_backward_says_whether_it_had_gradients_to_apply():
    """A step with gradients left from an earlier backward is no step without gradients."""
    verdict = judge("order", wrong_weights(events=batches(0) + batches(1, then=("s",))))
    assert verdict.reasons == {"no-backward"}
    assert verdict.message == (
        "in iteration 2, optimizer.step() ran without loss.backward() before it: "
        "it applied the gradients an earlier backward left"
    )
    verdict = judge("order", wrong_weights(events=batches(*range(8), then=("e",))))
    assert verdict.message.endswith("there were no gradients for it to apply")


def test_a_replaced_optimizer_is_a_reason_of_every_aspect_that_follows_its_steps():
    for aspect in ("batches", "order"):
        have = wrong_weights(events=batches(*range(8), then=("w",)), optimizer_replaced=True)
        assert judge(aspect, have).reasons == {"optimizer-replaced"}


# --- what the log shows beyond the order of backward and step -----------------------


def test_a_step_on_parameters_the_model_no_longer_holds_is_not_cleared_gradients():
    """`model.fc = nn.Linear(...)` after the optimizer was made: backward fills the new
    head's gradients, the step finds none on the parameters it holds."""
    events = batches(*range(8), then=("w", "n", "e"))
    verdict = judge("order", wrong_weights(events=events, foreign_parameters=2))
    assert verdict.reasons == {"optimizer-not-model"}, verdict.message
    assert "cleared" not in verdict.message
    assert verdict.message.startswith(
        "in iteration 1, loss.backward() left no gradients on the optimizer's parameters"
    )
    assert "2 parameters the optimizer holds are no longer the model's" in verdict.message
    verdict = judge("order", wrong_weights(events=events))  # the model's own, no gradients
    assert verdict.reasons == {"no-gradients-reached"} and "cleared" not in verdict.message
    # gradients computed, then cleared before the step: still cleared
    verdict = judge("order", wrong_weights(events=batches(*range(8), then=("w", "e"))))
    assert verdict.reasons == {"gradients-cleared"}


ONE_BATCH_REUSED = ["b0", *["w", "s"] * 8]  # next(iter(dataloader)), then 8 steps on it


def test_one_batch_trained_again_and_again_is_a_batches_mistake_not_a_repeated_step():
    verdict = judge("order", wrong_weights(events=ONE_BATCH_REUSED))
    assert not verdict.passed and verdict.reasons == {"batch-reused"}, verdict.message
    assert "ran 8 times on one batch" not in verdict.message
    assert "its batch fed 8 rounds of loss.backward() and optimizer.step()" in verdict.message
    verdict = judge("batches", wrong_weights(events=ONE_BATCH_REUSED))
    assert verdict.reasons == {"batches-repeated", "batches-skipped", "batch-reused"}
    assert "training ran 8 steps on only 1 of the 8 distinct ones" in verdict.message
    assert "batch 1 was taken from the data loader once and trained on again" in verdict.message
    # a round of its own with a fault is named by that fault
    stale = judge("order", wrong_weights(events=["b0", "w", "s", "W", "s"]))
    assert stale.reasons == {"stale-gradients"}
    twice = judge("order", wrong_weights(events=["b0", "w", "s", "s"]))  # no backward between
    assert twice.reasons == {"step-repeated"}
    # every batch trained twice in place is no second epoch
    verdict = judge("batches", wrong_weights(events=batches(*range(8), then=("w", "s") * 2)))
    assert verdict.reasons == {"batches-repeated", "batch-reused"}, verdict.message


def test_steps_on_another_data_loader_are_not_nothing_trained():
    for aspect in ("order", "batches"):
        verdict = judge(aspect, wrong_weights(events=["w", "s"] * 4))
        assert not verdict.passed and verdict.reasons == {"loader-unused"}, verdict.message
        assert "optimizer.step() ran 4 times, but no batch was taken from `dataloader`" in (
            verdict.message
        )
        assert "no training step ran" not in verdict.message
    verdict = judge("order", wrong_weights(events=[]))  # nothing at all: still no-batch
    assert verdict.reasons == {"no-batch"}


def test_a_backward_that_raised_is_not_said_to_have_run():
    verdict = judge("order", wrong_weights(events=["b0", "w", "r"]))
    assert verdict.reasons == {"backward-raised"}, verdict.message
    assert "ran but" not in verdict.message and "raised" in verdict.message
    # one completed, one raised: the completed one is a backward without a step
    verdict = judge("order", wrong_weights(events=["b0", "w", "b1", "w", "r"]))
    assert verdict.reasons == {"no-step"}
    # a raised backward caught by the answer, then a step with nothing to apply
    verdict = judge("order", wrong_weights(events=batches(*range(8), then=("w", "r", "e"))))
    assert verdict.reasons == {"backward-raised"} and "cleared" not in verdict.message


@pytest.mark.parametrize("aspect", ["batches", "order", "loss_decrease", "final_weights"])
def test_a_passing_verdict_carries_no_reason(aspect):
    verdict = judge(aspect, facts(), HEAD, head="fc")
    assert verdict.passed and verdict.reasons == frozenset()
    if aspect != "final_weights":  # settled by the weights, whatever the diagnostic found
        verdict = judge(aspect, facts(events=ODD, loss_after=2.9), HEAD)
        assert verdict.passed and verdict.reasons == frozenset()


def test_the_declared_reasons_are_kebab_case_and_their_own():
    assert training_loop.REASONS and not training_loop.REASONS.keys() & COMMON_REASONS.keys()
    for code, meaning in training_loop.REASONS.items():
        assert re.fullmatch(REASON_PATTERN, code) and meaning, code


# --- the facts' schema -------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"events": ["b0", "x"]},
        {"events": ["b-1"]},
        {"events": ["ws"]},
        {"parameters": {"fc.weight": [1.0, 2.0]}},
        {"moved": -1.0},
        {"surprise": 1},
    ],
    ids=[
        "unknown-event",
        "negative-batch",
        "joined-events",
        "short-summary",
        "negative-moved",
        "extra-field",
    ],
)
def test_malformed_facts_are_refused(changes):
    with pytest.raises(ValidationError):
        Facts.model_validate(facts(**changes))


# --- the observer, on a small in-process model -------------------------------------


@pytest.fixture
def torch_env():
    import torch  # a dependency of the project: its absence is a failure, not a skip

    from sandboxed import introspect

    backward = torch.autograd.backward
    yield torch, introspect
    torch.autograd.backward = backward  # the recorder instruments it, as in a sandbox
    gc.enable()  # a call into the answer's code leaves the collector off, for the sandbox


def small_scope(torch) -> dict:
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, stride=2))
    model.add_module("bn", nn.BatchNorm2d(4))
    model.add_module("pool", nn.AdaptiveAvgPool2d((1, 1)))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(4, 3))
    model.conv.requires_grad_(False)
    model.bn.requires_grad_(False)
    data = torch.utils.data.TensorDataset(torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,)))
    return {
        "model": model,
        "optimizer": torch.optim.SGD(model.fc.parameters(), lr=0.1, momentum=0.9),
        "criterion": nn.CrossEntropyLoss(),
        "dataloader": torch.utils.data.DataLoader(data, batch_size=4),
        "torch": torch,
    }


def observe_all(ti, code: str, scope: dict) -> tuple[dict, dict, object]:
    """Prepare the four aspects, run `code` as the answer would, observe: facts and tensors
    by aspect, and the model's state and the random generator's right after the answer ran."""
    from sandboxed.harness import ObserveContext

    shared: dict = {}
    checks = {
        aspect: Params(name=aspect, type="training_loop", aspect=aspect, head="fc")
        for aspect in ("batches", "order", "loss_decrease", "final_weights")
    }
    for check in checks.values():
        observe.training_loop.prepare(ObserveContext(scope, 0, ti, shared), check)
    exec(code, scope)
    state = {k: v.clone() for k, v in scope["model"].state_dict().items()}
    rng = scope["torch"].get_rng_state()
    out = {}
    for aspect, check in checks.items():
        ctx = ObserveContext(scope, 0, ti, shared)
        out[aspect] = (
            Facts.model_validate(observe.training_loop.observe(ctx, check)),
            dict(ctx.tensors),
        )
    return out, state, rng


EPOCH_CODE = (
    "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
    "    criterion(model(x), y).backward()\n    optimizer.step()\n"
)


def test_the_observer_measures_the_loss_from_the_old_buffers_and_puts_everything_back(torch_env):
    torch, ti = torch_env
    scope = small_scope(torch)
    head_before = {
        f"start:fc.{n}": t.detach().clone() for n, t in scope["model"].fc.named_parameters()
    }
    out, state, rng = observe_all(ti, EPOCH_CODE + "model.eval()\n", scope)
    facts_, tensors = out["final_weights"]
    assert facts_.events == batches(0, 1, 2, 3)
    assert facts_.loss_after is not None and facts_.loss_after < facts_.loss_before
    assert facts_.buffers_moved == 3 and facts_.moved and facts_.moved > 0
    assert facts_.decisive is not None and facts_.decisive.heads == ["fc"]
    assert facts_.hyper[0]["lr"] == 0.1 and not facts_.optimizer_replaced
    moved = {"buffer:bn.running_mean", "buffer:bn.running_var", "buffer:bn.num_batches_tracked"}
    assert set(tensors) == {"fc.weight", "fc.bias", *moved}  # and the buffers the epoch moved
    for aspect in ("batches", "order", "loss_decrease"):  # each carries the decisive inputs
        assert {"fc.weight", "fc.bias"} <= set(out[aspect][1])
        assert out[aspect][0] == facts_
    for aspect in ("batches", "order", "loss_decrease"):  # and the head before the answer ran
        assert set(out[aspect][1]) == {"fc.weight", "fc.bias", *head_before}
        for name, values in head_before.items():
            assert np.array_equal(out[aspect][1][name], values.numpy()), name
    model = scope["model"]
    for name, values in model.state_dict().items():  # the buffers the loss moved are back
        assert torch.equal(values, state[name]), name
    assert not model.training and not model.bn.training  # and the flags
    assert torch.equal(torch.get_rng_state(), rng)  # and the generator the loss seeded


def test_the_observer_names_what_the_epoch_left_bit_for_bit_as_it_was(torch_env):
    torch, ti = torch_env
    frozen = ["conv.bias", "conv.weight", "bn.weight", "bn.bias"]
    out, _, _ = observe_all(ti, EPOCH_CODE, small_scope(torch))
    assert sorted(out["final_weights"][0].unchanged) == sorted(frozen)  # train mode: bn moved
    out, _, _ = observe_all(
        ti, "model.eval()\n" + EPOCH_CODE.replace("model.train()\n", ""), small_scope(torch)
    )
    assert sorted(out["final_weights"][0].unchanged) == sorted(
        frozen + ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    )
    # one element of the frozen conv swapped with its neighbour, through numpy
    swap = "w = model.conv.weight.detach().numpy().reshape(-1)\nw[[0, 1]] = w[[1, 0]]\n"
    out, _, _ = observe_all(ti, EPOCH_CODE + swap, small_scope(torch))
    assert "conv.weight" not in out["final_weights"][0].unchanged
    assert "conv.bias" in out["final_weights"][0].unchanged


def test_the_loss_after_from_the_heads_kept_inputs_is_the_whole_forwards(torch_env):
    """With the backbone bit for bit as it was, only the head runs on what reached it before
    the epoch: the loss is the one the whole forward gives; with a backbone weight moved,
    the whole forward runs again."""
    from sandboxed.harness import ObserveContext

    torch, ti = torch_env
    scope = small_scope(torch)
    shared: dict = {}
    check = Params(name="w", type="training_loop", aspect="final_weights", head="fc")
    observe.training_loop.prepare(ObserveContext(scope, 0, ti, shared), check)
    (recorder,) = [v for k, v in shared.items() if k != "protected"]
    assert recorder.head_inputs is not None and len(recorder.head_inputs) == 4
    exec(EPOCH_CODE, scope)
    model = scope["model"]
    names = frozenset(name for name, _ in model.named_parameters())
    whole, error = recorder.loss(model)
    head_only, _ = recorder.loss(model, unchanged=names)
    assert error is None and whole is not None and whole < recorder.loss_before
    assert head_only == pytest.approx(whole, rel=1e-6, abs=1e-7)
    with torch.no_grad():
        model.conv.weight.add_(torch.randn_like(model.conv.weight))  # bn undoes a scale
    moved, _ = recorder.loss(model, unchanged=names - {"conv.weight"})
    assert moved != pytest.approx(whole, rel=1e-3)


def test_forward_passes_without_a_step_do_not_lower_the_loss(torch_env):
    """Batch-norm statistics move in train mode; only the weights' updates may count."""
    torch, ti = torch_env
    code = (
        "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
        "    criterion(model(x), y).backward()\n"
    )
    facts_ = observe_all(ti, code, small_scope(torch))[0]["loss_decrease"][0]
    assert facts_.buffers_moved == 3 and facts_.moved == 0
    assert facts_.loss_after == pytest.approx(facts_.loss_before, rel=1e-6)
    assert facts_.events == batches(0, 1, 2, 3, then=("w",))


def test_the_loss_is_what_the_weights_compute_whatever_the_answers_forward_does(torch_env):
    """The loss is measured on a copy of the setup's model holding the answer's weights: a
    forward the answer hooked, set on an instance or put in another class changes nothing."""
    torch, ti = torch_env
    plain = observe_all(ti, EPOCH_CODE, small_scope(torch))[0]["loss_decrease"][0]
    assert plain.loss_after < plain.loss_before
    disguised = {
        "hooked": "model.register_forward_hook(lambda module, inputs, output: output * 0)\n",
        "on-the-instance": "model.forward = lambda x: torch.zeros(x.shape[0], 3)\n",
        "another-class": (
            "class Cheat(type(model)):\n    def forward(self, x):\n"
            "        return torch.zeros(x.shape[0], 3)\n\nmodel.__class__ = Cheat\n"
        ),
    }
    for name, code in disguised.items():
        facts_ = observe_all(ti, EPOCH_CODE + code, small_scope(torch))[0]["loss_decrease"][0]
        assert facts_.loss_after == pytest.approx(plain.loss_after, rel=1e-6), name


def test_changing_the_code_of_the_models_layers_leaves_the_loss_unmeasured(torch_env):
    torch, ti = torch_env
    patched = "torch.nn.Linear.forward = lambda self, x: torch.zeros(x.shape[0], 3)\n"
    original = torch.nn.Linear.forward
    try:
        facts_ = observe_all(ti, EPOCH_CODE + patched, small_scope(torch))[0]["order"][0]
    finally:
        torch.nn.Linear.forward = original
    assert facts_.loss_after is None
    assert "changed after the setup (Linear.forward)" in facts_.loss_error


def test_a_layer_without_the_models_parameters_leaves_the_loss_unmeasured(torch_env):
    torch, ti = torch_env
    replaced = EPOCH_CODE + "model.fc = torch.nn.Identity()\n"
    facts_ = observe_all(ti, replaced, small_scope(torch))[0]["order"][0]
    assert facts_.loss_after is None
    assert facts_.loss_error == "the model's parameters are not the ones it had before the epoch"
    assert facts_.events == batches(0, 1, 2, 3)


def test_a_tampered_structure_fails_the_whole_observation(torch_env):
    torch, ti = torch_env
    code = EPOCH_CODE + (
        "class Sneaky(dict):\n    pass\n"
        "d = object.__getattribute__(model.fc, '__dict__')\n"
        "d['_parameters'] = Sneaky(d['_parameters'])\n"
    )
    with pytest.raises(ObservationError, match="tampered"):
        observe_all(ti, code, small_scope(torch))


def test_steps_without_gradients_and_stale_backwards_are_logged(torch_env):
    torch, ti = torch_env
    code = (
        "for x, y in dataloader:\n    criterion(model(x), y).backward()\n"
        "    optimizer.zero_grad()\n    optimizer.step()\n"
        "x, y = next(iter(dataloader))\ncriterion(model(x), y).backward()\n"
        "criterion(model(x), y).backward()\n"
    )
    facts_ = observe_all(ti, code, small_scope(torch))[0]["order"][0]
    assert facts_.events == batches(0, 1, 2, 3, then=("w", "e")) + ["b0", "w", "W"]


def test_a_replaced_model_fails_every_aspect_with_its_reason(torch_env):
    torch, ti = torch_env
    code = "model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3))\n"
    with pytest.raises(ObservationError, match="was replaced") as raised:
        observe_all(ti, code, small_scope(torch))
    assert raised.value.reason == "model-replaced"
    assert raised.value.reason in training_loop.REASONS


def test_backwards_that_raise_or_miss_the_optimizer_and_other_loaders_are_logged(torch_env):
    torch, ti = torch_env
    replaced = "model.fc = torch.nn.Linear(4, 3)\n" + EPOCH_CODE
    facts_ = observe_all(ti, replaced, small_scope(torch))[0]["order"][0]
    assert facts_.events == batches(0, 1, 2, 3, then=("w", "n", "e"))
    assert facts_.foreign_parameters == 2
    no_grad = (
        "try:\n    with torch.no_grad():\n        for x, y in dataloader:\n"
        "            criterion(model(x), y).backward()\nexcept RuntimeError:\n    pass\n"
    )
    facts_ = observe_all(ti, no_grad, small_scope(torch))[0]["order"][0]
    assert facts_.events == ["b0", "w", "r"] and facts_.foreign_parameters == 0
    other = EPOCH_CODE.replace(
        "in dataloader", "in torch.utils.data.DataLoader(dataloader.dataset, batch_size=8)"
    )
    facts_ = observe_all(ti, other, small_scope(torch))[0]["order"][0]
    assert facts_.events == ["w", "s"] * 2


# --- a record the answer wrote ---------------------------------------------------------


@pytest.mark.parametrize("aspect", ["batches", "order"])
def test_a_record_of_steps_that_wrote_no_parameter_is_forged(aspect):
    """Every step with gradients the log records must have written the optimizer's
    parameters: a correct-looking log over untouched parameters earns nothing."""
    verdict = judge(aspect, wrong_weights(parameter_writes=0, moved=0.0))
    assert not verdict.passed
    assert verdict.reasons == {"tampered", "record-forged"}
    assert "8 optimizer steps" in verdict.message and "written 0 times" in verdict.message


@pytest.mark.parametrize("aspect", ["batches", "order"])
def test_fewer_writes_than_recorded_steps_is_forged(aspect):
    verdict = judge(aspect, wrong_weights(parameter_writes=7))
    assert not verdict.passed and "record-forged" in verdict.reasons


@pytest.mark.parametrize("aspect", ["batches", "order"])
def test_parameters_that_cannot_be_read_leave_the_steps_unverified(aspect):
    verdict = judge(aspect, wrong_weights(parameter_writes=None))
    assert not verdict.passed and verdict.reasons == {"tampered"}


def test_as_many_writes_as_steps_is_a_real_record():
    """One write per step with gradients is the least a real step makes (one parameter)."""
    assert judge("batches", wrong_weights(parameter_writes=8)).passed
    assert judge("order", wrong_weights(parameter_writes=8)).passed


def test_a_loop_without_steps_needs_no_writes():
    have = wrong_weights(events=batches(*range(8), then=("w",)), parameter_writes=0)
    verdict = judge("order", have)
    assert not verdict.passed and verdict.reasons == {"no-step"}


def test_right_weights_settle_a_record_the_answer_also_wrote():
    """The weights decide: a correct epoch that also wrote the log loses nothing to it."""
    verdict = judge("batches", facts(parameter_writes=0), tensors=HEAD)
    assert verdict.passed


def test_recorded_steps_that_moved_nothing_at_a_positive_rate_are_forged():
    """Writes alone do not make a step: one with gradients at lr > 0 moves its parameters."""
    verdict = judge("order", wrong_weights(moved=0.0))
    assert not verdict.passed and verdict.reasons == {"tampered", "record-forged"}
    assert "did not move" in verdict.message


def test_steps_at_a_zero_learning_rate_may_move_nothing():
    have = wrong_weights(moved=0.0, hyper=[{"lr": 0.0, "momentum": 0.9}])
    assert judge("order", have).passed


# --- a record the weights do not bear out ------------------------------------------------


@pytest.mark.parametrize("aspect", ["batches", "order"])
def test_a_right_record_over_weights_that_compute_what_they_did_earns_nothing(aspect):
    """The record is within the answer's reach; the loss is what its weights compute."""
    verdict = judge(aspect, wrong_weights(loss_after=2.8146))
    assert not verdict.passed and verdict.reasons == {"no-effect"}
    assert "went from 2.8146 to 2.8146" in verdict.message
    assert "from 2.8146 to 2.3321" in verdict.message


@pytest.mark.parametrize("aspect", ["batches", "order"])
def test_a_record_counts_once_the_weights_lower_the_loss(aspect):
    fall = 2.8146 - 2.3321
    assert judge(aspect, wrong_weights(loss_after=2.8146 - 0.0011 * fall)).passed
    assert not judge(aspect, wrong_weights(loss_after=2.8146 - 0.0009 * fall)).passed


@pytest.mark.parametrize("aspect", ["batches", "order"])
@pytest.mark.parametrize("loss_after", [2.9, 40.0, math.inf, math.nan], ids=str)
def test_a_right_record_over_weights_that_compute_a_higher_loss_earns_nothing(aspect, loss_after):
    """Weights moved at random (or to infinity) beside a record the answer wrote itself:
    the record, the version counters and the distance moved all look like training, the
    loss the weights compute does not."""
    verdict = judge(aspect, wrong_weights(loss_after=loss_after))
    assert not verdict.passed and verdict.reasons == {"no-effect"}, verdict
    assert ("higher loss than before" if math.isfinite(loss_after) else "no finite loss") in (
        verdict.message
    )


# How the head moved: the correct epoch's change D from its start, and the answer's.
CHANGE = {
    name: np.resize(np.array([0.02, -0.01, 0.03], np.float32), v.shape) for name, v in HEAD.items()
}
START_HEAD = {f"start:{name}": values - CHANGE[name] for name, values in HEAD.items()}


def moved_head(change: dict) -> dict:
    """An answer's exported head: the same start as a correct epoch's, moved by `change`."""
    return {**START_HEAD, **{n: START_HEAD[f"start:{n}"] + change[n] for n in HEAD}}


def across(name: str) -> np.ndarray:
    """A change of `name` orthogonal to the correct epoch's, as large (random-like)."""
    d = CHANGE[name].astype(np.float64).ravel()
    r = np.resize(np.array([1.0, 2.0, -1.5, 0.5]), d.shape)
    r -= d * (r @ d) / (d @ d)
    return (
        (r * np.linalg.norm(d) / np.linalg.norm(r)).astype(np.float32).reshape(CHANGE[name].shape)
    )


@pytest.mark.parametrize("aspect", ["batches", "order"])
@pytest.mark.parametrize("factor", [0.2, 4.0, -3.0], ids=["a-fifth", "four-times", "against"])
def test_a_record_counts_whose_weights_moved_along_a_correct_epochs_change(aspect, factor):
    """A loop that trained, however wrongly (a step too many, gradient ascent): its head
    moved along (or against) the correct change, even where the loss rose."""
    change = {n: d * np.float32(factor) for n, d in CHANGE.items()}
    have = wrong_weights(loss_after=3.4)
    assert judge(aspect, have, moved_head(change), want_tensors={**HEAD, **START_HEAD}).passed


@pytest.mark.parametrize("aspect", ["batches", "order"])
@pytest.mark.parametrize("loss_after", [2.0, 3.4], ids=["loss-fell", "loss-rose"])
def test_a_record_over_weights_moved_across_a_correct_epochs_change_earns_nothing(
    aspect, loss_after
):
    """Weights moved at random beside a record written by hand: the loss moved, even fell,
    but the head's change has nothing to do with training on the epoch's batches."""
    have = wrong_weights(loss_after=loss_after)
    change = {n: across(n) for n in HEAD}
    verdict = judge(aspect, have, moved_head(change), want_tensors={**HEAD, **START_HEAD})
    assert not verdict.passed and verdict.reasons == {"no-effect"}, verdict
    assert "not as training on the epoch's batches moves them" in verdict.message
    assert "cosine 0.00)" in verdict.message


def test_a_loss_that_fell_counts_for_weights_that_moved_along_a_correct_epochs_change():
    have = wrong_weights(loss_after=2.3)
    assert judge(
        "loss_decrease", have, moved_head(CHANGE), want_tensors={**HEAD, **START_HEAD}
    ).passed


def test_a_loss_that_fell_without_training_earns_nothing():
    """A head shrunk towards uniform scores lowers the loss on random labels: its change
    has nothing to do with a correct epoch's."""
    have = wrong_weights(loss_after=2.3026)
    change = {n: across(n) for n in HEAD}
    verdict = judge("loss_decrease", have, moved_head(change), want_tensors={**HEAD, **START_HEAD})
    assert not verdict.passed and verdict.reasons == {"not-trained"}, verdict
    assert "went from 2.8146 to 2.3026" in verdict.message and "cosine 0.00" in verdict.message


def test_the_heads_before_the_epoch_are_not_compared_as_weights():
    """final_weights compares the heads after the epoch; their start is the record's."""
    tensors = {**HEAD, **{k: v + 1 for k, v in START_HEAD.items()}}
    assert judge("final_weights", facts(), tensors, want_tensors={**HEAD, **START_HEAD}).passed


def test_a_record_whose_loss_could_not_be_measured_earns_nothing():
    have = wrong_weights(loss_after=None, loss_error="the model's parameters are not the ones")
    verdict = judge("order", have)
    assert not verdict.passed and verdict.reasons == {"no-effect"}
    assert "could not be measured (the model's parameters are not the ones)" in verdict.message


def test_a_record_over_unchanged_weights_is_settled_by_right_weights():
    assert judge("batches", facts(loss_after=2.8146), tensors=HEAD).passed
