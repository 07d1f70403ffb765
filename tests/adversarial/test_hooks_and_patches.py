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
    assert_tampered(result, ("optimizer-update",), "outside what the task allows ([0, 1))")


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


# --- 6. torchvision's or torch's layer classes changed ------------------------------------

UNFREEZE = "    for p in self.parameters():\n        p.requires_grad_(True)\n"

CLASS_PATCHES = {
    # a block's forward that unfreezes the backbone whenever the model is trained
    "block-forward-replaced": (
        "finetune-freeze",
        FREEZE + "import torchvision.models.resnet as r\nforward = r.BasicBlock.forward\n"
        "def unfreezing(self, x):\n" + UNFREEZE + "    return forward(self, x)\n"
        "r.BasicBlock.forward = unfreezing\n",
        ("frozen", "weights-intact", "same-model"),
        "torchvision.models.resnet.BasicBlock.forward",
    ),
    # a method added to the model's class, shadowing the one it inherits from nn.Module
    "call-added-to-resnet": (
        "finetune-replace-head",
        HEAD + "import torch.nn\nimport torchvision.models.resnet as r\n"
        "def call(self, *args, **kwargs):\n"
        + UNFREEZE
        + "    return torch.nn.Module.__call__(self, *args, **kwargs)\n"
        "r.ResNet.__call__ = call\n",
        ("backbone", "backbone-frozen", "new-head"),
        "torchvision.models.resnet.ResNet.__call__",
    ),
    "linear-forward-replaced": (
        "mobilenet-replace-classifier",
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(model.last_channel, 5)\n"
        "forward = nn.Linear.forward\n"
        "def scaled(self, x):\n    return forward(self, x) * 0\nnn.Linear.forward = scaled\n",
        ("classifier-shape", "backbone", "backbone-frozen", "new-head"),
        "torch.nn.modules.linear.Linear.forward",
    ),
    "forward-replaced-after-loading": (
        "finetune-load-pretrained",
        LOAD + "import torchvision.models.resnet as r\n"
        "r.ResNet._forward_impl = lambda self, x: x\n",
        ("is-resnet18", "architecture", "pretrained"),
        "torchvision.models.resnet.ResNet._forward_impl",
    ),
}


@pytest.mark.parametrize(
    ("task", "code", "checks", "name"), CLASS_PATCHES.values(), ids=CLASS_PATCHES.keys()
)
def test_a_changed_layer_class_fails_every_check(grade_answer, task, code, checks, name):
    result = grade_answer(task, code)
    assert result.score == 0, result.model_dump_json(indent=2)
    assert_tampered(result, checks, f"changed torch itself ({name}")


def test_a_layer_methods_code_cannot_be_swapped(grade_answer):
    """A function's code replaced in place (the class still holds the same function)."""
    code = (
        FREEZE + "import torchvision.models.resnet as r\n"
        "def unfreezing(self, x):\n" + UNFREEZE + "    return x\n"
        "r.ResNet._forward_impl.__code__ = unfreezing.__code__\n"
    )
    result = grade_answer("finetune-freeze", code)
    assert result.score == 0, result.model_dump_json(indent=2)
    assert "changing the code of the grader or of torch is not available" in str(
        result.model_dump()
    ), result.model_dump_json(indent=2)


# --- 7. a layer of a class the answer defined, in a model whose freeze is graded ---------

ANSWER_CLASSES = {
    # the new head's forward unfreezes the backbone the first time it is trained
    "head-subclass-unfreezes": (
        "finetune-replace-head",
        "import torch.nn as nn\n"
        "class Head(nn.Linear):\n    def forward(self, x):\n"
        "        model.requires_grad_(True)\n        return super().forward(x)\n"
        "model.fc = Head(model.fc.in_features, 10)\n",
        ("backbone-frozen", "new-head"),
        "`fc` is a Head (defined by your code), a class with code of its own",
    ),
    # the model's class swapped for a subclass whose forward unfreezes it
    "model-class-swapped": (
        "finetune-freeze",
        FREEZE
        + "class Unfreezing(type(model)):\n    def forward(self, x):\n"
        + "        self.requires_grad_(True)\n        return super().forward(x)\n"
        + "model.__class__ = Unfreezing\n",
        ("frozen",),
        "the model is a Unfreezing (defined by your code), a class with code of its own",
    ),
    # the code in a mixin placed before the block's class: the new class itself holds none
    "block-class-with-a-mixin": (
        "mobilenet-replace-classifier",
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(model.last_channel, 5)\n"
        "class Mixin:\n    def train(self, mode=True):\n"
        "        model.requires_grad_(True)\n        return nn.Module.train(self, mode)\n"
        "block = model.features[1]\n"
        "block.__class__ = type('Block', (Mixin, type(block)), {})\n",
        ("backbone-frozen",),
        "`features.1` is a Mixin (defined by your code), a class with code of its own",
    ),
}


