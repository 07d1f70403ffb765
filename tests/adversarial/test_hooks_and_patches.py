"""Answers that leave the model's state right but change what training with it does: a hook
on a parameter's gradient, a module hook where only the freeze checks looked for one, a
change of torch's own code, an optimizer setting no later step means. Each fails (the
checks say the structure was tampered with, or the setting is out of range); the honest
answers beside them still get full marks. On the process backend, as test_unforgeable.py's."""

from __future__ import annotations

import pytest

from tests.results import assert_full_marks, failures

pytestmark = [pytest.mark.slow]

HEAD = "import torch.nn as nn\nmodel.fc = nn.Linear(model.fc.in_features, 10)\n"
LOAD = "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\n"
SGD = "import torch.optim as optim\noptimizer = optim.SGD(model.fc.parameters(), lr=0.001)\n"
FREEZE = "for p in model.parameters():\n    p.requires_grad = False\n"


def assert_tampered(result, checks, fragment: str) -> None:
    """Fewer than all points, and each of `checks` failed with `fragment` in its message."""
    failed = failures(result)
    assert result.score < result.max_score, result.model_dump_json(indent=2)
    for name in checks:
        assert name in failed, (name, failed)
        assert fragment in failed[name], (name, failed[name])


# --- 1. hooks on parameters' gradients --------------------------------------------------

GRADIENT_HOOKS = {
    "zeroed-head-gradient": (
        "finetune-replace-head",
        HEAD + "for p in model.fc.parameters():\n    p.register_hook(lambda g: g * 0)\n",
        ("backbone", "backbone-frozen", "new-head"),
        "a hook is registered on the gradient of `fc.weight`",
    ),
    "post-accumulate-after-loading": (
        "finetune-load-pretrained",
        LOAD + "for p in model.parameters():\n"
        "    p.register_post_accumulate_grad_hook(lambda t: t.grad.zero_() and None)\n",
        ("architecture", "pretrained"),
        "a hook is registered on the gradient of `conv1.weight`",
    ),
    "optimizer-head-gradient": (
        "finetune-optimizer",
        SGD + "model.fc.weight.register_hook(lambda g: g * 100)\n",
        ("optimizer-type", "optimizer-params", "learning-rate", "optimizer-update"),
        "a hook is registered on the gradient of `fc.weight`",
    ),
}


@pytest.mark.parametrize(
    ("task", "code", "checks", "fragment"), GRADIENT_HOOKS.values(), ids=GRADIENT_HOOKS.keys()
)
def test_a_hook_on_a_parameters_gradient_is_tampering(grade_answer, task, code, checks, fragment):
    assert_tampered(grade_answer(task, code), checks, fragment)


# --- 2. module hooks, in every check that reads the model --------------------------------

MODULE_HOOKS = {
    # the optimizer's learning rate rewritten whenever the head runs
    "lr-rewritten-by-a-forward-pre-hook": (
        "finetune-optimizer",
        SGD + "def fast(module, inputs):\n"
        "    for group in optimizer.param_groups:\n        group['lr'] = 0.1\n"
        "model.fc.register_forward_pre_hook(fast)\n",
        ("optimizer-type", "optimizer-params", "learning-rate", "optimizer-update"),
        "a hook is registered on `fc`",
    ),
    "backward-hook-after-loading": (
        "finetune-load-pretrained",
        LOAD + "model.layer1.register_full_backward_hook(lambda m, gi, go: None)\n",
        ("architecture", "pretrained"),
        "a hook is registered on `layer1`",
    ),
}


@pytest.mark.parametrize(
    ("task", "code", "checks", "fragment"), MODULE_HOOKS.values(), ids=MODULE_HOOKS.keys()
)
def test_a_module_hook_fails_every_check_that_reads_the_model(
    grade_answer, task, code, checks, fragment
):
    assert_tampered(grade_answer(task, code), checks, fragment)


# --- 3. a change of torch's own code fails every check ---------------------------------

TORCH_PATCHES = {
    "module-train": (
        "finetune-freeze",
        FREEZE + "import torch\ntorch.nn.Module.train = lambda self, mode=True: self\n",
        ("frozen", "weights-intact", "same-model"),
    ),
    "optimizer-init": (
        "finetune-replace-head",
        HEAD + "import torch\nreal = torch.optim.Optimizer.__init__\n"
        "def init(self, params, defaults):\n"
        "    real(self, params, dict(defaults, lr=0.0))\n"
        "torch.optim.Optimizer.__init__ = init\n",
        ("backbone", "backbone-frozen", "new-head"),
    ),
}


@pytest.mark.parametrize(
    ("task", "code", "checks"), TORCH_PATCHES.values(), ids=TORCH_PATCHES.keys()
)
def test_a_change_of_torch_fails_every_check(grade_answer, task, code, checks):
    result = grade_answer(task, code)
    assert result.score == 0, result.model_dump_json(indent=2)
    assert all(not c.passed for c in result.checks), failures(result)
    assert_tampered(result, checks, "changed torch itself")


# --- 4. dampening 1 with momentum --------------------------------------------------------


def test_dampening_one_with_momentum_is_out_of_range(grade_answer):
    code = (
        "import torch.optim as optim\n"
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.9, dampening=1.0)\n"
    )
    result = grade_answer("finetune-optimizer", code)
    assert_tampered(result, ("optimizer-update",), "outside the range it has a meaning in ([0, 1))")


# --- 5. a method of the model shadowed on its instance ------------------------------------

SHADOWED = """
model.requires_grad_(False)
import torch.nn as nn
_train = nn.Module.train
def train(mode=True):  # unfreezes the model when the training starts
    model.requires_grad_(True)
    return _train(model, mode)
model.{name} = train
"""


@pytest.mark.parametrize("name", ["train", "requires_grad_", "parameters"])
def test_a_method_of_the_model_replaced_on_its_instance_is_tampering(grade_answer, name):
    result = grade_answer("finetune-freeze", SHADOWED.format(name=name))
    assert result.score == 0, result.model_dump_json(indent=2)
    assert_tampered(result, ("frozen",), f"`{name}` of the model was replaced on the instance")


# --- honest answers -----------------------------------------------------------------------

HONEST = {
    "freeze-loop": ("finetune-freeze", FREEZE),
    "replace-head": ("finetune-replace-head", HEAD),
    "replace-head-hook-removed": (
        "finetune-replace-head",
        HEAD + "handle = model.fc.weight.register_hook(lambda g: g)\nhandle.remove()\n",
    ),
    "load-default": ("finetune-load-pretrained", LOAD),
    "optimizer-momentum": (
        "finetune-optimizer",
        "import torch.optim as optim\n"
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.9)\n",
    ),
    "optimizer-dampening": (
        "finetune-optimizer",
        "import torch.optim as optim\n"
        "optimizer = optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.9, dampening=0.5)\n",
    ),
}


@pytest.mark.parametrize(("task", "code"), HONEST.values(), ids=HONEST.keys())
def test_an_honest_answer_still_gets_full_marks(grade_answer, task, code):
    assert_full_marks(grade_answer(task, code))
