"""The `optimizer` check steps a new optimizer of the answer's class and settings: what the
answer attached to the one it left (an instance `step`, hooks, global hooks, state, a
setting no later step means) is found and fails the check, and honest optimizers, plain or
with momentum, in any spelling, still get full marks. On the process backend, as
test_unforgeable.py's attacks on the optimizer."""

from __future__ import annotations

import pytest

from tests.results import assert_full_marks, failures

pytestmark = [pytest.mark.slow]

TASK = "finetune-optimizer"
ASPECTS = ("optimizer-type", "optimizer-params", "learning-rate", "optimizer-update")
PRELUDE = "import torch\nimport torch.optim as optim\nfrom torch.optim import optimizer as home\n"
HEAD = "optimizer = optim.SGD(model.fc.parameters(), lr=0.001)\n"
MOMENTUM = "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.9)\n"
BOOST = "def boost(opt, args, kwargs):\n    for p in model.fc.parameters():\n        if p.grad is not None:\n            p.grad.mul_(100)\n"  # fmt: skip

# id: (code, a fragment of each aspect's message that names what was found)
TAMPERED = {
    "instance-step": (
        HEAD + "optimizer.step = lambda closure=None: None\n",
        "`optimizer` has an attribute `step` of its own",
    ),
    "instance-step-in-dict": (
        HEAD + "optimizer.__dict__['step'] = lambda closure=None: None\n",
        "`optimizer` has an attribute `step` of its own",
    ),
    "another-own-attribute": (
        HEAD + "optimizer._optimizer_step_code = lambda: None\n",
        "`optimizer` has an attribute of its own that a new torch.optim.sgd.SGD does not have: "
        "`_optimizer_step_code`",
    ),
    "another-optimizer-s-scheduler-wrapper": (
        "other = optim.SGD(model.fc.parameters(), lr=0.1)\n"
        "scheduler = optim.lr_scheduler.StepLR(other, step_size=7)\n" + HEAD + "optimizer.step = other.step\n",
        "`optimizer` has an attribute `step` of its own",
    ),
    "step-pre-hook": (
        HEAD + BOOST + "optimizer.register_step_pre_hook(boost)\n",
        "`optimizer` carries a step pre-hook of yours (`optimizer.register_step_pre_hook`)",
    ),
    "step-post-hook": (
        HEAD
        + "def undo(opt, args, kwargs):\n    model.fc.weight.data.zero_()\n"
        + "optimizer.register_step_post_hook(undo)\n",
        "`optimizer` carries a step post-hook of yours (`optimizer.register_step_post_hook`)",
    ),
    "load-state-dict-pre-hook": (
        HEAD + "optimizer.register_load_state_dict_pre_hook(lambda opt, sd: sd)\n",
        "`optimizer` carries a `load_state_dict` pre-hook of yours",
    ),
    "state-dict-post-hook": (
        HEAD + "optimizer.register_state_dict_post_hook(lambda opt, sd: sd)\n",
        "`optimizer` carries a `state_dict` post-hook of yours",
    ),
    "hook-dict-written-directly": (
        HEAD + BOOST + "optimizer._optimizer_step_pre_hooks[10**9] = boost\n",
        "`optimizer` carries a step pre-hook of yours",
    ),
    "hook-dict-replaced": (
        HEAD
        + BOOST
        + "class Hooks(dict):\n    pass\n"
        + "optimizer._optimizer_step_pre_hooks = Hooks({1: boost})\n",
        "`optimizer`'s step pre hooks are a",
    ),
    "global-step-pre-hook": (
        HEAD + BOOST + "home.register_optimizer_step_pre_hook(boost)\n",
        "a global optimizer hook of yours is registered "
        "(`torch.optim.optimizer.register_optimizer_step_pre_hook`)",
    ),
    "global-step-post-hook": (
        HEAD
        + "def undo(opt, args, kwargs):\n    pass\n"
        + "home.register_optimizer_step_post_hook(undo)\n",
        "(`torch.optim.optimizer.register_optimizer_step_post_hook`)",
    ),
    "prefilled-momentum": (
        MOMENTUM
        + "for p in model.fc.parameters():\n"
        + "    optimizer.state[p]['momentum_buffer'] = torch.full_like(p, 1000.0)\n",
        "`optimizer` already holds state for 2 tensors (`momentum_buffer`): its next step "
        "starts from it, where a new optimizer holds none",
    ),
    "state-factory": (
        MOMENTUM
        + "optimizer.state.default_factory = lambda: {'momentum_buffer': torch.full((10, 512), 1000.0)}\n",
        "`optimizer`.state makes new entries with a factory of its own",
    ),
    "state-replaced": (
        MOMENTUM
        + "from collections import defaultdict\n"
        + "class State(defaultdict):\n    pass\n"
        + "optimizer.state = State(dict)\n",
        "`optimizer`.state is a",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("code", "fragment"), TAMPERED.values(), ids=TAMPERED.keys())
def test_what_the_answer_attached_to_its_optimizer_fails_every_aspect(grade_answer, code, fragment):
    result = grade_answer(TASK, PRELUDE + code)
    assert result.score == 0, (result.error, failures(result))
    failed = {c.name: c for c in result.checks if not c.passed}
    assert set(failed) == set(ASPECTS), (result.error, failures(result))
    for check in failed.values():
        assert fragment in check.message, check.message
        assert "tampered" in check.reasons, check.reasons


# id: (code, a fragment of the update check's message)
OUT_OF_RANGE = {
    "negative-dampening": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.5, dampening=-1000.0)\n",
        "the optimizer's dampening for fc.weight is -1000, outside what the task allows ([0, 1))",
    ),
    "negative-momentum-set-afterwards": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.5)\n"
        "optimizer.param_groups[0]['momentum'] = -0.9\n",
        "the optimizer's momentum for fc.weight is -0.9, outside what the task allows ([0, 0.99])",
    ),
    "momentum-of-one": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=1.0)\n",
        "momentum for fc.weight is 1, outside",
    ),
    "momentum-near-one-with-dampening": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.999, dampening=0.999)\n",
        "the optimizer's momentum for fc.weight is 0.999, outside what the task allows ([0, 0.99])",
    ),
    # one step with momentum is plain SGD's: the steps after it, (1 - dampening) / (1 - momentum)
    # times the gradient, are what a dampening above momentum shrinks
    "dampening-just-below-one": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.99, dampening=0.9999999)\n",
        "dampening for fc.weight is 0.9999999, above its momentum 0.99: the steps after the first are 1e-05 times",
    ),
    "dampening-above-momentum": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.5)\n"
        "optimizer.param_groups[0]['dampening'] = 0.9\n",
        "dampening for fc.weight is 0.9, above its momentum 0.5",
    ),
    "momentum-above-one": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=5)\n",
        "momentum for fc.weight is 5, outside",
    ),
    "negative-weight-decay-set-afterwards": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001)\n"
        "optimizer.param_groups[0]['weight_decay'] = -0.01\n",
        "weight_decay for fc.weight is -0.01, outside what the task allows (at least 0)",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("code", "fragment"), OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_a_setting_outside_its_meaning_fails_the_update(grade_answer, code, fragment):
    result = grade_answer(TASK, PRELUDE + code)
    assert result.score < result.max_score, result.model_dump()
    update = next(c for c in result.checks if c.name == "optimizer-update")
    assert not update.passed and fragment in update.message, update.message
    assert "out-of-range" in update.reasons, update.reasons


