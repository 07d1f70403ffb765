"""The `optimizer` check's judge, on hand-made facts: what one step of an optimizer did to
each parameter, as the observer reports it, for the reference (SGD, lr 0.001, over the
head `fc`) and for answers with one mistake each, no sandbox, no torch; and, in process on
a small model, what the observer finds attached to an optimizer."""

from __future__ import annotations

import gc

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


def tampered(*found: str) -> Observed:
    """The reference's facts, with what the observer found attached to the optimizer."""
    return Observed(
        REFERENCE.facts.model_copy(update={"tampering": list(found)}), REFERENCE.tensors
    )


@pytest.mark.parametrize("aspect", ASPECTS)
def test_an_optimizer_the_answer_attached_to_fails_every_aspect(aspect):
    """The probe steps a new optimizer, which is not the one the answer left: its facts,
    although the reference's, earn nothing once something was found attached to it."""
    found = "`optimizer` has an attribute `step` of its own: it shadows SGD's step"
    verdict = judge(tampered(found, "`optimizer` carries a step pre-hook of yours"), aspect)
    assert not verdict.passed and verdict.reasons == {"tampered"}
    assert verdict.message.startswith(found), verdict.message
    assert "step pre-hook" in verdict.message


@pytest.mark.parametrize("found", [["x"] * 9, ["x" * 501]], ids=["too-many", "too-long"])
def test_what_was_found_is_bounded(found):
    facts = REFERENCE.facts.model_dump() | {"tampering": found}
    with pytest.raises(ValueError):
        optimizer.Facts.model_validate(facts)


# (settings, a fragment of the update's failure): each outside what SGD at the task's rate allows
OUT_OF_RANGE = [
    (hyper(momentum=0.5, dampening=-1000.0), "dampening for fc.weight is -1000, outside what the task allows ([0, 1))"),
    (hyper(momentum=0.5, dampening=1.5), "dampening for fc.weight is 1.5"),
    (hyper(momentum=0.9, dampening=1.0), "dampening for fc.weight is 1,"),  # gradients unused
    (hyper(momentum=-0.9), "momentum for fc.weight is -0.9, outside what the task allows ([0, 0.99])"),
    (hyper(momentum=1.0), "momentum for fc.weight is 1,"),
    (hyper(momentum=float("nan")), "momentum for fc.weight is nan"),
    (hyper(momentum=True), "momentum for fc.weight is True"),
    (hyper(momentum=0.999), "momentum for fc.weight is 0.999, outside what the task allows ([0, 0.99])"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "fragment"), OUT_OF_RANGE)
def test_a_setting_outside_what_the_task_allows_fails_the_update_alone(settings, fragment):
    """SGD's first step with momentum is plain SGD's, whatever its momentum and dampening:
    the probe's one step passes, the setting's value fails it."""
    got = observed([(HEAD, settings)])
    verdict = judge(got, "update")
    assert not verdict.passed and verdict.reasons == {"out-of-range"}, verdict
    assert fragment in verdict.message, verdict.message
    for aspect in ("type", "params", "lr"):
        assert judge(got, aspect).passed, aspect


def test_a_negative_weight_decay_names_its_range_and_the_step():
    verdict = judge(observed([(HEAD, hyper(weight_decay=-0.01))]), "update")
    assert not verdict.passed
    assert verdict.reasons == {"out-of-range", "settings", "step-differs"}, verdict.reasons
    assert verdict.message.startswith(
        "the optimizer's weight_decay for fc.weight is -0.01, outside what the task allows "
        "(at least 0)"
    ), verdict.message


@pytest.mark.parametrize(
    "settings",
    [hyper(momentum=0.9), hyper(momentum=0.99), hyper(momentum=0.5, dampening=0.5),
     hyper(momentum=0.5, dampening=0.0),
     hyper(weight_decay=0.0)],
)  # fmt: skip
def test_a_setting_the_task_allows_passes(settings):
    assert judge(observed([(HEAD, settings)]), "update").passed


def test_a_setting_the_reference_has_is_not_out_of_range():
    odd = observed([(HEAD, hyper(momentum=1.0))])
    assert judge(odd, "update", expected=odd).passed


# --- the observer's findings, in process, beside the training loop's instrumentation -----


