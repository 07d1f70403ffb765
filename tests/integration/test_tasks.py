"""Each bundled code task, graded on free-form answers: correct styles get full marks,
natural mistakes get less with feedback that names them. Runs the real harness in the
process backend."""

from __future__ import annotations

import pytest

from tests.results import failed_check, full_marks

pytestmark = pytest.mark.slow


# --- finetune-load-pretrained ------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "from torchvision import models\nmodel = models.resnet18(pretrained=True)\n",
        "import torchvision\nmodel = torchvision.models.resnet18(weights='IMAGENET1K_V1')\n",
        "from torchvision.models import resnet18, ResNet18_Weights\nmodel = resnet18(weights=ResNet18_Weights.DEFAULT)\n",
        "import torch, torchvision\nnet = torchvision.models.resnet18()\n"
        "net.load_state_dict(torchvision.models.ResNet18_Weights.DEFAULT.get_state_dict(progress=False))\nmodel = net\n",
    ],
    ids=["pretrained-true", "weights-string", "weights-enum", "state-dict-loaded"],
)
def test_load_pretrained_correct_styles(grade_answer, code):
    result = grade_answer("finetune-load-pretrained", code)
    assert full_marks(result), result.model_dump()


def test_load_pretrained_random_weights_named(grade_answer):
    result = grade_answer(
        "finetune-load-pretrained", "import torchvision\nmodel = torchvision.models.resnet18()\n"
    )
    assert result.outcome == "failed" and result.score < result.max_score
    assert "differ from the pre-trained weights" in failed_check(result, "pretrained").message
    assert any("pretrained=False will initialize random weights" in f for f in result.feedback)


def test_load_pretrained_other_architecture_cannot_download(grade_answer):
    result = grade_answer(
        "finetune-load-pretrained",
        "import torchvision\nmodel = torchvision.models.resnet34(weights='DEFAULT')\n",
    )
    assert result.outcome == "runtime_error" and result.score == 0
    assert result.error and "line 2" in result.error


# --- finetune-replace-head ---------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 10)\n",
        "import torch\nsetattr(model, 'fc', torch.nn.Linear(in_features=model.fc.in_features, out_features=10, bias=True))\n",
        "from torch import nn\nhead = nn.Linear(model.fc.weight.shape[1], 10)\nmodel.fc = head\n",
    ],
    ids=["literal", "setattr", "from-weight-shape"],
)
def test_replace_head_correct_styles(grade_answer, code):
    result = grade_answer("finetune-replace-head", code)
    assert full_marks(result), result.model_dump()


def test_replace_head_wrong_class_count_named(grade_answer):
    result = grade_answer(
        "finetune-replace-head", "import torch.nn as nn\nmodel.fc = nn.Linear(512, 100)\n"
    )
    assert result.score < result.max_score
    assert "[2, 100]" in failed_check(result, "head-shape").message
    assert any("10 outputs, one per class" in f for f in result.feedback)


def test_replace_head_wrong_layer_named(grade_answer):
    code = "import torch.nn as nn\nmodel.layer4 = nn.Sequential()\nmodel.fc = nn.Linear(256, 10)\n"
    result = grade_answer("finetune-replace-head", code)
    assert result.score < result.max_score
    assert "backbone's layers changed" in failed_check(result, "backbone").message
    assert any("Replace only the last fully connected layer" in f for f in result.feedback)


def test_replace_head_attribute_edit_has_no_effect(grade_answer):
    result = grade_answer("finetune-replace-head", "model.fc.out_features = 10\n")
    assert result.score == 0
    assert "[2, 1000]" in failed_check(result, "head-shape").message


# --- finetune-optimizer ------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "import torch.optim as optim\noptimizer = optim.SGD(model.fc.parameters(), lr=0.001)\n",
        "import torch\noptimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)\n",
        "import torch\noptimizer = torch.optim.SGD([{'params': [model.fc.weight]}, {'params': [model.fc.bias]}], lr=0.001)\n",
    ],
    ids=["head-params", "comprehension-momentum", "two-groups"],
)
def test_optimizer_correct_styles(grade_answer, code):
    result = grade_answer("finetune-optimizer", code)
    assert full_marks(result), result.model_dump()


def test_optimizer_all_parameters_named(grade_answer):
    result = grade_answer(
        "finetune-optimizer",
        "import torch\noptimizer = torch.optim.SGD(model.parameters(), lr=0.001)\n",
    )
    message = failed_check(result, "optimizer-params").message
    assert "60 frozen tensors" in message and "conv1.weight" in message
    assert any("frozen layers to update unnecessarily" in f for f in result.feedback)
    assert 0 < result.score < result.max_score


def test_optimizer_lr_in_param_group_named(grade_answer):
    code = "import torch\noptimizer = torch.optim.SGD([{'params': model.fc.parameters(), 'lr': 0.01}], lr=0.001)\n"
    result = grade_answer("finetune-optimizer", code)
    assert "is 0.01, expected 0.001" in failed_check(result, "learning-rate").message
    assert any("too high learning rate" in f for f in result.feedback)


def test_optimizer_not_an_optimizer(grade_answer):
    result = grade_answer("finetune-optimizer", "optimizer = 'sgd'\n")
    assert result.score == 0
    assert "should be a torch.optim.Optimizer" in failed_check(result, "optimizer-type").message


