"""finetune-optimizer, graded on free-form answers by the real harness (process backend):
"define `optimizer`: stochastic gradient descent that updates only the trainable
parameters (the new head `model.fc`), with learning rate 0.001". The checks judge one
step of a copy of the optimizer, so every spelling of a correct optimizer gets full
marks, and each mistake fails the check whose message names it."""

from __future__ import annotations

import pytest

from tests.results import assert_fails, assert_full_marks, failed_check

pytestmark = pytest.mark.slow

TASK = "finetune-optimizer"
SGD = "import torch\nimport torch.nn as nn\nimport torch.optim as optim\n"

CORRECT = {
    "head-parameters": "optimizer = optim.SGD(model.fc.parameters(), lr=0.001)",
    "one-group-dict": "optimizer = optim.SGD([{'params': model.fc.parameters()}], lr=0.001)",
    "lr-in-the-group": "optimizer = optim.SGD([{'params': model.fc.parameters(), 'lr': 0.001}])",
    "listed-one-by-one": "optimizer = optim.SGD([model.fc.weight, model.fc.bias], lr=0.001)",
    "reversed-order": "optimizer = optim.SGD([model.fc.bias, model.fc.weight], lr=1e-3)",
    "positional-lr": "optimizer = optim.SGD(list(model.fc.parameters()), 0.001)",
    "tuple": "optimizer = torch.optim.SGD(tuple(model.fc.parameters()), lr=0.001)",
    "named-comprehension": "optimizer = optim.SGD([p for n, p in model.named_parameters() if p.requires_grad], lr=0.001)",
    "generator-expression": "optimizer = optim.SGD((p for p in model.parameters() if p.requires_grad), lr=0.001)",
    "keywords-only": "optimizer = torch.optim.SGD(lr=1e-3, params=model.fc.parameters())",
    "default-lr-is-0.001": "optimizer = optim.SGD(model.fc.parameters())",
    "tensor-lr": "optimizer = optim.SGD(model.fc.parameters(), lr=torch.tensor(0.001))",
    "computed-lr": "optimizer = optim.SGD(model.fc.parameters(), lr=0.1 / 100)",
    "named-parameters": "optimizer = optim.SGD(model.fc.named_parameters(), lr=0.001)",
    "two-groups": "optimizer = optim.SGD([{'params': [model.fc.weight], 'lr': 0.001}, {'params': [model.fc.bias], 'lr': 1e-3}])",
    "add-param-group": "opt = optim.SGD([model.fc.weight], lr=0.001)\nopt.add_param_group({'params': model.fc.bias})\noptimizer = opt",
    "dict-of-trainable": "trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}\noptimizer = optim.SGD(trainable.values(), lr=0.001)",
    "helper-function": "def make_optimizer(net, rate):\n    return optim.SGD([p for p in net.parameters() if p.requires_grad], lr=rate)\n\noptimizer = make_optimizer(model, 0.001)",
    "foreach": "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, foreach=True)",
    "explicit-defaults": "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False)",
    # SGD with momentum is stochastic gradient descent at that learning rate (PyTorch's
    # fine-tuning tutorial writes it so); its first step is plain SGD's
    "momentum": "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.9)",
    "momentum-in-the-group": "optimizer = optim.SGD([{'params': model.fc.parameters(), 'momentum': 0.5, 'dampening': 0.5}], lr=0.001)",
    "extra-harmless-work": "from torch.optim import SGD\noptimizer = SGD(model.fc.parameters(), lr=0.001)\noptimizer.zero_grad()\nprint(optimizer)",
}  # fmt: skip

