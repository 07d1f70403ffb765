"""The `optimizer` check's judge, on hand-made facts: what one step of an optimizer did to
each parameter, as the observer reports it, for the reference (SGD, lr 0.001, over the
head `fc`) and for answers with one mistake each. No sandbox, no torch."""

from __future__ import annotations

import numpy as np
import pytest

from graders.checks import optimizer
from graders.checks.base import Observed

SGD, ADAM = "torch.optim.sgd.SGD", "torch.optim.adam.Adam"
RNG = np.random.default_rng(0)
VALUES = {"fc.weight": RNG.normal(0, 0.05, (10, 8)), "fc.bias": RNG.normal(0, 0.05, 10)}
VALUES |= {"conv1.weight": RNG.normal(0, 0.05, (4, 3)), "bn1.weight": np.ones(4)}
GRADS = {name: RNG.standard_normal(v.shape) for name, v in VALUES.items()}
HEAD = ["fc.weight", "fc.bias"]
SGD_HYPER = {"lr": 0.001, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
             "nesterov": False, "maximize": False, "foreach": None, "differentiable": False,
             "fused": None}  # fmt: skip


def summary(values: np.ndarray) -> list[float]:
    v = values.reshape(-1).astype(np.float64)
    return [float(v.sum()), float(np.abs(v).sum()), float(v @ v)]


def sgd_step(
    start: np.ndarray, grad: np.ndarray, hyper: dict, times: int, steps: int = 1
) -> np.ndarray:
    """torch's SGD: `steps` steps (here from one gradient; the probe gives each its own),
    a tensor held `times` times updated once per holding."""
    p, buf = start.copy(), None
    momentum, dampening = hyper.get("momentum", 0.0), hyper.get("dampening", 0.0)
    for _ in range(steps * times):
        g = -grad if hyper.get("maximize") else grad
        d = g + hyper.get("weight_decay", 0.0) * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if hyper.get("nesterov") else buf
        p -= hyper["lr"] * d
    return p - start


def adam_step(start: np.ndarray, grad: np.ndarray, hyper: dict, times: int, steps: int = 1):
    return -hyper["lr"] * times * steps * grad / (np.abs(grad) + 1e-8)


def observed(
    groups: list[tuple[list[str], dict]] | None = None,
    class_name: str = SGD,
    frozen: tuple[str, ...] = (),
    trainable: tuple[str, ...] = tuple(HEAD),
    rule=sgd_step,
    tensors: bool = True,
    probe_error: str | None = None,
    steps: int = 1,
) -> Observed:
    """Facts as the observer would report them for an optimizer with these groups."""
    groups = groups if groups is not None else [(list(HEAD), SGD_HYPER)]
    counts: dict[str, int] = {}
    for names, _ in groups:
        for n in names:
            counts[n] = counts.get(n, 0) + 1
    hyper_of = {n: h for names, h in reversed(groups) for n in names}
    changes, exported = {}, {}
    for name, count in counts.items():
        grad = GRADS.get(name, np.ones(3))
        start = VALUES.get(name, np.zeros(3))
        record = {"held": count, "trainable": name in trainable, "in_model": name in VALUES}
        for probe, along, base, taken in (
            ("step", "along", start, steps),
            ("zero", "zero_along", 0 * start, 1),
        ):
            delta = (
                rule(base, grad, hyper_of[name], count, taken) if name in trainable else 0 * start
            )
            record[probe] = summary(delta)
            record[along] = float(delta.reshape(-1) @ grad.reshape(-1) / (grad.reshape(-1) @ grad.reshape(-1))) if name in trainable else 0.0  # fmt: skip
            if tensors and name in trainable and np.abs(delta).sum() != 0:
                exported[f"{probe}/{name}"] = delta.astype(np.float32)
        changes[name] = record
    facts = {
        "class_name": class_name,
        "groups": [{"params": names, "hyper": hyper} for names, hyper in groups],
        "frozen": [n for n in counts if n in frozen],
        "changes": {} if probe_error else changes,
        "probe_error": probe_error,
    }
    return Observed(optimizer.Facts.model_validate(facts), {} if probe_error else exported)


REFERENCE = observed()


def judge(got: Observed, aspect: str, expected: Observed = REFERENCE, steps: int = 1):
    check = optimizer.Params(name="opt", type="optimizer", aspect=aspect, steps=steps)
    return optimizer.judge(check, got, expected)


def hyper(**changes) -> dict:
    return SGD_HYPER | changes