HONEST = {
    "plain": HEAD,
    "momentum": MOMENTUM,
    "momentum-0.99": "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.99)\n",
    "momentum-and-dampening": "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.5, dampening=0.5)\n",
    "dampening-below-momentum": "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.99, dampening=0.9)\n",
    "filter": "optimizer = optim.SGD(filter(lambda p: p.requires_grad, model.parameters()), lr=0.001)\n",
    "list": "optimizer = optim.SGD(list(model.fc.parameters()), lr=0.001)\n",
    "param-groups": "optimizer = optim.SGD([{'params': [model.fc.weight]}, {'params': [model.fc.bias]}], lr=0.001)\n",
    "keywords": "optimizer = optim.SGD(params=model.fc.parameters(), lr=1e-3)\n",
    "fused": "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, fused=True)\n",
    # reading a tensor's state makes an empty entry: not a state of its own
    "state-read": MOMENTUM + "print(optimizer.state[model.fc.weight])\n",
    "zeroed-saved-loaded": MOMENTUM + "optimizer.zero_grad()\noptimizer.load_state_dict(optimizer.state_dict())\n",
    "hook-registered-and-removed": HEAD + "handle = optimizer.register_step_pre_hook(lambda *a: None)\nhandle.remove()\n",
    "global-hook-registered-and-removed": HEAD + "handle = home.register_optimizer_step_pre_hook(lambda *a: None)\nhandle.remove()\n",
    # the PyTorch fine-tuning tutorial's: a scheduler wraps the step (torch's own wrapper)
    "step-lr-scheduler": HEAD + "scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)\n",
    "another-optimizer-with-a-hook": HEAD + "other = optim.SGD(model.fc.parameters(), lr=0.1)\nother.register_step_pre_hook(lambda *a: None)\n",
}  # fmt: skip


@pytest.mark.parametrize("code", HONEST.values(), ids=HONEST.keys())
def test_an_honest_optimizer_still_gets_full_marks(grade_answer, code):
    assert_full_marks(grade_answer(TASK, PRELUDE + code))