# id: (code, the check that fails, a fragment of its message that names the mistake)
WRONG = {
    "all-parameters": (
        "optimizer = optim.SGD(model.parameters(), lr=0.001)",
        "optimizer-params", "it also holds 60 frozen tensors (conv1.weight",
    ),
    "gradient-ascent": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, maximize=True)",
        "learning-rate", "goes along its gradient instead of against it: gradient ascent (maximize=True)",
    ),
    "head-twice": (
        "params = list(model.fc.parameters())\noptimizer = optim.SGD(params + params, lr=0.001)",
        "learning-rate", "the effective learning rate for fc.weight is 0.002, expected 0.001: it is held 2 times",
    ),
    "head-twice-held": (
        "optimizer = optim.SGD([*model.fc.parameters(), *model.fc.parameters()], lr=0.001)",
        "optimizer-params", "it holds fc.weight 2 times, expected 1 time",
    ),
    "weight-decay": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, weight_decay=5e-4)",
        "optimizer-update", "depends on its value, not only on its gradient: its settings differ: weight_decay=0.0005 (expected 0)",
    ),
    "nesterov": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.9, nesterov=True)",
        "optimizer-update", "with the learning rate 0.001 as expected: its settings differ: momentum=0.9 (expected 0), nesterov=True",
    ),
    "momentum-and-weight-decay": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.9, weight_decay=0.01)",
        "optimizer-update", "weight_decay=0.01 (expected 0)",
    ),
    "adam": (
        "optimizer = optim.Adam(model.fc.parameters(), lr=0.001)",
        "optimizer-type", "the optimizer is a torch.optim.adam.Adam, expected a torch.optim.sgd.SGD",
    ),
    "adam-steps-differently": (
        "optimizer = optim.Adam(model.fc.parameters(), lr=0.001)",
        "optimizer-update", "is not a multiple of the reference's: a torch.optim.adam.Adam steps differently",
    ),
    "rmsprop": (
        "optimizer = optim.RMSprop(model.fc.parameters(), lr=0.001)",
        "optimizer-type", "torch.optim.rmsprop.RMSprop",
    ),
    "lr-10x": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.01)",
        "learning-rate", "the effective learning rate for fc.weight is 0.01, expected 0.001",
    ),
    "lr-too-low": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=1e-4)",
        "learning-rate", "is 0.0001, expected 0.001",
    ),
    "lr-wrong-for-one-group": (
        "optimizer = optim.SGD([{'params': [model.fc.weight]}, {'params': [model.fc.bias], 'lr': 0.01}], lr=0.001)",
        "learning-rate", "the effective learning rate for fc.bias is 0.01, expected 0.001",
    ),
    "lr-changed-afterwards": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001)\nfor group in optimizer.param_groups:\n    group['lr'] = 0.01",
        "learning-rate", "is 0.01, expected 0.001",
    ),
    "lr-zero": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.0)",
        "learning-rate", "one step leaves fc.weight unchanged: its step does not move it (learning rate 0)",
    ),
    "a-frozen-parameter-held": (
        "optimizer = optim.SGD([*model.fc.parameters(), model.conv1.weight], lr=0.001)",
        "optimizer-params", "it also holds 1 frozen tensor (conv1.weight) that never change",
    ),
    "only-the-frozen-ones": (
        "optimizer = optim.SGD([p for p in model.parameters() if not p.requires_grad], lr=0.001)",
        "optimizer-params", "the optimizer updates 0 tensors, expected 2 (fc.weight, fc.bias); it leaves fc.weight, fc.bias unchanged",
    ),
    "bias-left-out": (
        "optimizer = optim.SGD([model.fc.weight], lr=0.001)",
        "optimizer-params", "it leaves fc.bias unchanged: the optimizer does not hold it",
    ),
    "everything-unfrozen": (
        "for p in model.parameters():\n    p.requires_grad = True\noptimizer = optim.SGD(model.parameters(), lr=0.001)",
        "optimizer-params", "it also updates conv1.weight, bn1.weight, bn1.bias, layer1.0.conv1.weight, ... (+56 more), which the reference leaves unchanged",
    ),
    "head-replaced-after": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001)\nmodel.fc = nn.Linear(512, 10)",
        "optimizer-update", "fc.weight does not change: the optimizer does not hold it",
    ),
    "another-models-parameters": (
        "optimizer = optim.SGD(nn.Linear(512, 10).parameters(), lr=0.001)",
        "optimizer-params", "it holds 2 tensors that are not a parameter of the model",
    ),
}  # fmt: skip