ASPECTS = ("type", "params", "lr", "update")
# (id, facts, {aspect: a fragment of its failure message}): an aspect not named passes
# fmt: off
CASES = [
    ("the reference itself", REFERENCE, {}),
    ("momentum: the first step is plain SGD's", observed([(HEAD, hyper(momentum=0.9))]), {}),
    ("two groups of the same settings", observed([(["fc.weight"], SGD_HYPER), (["fc.bias"], SGD_HYPER)]), {}),
    ("summaries only", observed(tensors=False), {}),
    (
        "gradient ascent",
        observed([(HEAD, hyper(maximize=True))]),
        {"lr": "goes along its gradient instead of against it: gradient ascent (maximize=True)",
         "update": "gradient ascent (maximize=True)"},
    ),
    (
        "the head held twice",
        observed([(HEAD + HEAD, SGD_HYPER)]),
        {"params": "it holds fc.weight 2 times, expected 1 time: each step updates it 2 times",
         "lr": "the effective learning rate for fc.weight is 0.002, expected 0.001: it is held 2 times",
         "update": "is held 2 times"},
    ),
    (
        "weight decay",
        observed([(HEAD, hyper(weight_decay=0.01))]),
        {"update": "the change of fc.weight depends on its value, not only on its gradient: "
                   "its settings differ: weight_decay=0.01 (expected 0)"},
    ),
    (
        "learning rate 10x",
        observed([(HEAD, hyper(lr=0.01))]),
        {"lr": "the effective learning rate for fc.weight is 0.01, expected 0.001 (2 tensors affected)",
         "update": "is 0.01, expected 0.001"},
    ),
    (
        "learning rate 10x, summaries only",
        observed([(HEAD, hyper(lr=0.01))], tensors=False),
        {"lr": "is 0.01, expected 0.001", "update": "is 0.01, expected 0.001"},
    ),
    (
        "learning rate 10x for the weight's group only",
        observed([(["fc.weight"], hyper(lr=0.01)), (["fc.bias"], SGD_HYPER)]),
        {"lr": "the effective learning rate for fc.weight is 0.01, expected 0.001", "update": "fc.weight"},
    ),
    (
        "learning rate 0",
        observed([(HEAD, hyper(lr=0.0))]),
        {"params": "it leaves fc.weight, fc.bias unchanged: its step does not move it (learning rate 0)",
         "lr": "one step leaves fc.weight unchanged", "update": "fc.weight does not change"},
    ),
    (
        "nesterov momentum",
        observed([(HEAD, hyper(momentum=0.9, nesterov=True))]),
        {"update": "the step of fc.weight is 1.9 times the reference's, with the learning rate 0.001 "
                   "as expected: its settings differ: momentum=0.9 (expected 0), nesterov=True"},
    ),
    (
        "Adam",
        observed([(HEAD, {"lr": 0.001, "betas": [0.9, 0.999]})], class_name=ADAM, rule=adam_step),
        {"type": "the optimizer is a torch.optim.adam.Adam, expected a torch.optim.sgd.SGD",
         "update": "is not a multiple of the reference's: a torch.optim.adam.Adam steps differently"},
    ),
    (
        "Adam with another learning rate",
        observed([(HEAD, {"lr": 0.01})], class_name=ADAM, rule=adam_step),
        {"type": "Adam", "lr": "the learning rate for fc.weight is 0.01, expected 0.001 (compared by value",
         "update": "steps differently"},
    ),
    (
        "all parameters: frozen ones held",
        observed([(["conv1.weight", "bn1.weight", *HEAD], SGD_HYPER)], frozen=("conv1.weight", "bn1.weight")),
        {"params": "the optimizer updates 2 tensors (fc.weight, fc.bias), expected 2 (fc.weight, fc.bias); "
                   "it also holds 2 frozen tensors (conv1.weight, bn1.weight) that never change"},
    ),
    (
        "only the weight",
        observed([(["fc.weight"], SGD_HYPER)]),
        {"params": "it leaves fc.bias unchanged: the optimizer does not hold it",
         "update": "fc.bias does not change: the optimizer does not hold it"},
    ),
    (
        "a backbone layer unfrozen and updated",
        observed([(["conv1.weight", *HEAD], SGD_HYPER)], trainable=("conv1.weight", *HEAD)),
        {"params": "it also updates conv1.weight, which the reference leaves unchanged",
         "update": "conv1.weight changes, which the reference's step leaves unchanged"},
    ),
    (
        "a tensor that is not the model's",
        observed([([*HEAD, "<tensor #1 not in `model`>"], SGD_HYPER)], trainable=(*HEAD, "<tensor #1 not in `model`>")),
        {"params": "it holds 1 tensor that is not a parameter of the model"},
    ),
    (
        "a learning rate that is not a number",
        observed([(HEAD, hyper(lr=float("nan")))]),
        {"lr": "fc.weight", "update": "fc.weight"},
    ),
    (
        "the step could not be probed",
        observed(probe_error="your code changed torch itself (the kernels of aten::add_.Tensor)"),
        {"lr": "your code changed torch itself", "update": "the kernels of aten::add_.Tensor"},
    ),
    (
        "not probed, and frozen parameters held",
        observed([(["conv1.weight", *HEAD], SGD_HYPER)], frozen=("conv1.weight",), probe_error="no probe"),
        {"params": "it also holds 1 frozen tensor (conv1.weight)", "lr": "no probe", "update": "no probe"},
    ),
]
# fmt: on