def observe_optimizer(code: str, first: str = "optimizer", steps: bool = True) -> dict:
    """Prepare an optimizer check and the training loop's (in the order `first` says) on a
    small model whose setup made `optimizer`, run `code` as the answer, observe the optimizer."""
    import torch

    from contract.checks.optimizer import Params as OptimizerParams
    from contract.checks.training_loop import Params as LoopParams
    from sandboxed import introspect, observe
    from sandboxed.harness import ObserveContext

    backward = torch.autograd.backward
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
        model[0].requires_grad_(False)
        data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
        scope = {
            "model": model,
            "optimizer": torch.optim.SGD(model[1].parameters(), lr=0.1, momentum=0.9),
            "criterion": torch.nn.CrossEntropyLoss(),
            "dataloader": torch.utils.data.DataLoader(data, batch_size=4),
            "torch": torch,
        }
        shared: dict = {}
        checks = [
            (observe.optimizer, OptimizerParams(name="o", type="optimizer", aspect="update")),
            (observe.training_loop, LoopParams(name="t", type="training_loop", aspect="batches")),
        ]
        for module, check in checks if first == "optimizer" else checks[::-1]:
            module.prepare(ObserveContext(scope, 0, introspect, shared), check)
        epoch = (
            "for x, y in dataloader:\n    optimizer.zero_grad()\n"
            "    criterion(model(x), y).backward()\n    optimizer.step()\n"
        )
        exec(code + (epoch if steps else ""), scope)
        return observe.optimizer.observe(ObserveContext(scope, 0, introspect, shared), checks[0][1])
    finally:
        torch.autograd.backward = backward
        gc.enable()


@pytest.mark.parametrize("first", ["optimizer", "training_loop"])
def test_the_grader_s_own_hook_and_the_setup_s_optimizer_state_are_not_the_answer_s(first):
    """The training loop's instrumentation hooks the setup's optimizer, which the epoch fills
    with momentum: neither is found, whichever check was prepared first."""
    assert observe_optimizer("", first)["tampering"] == []


@pytest.mark.parametrize("first", ["optimizer", "training_loop"])
def test_a_hook_of_the_answer_s_beside_the_grader_s_is_found(first):
    found = observe_optimizer("optimizer.register_step_pre_hook(lambda *a: None)\n", first)
    assert found["tampering"] == [
        "`optimizer` carries a step pre-hook of yours (`optimizer.register_step_pre_hook`), "
        "which a new optimizer does not: it runs with each step"
    ]


ANSWER_MADE = {
    "instance-step": (
        "optimizer.step = lambda closure=None: None\n",
        "`optimizer` has an attribute `step` of its own: it shadows torch.optim.sgd.SGD's step",
    ),
    "global-hook": (
        "from torch.optim import optimizer as home\nh = home.register_optimizer_step_post_hook(lambda *a: None)\n",
        "a global optimizer hook of yours is registered (`torch.optim.optimizer.register_optimizer_step_post_hook`)",
    ),
    "prefilled-state": (
        "optimizer.state[model[1].bias]['momentum_buffer'] = torch.ones(3)\n",
        "`optimizer` already holds state for 1 tensor (`momentum_buffer`)",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("code", "fragment"), ANSWER_MADE.values(), ids=ANSWER_MADE.keys())
def test_what_is_attached_to_an_optimizer_the_answer_made_is_found(code, fragment):
    new = "optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1, momentum=0.9)\n"
    try:
        found = observe_optimizer(new + code, steps=False)["tampering"]
    finally:
        import torch.optim.optimizer as home

        home._global_optimizer_post_hooks.clear()
    assert len(found) == 1 and found[0].startswith(fragment), found
    assert observe_optimizer(new, steps=False)["tampering"] == []


SCHEDULED = {
    # the PyTorch fine-tuning tutorial's: a scheduler wraps the optimizer's step to count it
    "step-lr": ("optimizer.zero_grad()\nscheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)\n", []),
    "stepped-through-the-wrapper": (
        "scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7)\n"
        "model(torch.ones(1, 4)).sum().backward()\noptimizer.step()\noptimizer.zero_grad()\n",
        [],  # (`_opt_called`, which the wrapper sets: torch's too)
    ),
    "another-optimizer-s-wrapper": (
        "other = torch.optim.SGD(model[1].parameters(), lr=10.0)\n"
        "scheduler = torch.optim.lr_scheduler.StepLR(other, step_size=7)\noptimizer.step = other.step\n",
        ["`optimizer` has an attribute `step` of its own"],
    ),
}  # fmt: skip


@pytest.mark.parametrize(("code", "found"), SCHEDULED.values(), ids=SCHEDULED.keys())
def test_a_learning_rate_scheduler_s_wrapper_is_torch_s_own(code, found):
    new = "optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1)\n"
    tampering = observe_optimizer(new + code, steps=False)["tampering"]
    assert [text[: len(f)] for text, f in zip(tampering, found, strict=False)] == found, tampering
    assert len(tampering) == len(found), tampering