# --- finetune-train-epoch ----------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        # zero_grad at the end of the iteration, on the model rather than the optimizer
        "model.train()\nfor x, y in dataloader:\n    loss = criterion(model(x), y)\n    loss.backward()\n"
        "    optimizer.step()\n    model.zero_grad()\n",
        # enumerate, the functional loss, set_to_none=False
        "import torch.nn.functional as F\nmodel.train()\nfor i, (images, targets) in enumerate(dataloader):\n"
        "    optimizer.zero_grad(set_to_none=False)\n    loss = F.cross_entropy(model(images), targets)\n"
        "    torch.autograd.backward(loss)\n    optimizer.step()\n",
        # a helper function and an explicit iterator
        "def train_step(batch):\n    inputs, labels = batch\n    optimizer.zero_grad()\n"
        "    criterion(model(inputs), labels).backward()\n    optimizer.step()\n\n"
        "model.train()\nit = iter(dataloader)\nfor _ in range(len(dataloader)):\n    train_step(next(it))\n",
    ],
    ids=["zero-grad-last", "functional-loss", "helper-function"],
)
def test_train_epoch_correct_styles(grade_answer, code):
    result = grade_answer("finetune-train-epoch", code)
    assert full_marks(result), result.model_dump()


def test_train_epoch_missing_zero_grad_named(grade_answer):
    code = "model.train()\nfor x, y in dataloader:\n    criterion(model(x), y).backward()\n    optimizer.step()\n"
    result = grade_answer("finetune-train-epoch", code)
    assert (
        "gradients from an earlier batch were still there"
        in failed_check(result, "step-order").message
    )
    assert any("optimizer.zero_grad()" in f for f in result.feedback)
    assert result.score < result.max_score


def test_train_epoch_step_before_backward_named(grade_answer):
    code = (
        "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n    loss = criterion(model(x), y)\n"
        "    optimizer.step()\n    loss.backward()\n"
    )
    result = grade_answer("finetune-train-epoch", code)
    assert (
        "optimizer.step() ran before loss.backward()" in failed_check(result, "step-order").message
    )
    assert result.score < result.max_score


def test_train_epoch_one_batch_and_two_epochs_named(grade_answer):
    one = (
        "model.train()\nx, y = next(iter(dataloader))\noptimizer.zero_grad()\n"
        "criterion(model(x), y).backward()\noptimizer.step()\n"
    )
    result = grade_answer("finetune-train-epoch", one)
    assert "consumed 1 of 8 batches" in failed_check(result, "all-batches").message
    assert any("every batch of the data loader exactly once" in f for f in result.feedback)
    two = (
        "model.train()\nfor epoch in range(2):\n    for x, y in dataloader:\n        optimizer.zero_grad()\n"
        "        criterion(model(x), y).backward()\n        optimizer.step()\n"
    )
    result = grade_answer("finetune-train-epoch", two)
    assert "consumed 16 batches" in failed_check(result, "all-batches").message
    assert "differs from one correct epoch" in failed_check(result, "final-weights").message


def test_train_epoch_a_hook_left_on_the_model_fails_only_the_final_weights(grade_answer):
    """A hook left after a correct epoch (one that wipes the head whenever the model runs)
    is code the trained model now runs: the final weights fail as tampered, and the loop's
    own aspects, read from its record and its loss on the setup's copy, still pass."""
    code = (
        "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
        "    criterion(model(x), y).backward()\n    optimizer.step()\n"
        "def wipe(module, inputs, output):\n    module.fc.weight.data.zero_()\n\n"
        "model.register_forward_hook(wipe)\n"
    )
    result = grade_answer("finetune-train-epoch", code)
    failed = {c.name: c for c in result.checks if not c.passed}
    assert set(failed) == {"final-weights"}, result.model_dump()
    assert "tampered" in failed["final-weights"].reasons
    assert "after the epoch, a hook is registered on the model" in failed["final-weights"].message


def test_train_epoch_replaced_model_gets_no_credit(grade_answer):
    code = (
        "import torch.nn as nn\nmodel = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\nfor x, y in dataloader:\n"
        "    opt.zero_grad()\n    criterion(model(x), y).backward()\n    opt.step()\n"
    )
    result = grade_answer("finetune-train-epoch", code)
    assert result.score < result.max_score
    assert "was replaced by another object" in failed_check(result, "final-weights").message


# --- multiple choice and the task beyond the seed ----------------------------------


def test_choice_graded_by_key_with_explanation(grade_answer):
    right = grade_answer("quiz-requires-grad-sum", choice="c")
    wrong = grade_answer("quiz-requires-grad-sum", choice="B")
    assert right.outcome == "passed" and right.score == 1
    assert wrong.outcome == "failed" and wrong.score == 0
    assert any("counts the True values" in f for f in wrong.feedback)
    assert grade_answer("quiz-requires-grad-sum", choice="Z").score == 0


def test_mobilenet_classifier_addressed_by_path(grade_answer):
    good = grade_answer(
        "mobilenet-replace-classifier",
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 5)\n",
    )
    assert full_marks(good), good.model_dump()
    habit = grade_answer(
        "mobilenet-replace-classifier", "import torch.nn as nn\nmodel.fc = nn.Linear(1280, 5)\n"
    )
    assert habit.score == 0
    assert any("MobileNetV2 has no `fc` layer" in f for f in habit.feedback)