@pytest.mark.parametrize(("got", "failures"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("aspect", ASPECTS)
def test_each_aspect_of_each_answer(got, failures, aspect):
    verdict = judge(got, aspect)
    if aspect not in failures:
        assert verdict.passed, verdict.message
    else:
        assert not verdict.passed
        assert failures[aspect] in verdict.message, verdict.message


def test_passing_messages_say_what_was_found():
    assert judge(REFERENCE, "type").message == "the optimizer is a torch.optim.sgd.SGD"
    assert judge(REFERENCE, "params").message == (
        "the optimizer updates exactly 2 tensors (fc.weight, fc.bias)"
    )
    assert judge(REFERENCE, "lr").message.startswith("learning rate 0.001")
    assert "changes 2 tensors (fc.weight, fc.bias) as the reference's step does" in (
        judge(REFERENCE, "update").message
    )


def test_a_tolerance_admits_an_equivalent_learning_rate():
    """A tensor learning rate of 0.001 holds float32's nearest value: the same step."""
    assert judge(observed([(HEAD, hyper(lr=float(np.float32(0.001))))]), "lr").passed
    assert not judge(observed([(HEAD, hyper(lr=0.00101))]), "lr").passed


def test_the_reference_must_be_probed():
    broken = observed(probe_error="no probe")
    with pytest.raises(ValueError, match="the reference's optimizer could not be probed"):
        judge(REFERENCE, "update", expected=broken)


def test_facts_with_unknown_fields_are_refused():
    facts = REFERENCE.facts.model_dump()
    facts["changes"]["fc.weight"]["forged"] = True
    with pytest.raises(ValueError):
        optimizer.Facts.model_validate(facts)


# (facts, aspect, the reasons its failure names): what mistake triggers see
REASONS = [
    (observed([(HEAD, hyper(lr=0.01))]), "lr", {"lr-above"}),
    (observed([(HEAD, hyper(lr=0.0001))]), "lr", {"lr-below"}),
    (observed([(HEAD, hyper(lr=0.0))]), "lr", {"lr-zero"}),
    (observed([(HEAD, hyper(lr=0.0))]), "params", {"lr-zero"}),
    (observed([(HEAD, hyper(maximize=True))]), "lr", {"ascent"}),
    (observed([(HEAD + HEAD, SGD_HYPER)]), "lr", {"held-twice"}),
    (observed([(HEAD + HEAD, SGD_HYPER)]), "params", {"held-twice"}),
    (observed([(HEAD, hyper(weight_decay=0.01))]), "update", {"settings", "step-differs"}),
    (observed([(HEAD, hyper(momentum=0.9, nesterov=True))]), "update", {"settings", "step-differs"}),
    (observed([(["fc.weight"], SGD_HYPER)]), "params", {"left-out"}),
    (observed([([*HEAD, "conv1.weight"], SGD_HYPER)], frozen=("conv1.weight",)), "params", {"frozen-held"}),
    (observed(class_name=ADAM, rule=adam_step), "type", {"other-class"}),
    (observed(class_name=ADAM, rule=adam_step), "update", {"other-class", "step-differs"}),
]  # fmt: skip


@pytest.mark.parametrize(("got", "aspect", "reasons"), REASONS)
def test_a_failure_names_what_was_measured(got, aspect, reasons):
    verdict = judge(got, aspect)
    assert not verdict.passed
    assert verdict.reasons == reasons, verdict.message
    assert reasons <= optimizer.REASONS.keys()


def test_a_probe_refused_because_torch_changed_is_tampered():
    got = observed(probe_error="your code changed torch itself (x)")
    facts = got.facts.model_copy(update={"probe_reason": "tampered"})
    assert judge(Observed(facts), "update").reasons == {"tampered"}


def test_a_check_of_two_steps_tells_momentum_apart():
    two = observed(steps=2)
    verdict = judge(observed([(HEAD, hyper(momentum=0.9))], steps=2), "update", two, steps=2)
    assert not verdict.passed and verdict.reasons == {"settings", "step-differs"}
    assert verdict.message.startswith("after 2 steps from the same gradients, the second step")
    assert "momentum=0.9 (expected 0)" in verdict.message
    assert judge(observed(steps=2), "update", two, steps=2).passed