@pytest.mark.parametrize(
    ("task", "code", "checks", "fragment"), ANSWER_CLASSES.values(), ids=ANSWER_CLASSES.keys()
)
def test_a_layer_of_the_answers_class_is_tampering(grade_answer, task, code, checks, fragment):
    assert_tampered(grade_answer(task, code), checks, fragment)


# --- honest answers -----------------------------------------------------------------------

HONEST = {
    "freeze-loop": ("finetune-freeze", FREEZE),
    "replace-head": ("finetune-replace-head", HEAD),
    "replace-head-hook-removed": (
        "finetune-replace-head",
        HEAD + "handle = model.fc.weight.register_hook(lambda g: g)\nhandle.remove()\n",
    ),
    "load-default": ("finetune-load-pretrained", LOAD),
    # a class of the answer's that only names torch's layer holds no code of its own
    "replace-head-renamed-linear": (
        "finetune-replace-head",
        "import torch.nn as nn\nclass Head(nn.Linear):\n    pass\n"
        "model.fc = Head(model.fc.in_features, 10)\n",
    ),
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


# --- 8. code set where torch calls it, memory shared, settings that move ---------------

UNFREEZE_ALL = "def unfreeze(*args, **kwargs):\n    model.requires_grad_(True)\n"

WHERE_TORCH_CALLS = {
    # `model.to(device)` calls each parameter's `to`
    "a-parameters-to": (
        "finetune-freeze",
        FREEZE + UNFREEZE_ALL + "for p in model.parameters():\n"
        "    p.to = lambda *a, _p=p, **k: (unfreeze(), torch.Tensor.to(_p, *a, **k))[1]\n",
        ("frozen",),
        "has attributes of its own (`to`)",
    ),
    "a-compiled-call": (
        "finetune-freeze",
        FREEZE + UNFREEZE_ALL + "model._compiled_call_impl = lambda *a, **k: "
        "(unfreeze(), model._call_impl(*a, **k))[1]\n",
        ("frozen",),
        "`_compiled_call_impl`",
    ),
    "a-global-registration-hook": (
        "finetune-freeze",
        FREEZE + UNFREEZE_ALL + "from torch.nn.modules.module import "
        "register_module_buffer_registration_hook as register\n"
        "register(lambda *a: unfreeze())\n",
        ("frozen",),
        "a global module hook is registered",
    ),
    "a-state-dict-hook": (
        "finetune-freeze",
        FREEZE + UNFREEZE_ALL + "model.register_state_dict_pre_hook(lambda *a: unfreeze())\n",
        ("frozen",),
        "a hook is registered on the model",
    ),
    "a-head-sharing-a-backbone-weight": (
        "finetune-replace-head",
        "import torch.nn as nn\nshared = model.layer4[1].conv2.weight.detach().view(-1)\n"
        "model.fc = nn.Linear(512, 10)\n"
        "model.fc.weight = nn.Parameter(shared[: 10 * 512].view(10, 512))\n",
        ("backbone-frozen",),
        "shares its memory with `layer4.1.conv2.weight`",
    ),
    "defaults-differentiable": (
        "finetune-optimizer",
        SGD + "optimizer.defaults['differentiable'] = True\n",
        ("optimizer-type", "learning-rate"),
        "defaults['differentiable']",
    ),
    "a-learning-rate-in-a-buffer": (
        "finetune-optimizer",
        "import torch, torch.optim as optim\nrm = model.layer1[0].bn1.running_mean\n"
        "with torch.no_grad():\n    rm[0] = 0.001\n"
        "optimizer = optim.SGD(model.fc.parameters(), lr=rm[0])\n",
        ("optimizer-type", "learning-rate"),
        "shares its memory with `layer1.0.bn1.running_mean`",
    ),
}


@pytest.mark.parametrize(
    ("task", "code", "checks", "fragment"),
    WHERE_TORCH_CALLS.values(),
    ids=WHERE_TORCH_CALLS.keys(),
)
def test_code_torch_calls_or_memory_the_weights_share_is_tampering(
    grade_answer, task, code, checks, fragment
):
    assert_tampered(grade_answer(task, "import torch\n" + code), checks, fragment)