@pytest.mark.parametrize("code", CORRECT.values(), ids=CORRECT.keys())
def test_a_correct_optimizer_in_any_style_gets_full_marks(grade_fast, code):
    assert_full_marks(grade_fast(TASK, SGD + code + "\n"))


@pytest.mark.parametrize(("code", "check", "fragment"), WRONG.values(), ids=WRONG.keys())
def test_a_mistake_fails_the_check_that_names_it(grade_fast, code, check, fragment):
    assert_fails(grade_fast(TASK, SGD + code + "\n"), check, fragment, outcome="failed")


# id in WRONG: the task's mistakes it is told, exactly (each told only when measured)
TOLD = {
    "all-parameters": ["all-parameters"],
    "gradient-ascent": ["gradient-ascent"],
    "head-twice": ["parameter-twice"],
    "head-twice-held": ["parameter-twice"],
    "weight-decay": ["update-rule"],
    "nesterov": ["update-rule"],
    "momentum-and-weight-decay": ["update-rule"],
    "adam": ["not-sgd"],
    "adam-steps-differently": ["not-sgd"],
    "rmsprop": ["not-sgd"],
    "lr-10x": ["learning-rate-high"],
    "lr-too-low": ["learning-rate-low"],
    "lr-wrong-for-one-group": ["learning-rate-high"],
    "lr-changed-afterwards": ["learning-rate-high"],
    "lr-zero": ["learning-rate-zero"],
    "a-frozen-parameter-held": ["all-parameters"],
    "only-the-frozen-ones": ["all-parameters", "parameter-left-out"],
    "bias-left-out": ["parameter-left-out"],
    "everything-unfrozen": ["backbone-unfrozen"],
    "head-replaced-after": ["parameter-left-out", "stale-parameters"],
    "another-models-parameters": ["parameter-left-out", "stale-parameters"],
}


def test_every_wrong_answer_says_what_it_is_told():
    assert TOLD.keys() == WRONG.keys()


@pytest.mark.parametrize("key", WRONG.keys())
def test_a_mistake_is_told_exactly_when_the_answer_made_it(grade_fast, key):
    result = grade_fast(TASK, SGD + WRONG[key][0] + "\n")
    assert result.mistakes == TOLD[key], [(c.name, c.reasons) for c in result.checks]


@pytest.mark.parametrize("code", list(CORRECT.values())[:5], ids=list(CORRECT.keys())[:5])
def test_a_correct_optimizer_is_told_no_mistake(grade_fast, code):
    assert grade_fast(TASK, SGD + code + "\n").feedback == []


TAMPERED = {
    # a function of torch's that the step calls, rebound to the answer's own
    "rebound-helper": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.01)\n"
        "torch.jit.is_scripting = lambda: print('TRIPWIRE is_scripting') or False\n",
        "replaced code of torch's that an optimizer's step runs (`<lambda>`)",
    ),
    # a function of torch.optim's, rebound to the answer's own
    "rebound-step-function": (
        "optimizer = optim.Adam(model.fc.parameters(), lr=0.001)\n"
        "def fake(*args, **kwargs):\n    print('TRIPWIRE adam')\n"
        "import sys\nsys.modules['torch.optim.adam']._single_tensor_adam = fake\n",
        "changed torch itself (torch.optim.adam._single_tensor_adam)",
    ),
    # a kernel of the answer's for an operator the step runs
    "registered-kernel": (
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.01)\n"
        "library = torch.library.Library('aten', 'IMPL')\n"
        "def add_(self, other, alpha=1):\n    print('TRIPWIRE add_')\n    return self\n"
        "library.impl('add_.Tensor', add_, 'CPU')\n",
        "changed torch itself",
    ),
}


@pytest.mark.parametrize(("code", "fragment"), TAMPERED.values(), ids=TAMPERED.keys())
def test_an_answer_that_changed_what_the_step_runs_is_not_probed(grade_fast, code, fragment):
    result = grade_fast(TASK, SGD + code)
    assert "TRIPWIRE" not in result.stdout, result.stdout
    assert result.score < result.max_score
    assert fragment in failed_check(result, "optimizer-update").message
