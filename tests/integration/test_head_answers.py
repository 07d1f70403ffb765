"""Replacing a pre-trained model's head, graded on free-form answers in the real harness
(process backend): correct answers in styles the reference does not use get full marks
and no mistake feedback; each wrong answer fails the checks its mistake breaks, with
messages that name it, and is told exactly the task's mistakes it made (their ids), no other: an answer that makes none of them
is told only the checks' own messages."""

from __future__ import annotations

import pytest

from tests.results import assert_full_marks, assert_wrong

pytestmark = pytest.mark.slow

RESNET = "finetune-replace-head"
MOBILENET = "mobilenet-replace-classifier"


# --- finetune-replace-head: ResNet-18, 10 classes, head `fc` ----------------------

RESNET_CORRECT = {
    "sequential-head": "import torch.nn as nn\nmodel.fc = nn.Sequential(nn.Linear(512, 10))\n",
    "dropout-then-linear": (
        "import torch.nn as nn\nmodel.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 10))\n"
    ),
    "flatten-then-linear": (
        "from torch import nn\nmodel.fc = nn.Sequential(nn.Flatten(), nn.Linear(512, 10))\n"
    ),
    "literal-sizes": "import torch.nn as nn\nmodel.fc = nn.Linear(512, 10)\n",
    "in-features-read-first": (
        "import torch.nn as nn\nnum_features = model.fc.in_features\n"
        "model.fc = nn.Linear(num_features, 10)\n"
    ),
    "freeze-again-with-requires-grad-method": (
        "import torch.nn as nn\nmodel.requires_grad_(False)\nmodel.fc = nn.Linear(512, 10)\n"
    ),
    "freeze-again-with-a-loop": (
        "import torch.nn as nn\nfor p in model.parameters():\n    p.requires_grad = False\n"
        "model.fc = nn.Linear(512, 10)\n"
    ),
    "freeze-after-then-unfreeze-head": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 10)\n"
        "for p in model.parameters():\n    p.requires_grad = False\n"
        "for p in model.fc.parameters():\n    p.requires_grad = True\n"
    ),
    "freeze-after-by-name": (
        "import torch\nmodel.fc = torch.nn.Linear(512, 10)\n"
        "for name, p in model.named_parameters():\n    p.requires_grad = name.startswith('fc.')\n"
    ),
    "torch-nn-modules-spelling": (
        "import torch\nmodel.fc = torch.nn.modules.linear.Linear(512, 10)\n"
    ),
    "keyword-arguments": (
        "from torch.nn import Linear\n"
        "model.fc = Linear(in_features=512, out_features=10, bias=True)\n"
    ),
    "setattr": "import torch.nn as nn\nsetattr(model, 'fc', nn.Linear(512, 10))\n",
    "modules-dict": "import torch.nn as nn\nmodel._modules['fc'] = nn.Linear(512, 10)\n",
    "add-module": "import torch.nn as nn\nmodel.add_module('fc', nn.Linear(512, 10))\n",
    "helper-function": (
        "import torch.nn as nn\n\ndef new_head(features, classes):\n"
        "    return nn.Linear(features, classes)\n\n"
        "model.fc = new_head(model.fc.in_features, 10)\n"
    ),
    "initialised-head": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 10)\n"
        "nn.init.xavier_uniform_(model.fc.weight)\nnn.init.zeros_(model.fc.bias)\n"
    ),
    # constant until its first step: one step makes it depend on the input
    "zero-initialised-head": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 10)\n"
        "nn.init.zeros_(model.fc.weight)\nnn.init.zeros_(model.fc.bias)\n"
    ),
    "device-and-dtype": (
        "import torch\nmodel.fc = torch.nn.Linear(512, 10, device='cpu', dtype=torch.float32)\n"
    ),
    "an-evaluation-pass-after": (
        "import torch\nimport torch.nn as nn\nmodel.fc = nn.Linear(512, 10)\nmodel.eval()\n"
        "with torch.no_grad():\n    print(model(torch.randn(1, 3, 64, 64)).shape)\n"
    ),
}


@pytest.mark.parametrize("code", RESNET_CORRECT.values(), ids=RESNET_CORRECT.keys())
def test_resnet_correct_heads_get_full_marks(grade_fast, code):
    assert_full_marks(grade_fast(RESNET, code))


RESNET_WRONG = {
    "100-classes": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 100)\n",
        {"head-shape", "model-output", "new-head"},
        {
            "head-shape": "[2, 100]",
            "new-head": "holds tensors of shapes [100, 512], [100], expected [10, 512], [10]",
        },
        ["wrong-class-count"],
    ),
    "one-class": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(model.fc.in_features, 1)\n",
        {"head-shape", "model-output", "new-head"},
        {"head-shape": "[2, 1]"},
        ["wrong-class-count"],
    ),
    "head-frozen": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 10)\nmodel.requires_grad_(False)\n",
        {"new-head"},
        {"new-head": "the new head `model.fc` is frozen (weight, bias"},
        ["head-frozen"],
    ),
    "head-weight-frozen": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 10)\nmodel.fc.weight.requires_grad = False\n",
        {"new-head", "head-shape", "model-output"},  # only its bias learns
        {
            "new-head": "1 of the 2 tensors of the new head `model.fc` are frozen (weight",
            "head-shape": "reaches none of its weights, only biases",
        },
        ["head-frozen", "head-cannot-learn"],
    ),
    "backbone-not-frozen": (
        "import torch.nn as nn\nfor p in model.parameters():\n    p.requires_grad = True\n"
        "model.fc = nn.Linear(512, 10)\n",
        {"backbone-frozen"},
        {"backbone-frozen": "60 backbone tensors still trainable (conv1.weight"},
        ["backbone-trainable"],
    ),
    "last-block-unfrozen": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 10)\nmodel.layer4.requires_grad_(True)\n",
        {"backbone-frozen"},
        {"backbone-frozen": "15 backbone tensors still trainable (layer4.0.conv1.weight"},
        ["backbone-trainable"],
    ),
    "pooling-swapped": (
        "import torch.nn as nn\nmodel.avgpool = nn.AdaptiveMaxPool2d((1, 1))\n"
        "model.fc = nn.Linear(512, 10)\n",
        {"backbone", "model-output"},
        {
            "backbone": "`model.avgpool` is a torch.nn.AdaptiveMaxPool2d, expected a "
            "torch.nn.AdaptiveAvgPool2d",
            "model-output": "the features reaching `model.fc` differ from the reference's",
        },
        ["wrong-layer"],
    ),
    "a-layer-reinitialised": (
        "import torch.nn as nn\nmodel.layer4[1].conv2.reset_parameters()\n"
        "model.fc = nn.Linear(512, 10)\n",
        {"backbone", "model-output"},
        {
            "backbone": "1 backbone weight tensor differs from the pre-trained weights "
            "(layer4.1.conv2.weight)",
            "model-output": "the features reaching `model.fc` differ",
        },
        ["backbone-weights-changed"],
    ),
    "batch-norm-statistics-moved": (
        "import torch\nimport torch.nn as nn\nmodel.fc = nn.Linear(512, 10)\n"
        "model.train()\nmodel(torch.randn(4, 3, 64, 64))\n",
        {"backbone", "model-output"},
        {"backbone": "the batch-norm statistics changed"},
        ["statistics-moved"],
    ),
    "a-stride-changed": (
        "import torch.nn as nn\nmodel.conv1.stride = (1, 1)\nmodel.fc = nn.Linear(512, 10)\n",
        {"backbone", "model-output"},
        {"backbone": "`model.conv1` has stride=[1, 1], expected stride=[2, 2]"},
        ["wrong-layer"],
    ),
    "no-bias": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 10, bias=False)\n",
        {"new-head"},
        {"new-head": "it has no bias (the reference's head has)"},
        ["head-without-bias"],
    ),
    "wrong-in-features": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(256, 10)\n",
        {"head-shape", "model-output", "new-head"},
        {
            "head-shape": "`model.fc` raised RuntimeError on an input of shape [2, 512]",
            "model-output": "`model` raised RuntimeError",
            "new-head": "holds tensors of shapes [10, 256], [10], expected [10, 512], [10]",
        },
        ["head-fails-on-features"],
    ),
    "wrong-layer-replaced": (
        "import torch.nn as nn\n"
        "model.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10))\n",
        {"head-shape", "model-output", "backbone", "new-head"},
        {
            "backbone": "the backbone's layers changed: `model.avgpool` is a torch.nn.Sequential",
            "new-head": "`model.fc` is still the layer the model came with",
        },
        ["wrong-class-count", "head-not-replaced", "wrong-layer"],
    ),
    "out-features-edited": (
        "model.fc.out_features = 10\n",
        {"head-shape", "model-output", "new-head"},
        {
            "head-shape": "[2, 1000]",
            "new-head": "`model.fc` is still the layer the model came with (tensors of shapes "
            "[1000, 512], [1000])",
        },
        ["wrong-class-count", "head-not-replaced"],
    ),
    "head-removed": (
        "import torch.nn as nn\nmodel.fc = nn.Identity()\n",
        {"head-shape", "model-output", "new-head"},
        {"new-head": "`model.fc` (a torch.nn.Identity) holds no parameters"},
        ["wrong-class-count", "head-removed"],
    ),
    "model-wrapped": (
        "import torch.nn as nn\nmodel = nn.Sequential(model, nn.Linear(1000, 10))\n",
        {"head-shape", "model-output", "backbone", "new-head"},
        {
            "new-head": "`model.fc` does not exist",
            "model-output": "`model.fc` does not exist, so no features reach it",
        },
        ["wrong-layer"],
    ),
    "random-backbone": (
        "from torchvision import models\nmodel = models.resnet18(num_classes=10)\n",
        {"backbone", "backbone-frozen", "model-output"},
        {"backbone": "60 backbone weight tensors differ from the pre-trained weights"},
        ["backbone-weights-changed", "backbone-trainable"],
    ),
    "zero-classes": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 0)\n",
        {"head-shape", "model-output", "new-head"},
        {"head-shape": "gives an output of shape [2, 0]"},
        ["zero-classes"],
    ),
    "head-in-half-precision": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(512, 10).half()\n",
        {"head-shape", "model-output"},
        {"head-shape": "`model.fc` raised RuntimeError on an input of shape [2, 512]"},
        ["head-fails-on-features"],
    ),
    # right shapes, but no gradient reaches the weights: the head cannot learn
    "output-cut-off-by-a-threshold": (
        "import torch.nn as nn\n"
        "model.fc = nn.Sequential(nn.Linear(512, 10), nn.Threshold(1e9, 0.0))\n",
        {"head-shape", "model-output"},
        {
            "head-shape": "one gradient step on `model.fc`'s trainable parameters does not "
            "change its output",
            "model-output": "one gradient step on `model`'s trainable parameters",
        },
        ["head-cannot-learn"],
    ),
    "everything-dropped-in-training": (
        "import torch.nn as nn\nmodel.fc = nn.Sequential(nn.Linear(512, 10), nn.Dropout(p=1.0))\n",
        {"head-shape", "model-output"},
        {"head-shape": "does not change its output"},
        ["head-cannot-learn"],
    ),
    "a-lazy-layer": (
        "import torch.nn as nn\nmodel.fc = nn.LazyLinear(10)\n",
        {"head-shape", "model-output", "backbone", "backbone-frozen", "new-head"},
        {"new-head": "`fc` is a lazy layer (torch.nn.modules.linear.LazyLinear): its parameters"},
        [],
    ),
    # a batch norm without running statistics: each image's scores depend on its companions
    "scores-normalised-over-the-batch": (
        "import torch.nn as nn\nmodel.fc = nn.Sequential(nn.Linear(512, 10), "
        "nn.BatchNorm1d(10, affine=False, track_running_stats=False))\n",
        {"head-shape", "model-output"},
        {"head-shape": "what `model.fc` gives a sample depends on the other samples of its batch"},
        ["head-depends-on-batch"],
    ),
    "everything-dropped-before-the-weights": (
        "import torch.nn as nn\nmodel.fc = nn.Sequential(nn.Dropout(p=1.0), nn.Linear(512, 10))\n",
        {"head-shape", "model-output"},
        {"head-shape": "reaches none of its weights, only biases"},
        ["head-cannot-learn"],
    ),
    "only-a-bias-after-a-dead-layer": (
        "import torch.nn as nn\nmodel.fc = nn.Sequential(nn.Linear(512, 10), "
        "nn.Threshold(1e9, 0.0), nn.Linear(10, 10))\n",
        {"head-shape", "model-output", "new-head"},
        {"head-shape": "reaches none of its weights, only biases"},
        ["head-cannot-learn"],
    ),
    # None of the task's mistakes: the checks' own messages are the feedback.
    "two-layer-head": (
        "import torch.nn as nn\n"
        "model.fc = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))\n",
        {"new-head"},
        {"new-head": "holds tensors of shapes [256, 512], [256], [10, 256], [10], expected"},
        [],
    ),
}


@pytest.mark.parametrize(
    ("code", "failing", "messages", "mistakes"),
    RESNET_WRONG.values(),
    ids=RESNET_WRONG.keys(),
)
def test_resnet_wrong_heads_name_their_mistake(grade_fast, code, failing, messages, mistakes):
    assert_wrong(grade_fast(RESNET, code), failing, messages, mistakes)


# --- mobilenet-replace-classifier: MobileNetV2, 5 classes, head `classifier.1` ------

MOBILENET_CORRECT = {
    "literal-sizes": "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 5)\n",
    "negative-index": "import torch.nn as nn\nmodel.classifier[-1] = nn.Linear(1280, 5)\n",
    "in-features-of-the-old-layer": (
        "import torch.nn as nn\nin_features = model.classifier[-1].in_features\n"
        "model.classifier[-1] = nn.Linear(in_features, 5)\n"
    ),
    "from-the-weight-shape": (
        "import torch.nn as nn\n"
        "model.classifier[1] = nn.Linear(model.classifier[1].weight.shape[1], 5)\n"
    ),
    "classifier-rebuilt-with-a-dropout": (
        "import torch.nn as nn\n"
        "model.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(model.last_channel, 5))\n"
    ),
    # `inplace` changes where a layer writes, not what it computes
    "classifier-rebuilt-with-an-inplace-dropout": (
        "import torch.nn as nn\nmodel.classifier = nn.Sequential(nn.Dropout(p=0.2, inplace=True), "
        "nn.Linear(model.last_channel, 5))\n"
    ),
    "classifier-rebuilt-keeping-its-dropout": (
        "import torch.nn as nn\n"
        "model.classifier = nn.Sequential(model.classifier[0], nn.Linear(1280, 5))\n"
    ),
    "children-but-the-last": (
        "import torch.nn as nn\nkept = list(model.classifier.children())[:-1]\n"
        "model.classifier = nn.Sequential(*kept, nn.Linear(1280, 5))\n"
    ),
    "sequential-head": (
        "import torch.nn as nn\nmodel.classifier[1] = nn.Sequential(nn.Linear(1280, 5))\n"
    ),
    "setattr": "import torch.nn as nn\nsetattr(model.classifier, '1', nn.Linear(1280, 5))\n",
    "modules-dict": "import torch.nn as nn\nmodel.classifier._modules['1'] = nn.Linear(1280, 5)\n",
    "add-module": "import torch.nn as nn\nmodel.classifier.add_module('1', nn.Linear(1280, 5))\n",
    "keyword-arguments": (
        "from torch.nn import Linear\n"
        "model.classifier[1] = Linear(in_features=1280, out_features=5, bias=True)\n"
    ),
    "torch-nn-modules-spelling": (
        "import torch\nmodel.classifier[1] = torch.nn.modules.linear.Linear(1280, 5)\n"
    ),
    "freeze-again-first": (
        "import torch.nn as nn\nmodel.requires_grad_(False)\nmodel.classifier[1] = nn.Linear(1280, 5)\n"
    ),
    "freeze-features-after": (
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 5)\n"
        "for p in model.features.parameters():\n    p.requires_grad = False\n"
    ),
    "freeze-all-then-unfreeze-head": (
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 5)\n"
        "for p in model.parameters():\n    p.requires_grad = False\n"
        "model.classifier[1].requires_grad_(True)\n"
    ),
    # torch's own Sequential.pop and del rebuild the classifier's layers as an OrderedDict
    "last-layer-popped-and-appended": (
        "import torch.nn as nn\nmodel.classifier.pop(1)\n"
        "model.classifier.append(nn.Linear(model.last_channel, 5))\n"
    ),
    "last-layer-deleted-and-appended": (
        "import torch.nn as nn\ndel model.classifier[1]\n"
        "model.classifier.append(nn.Linear(model.last_channel, 5))\n"
    ),
    "zero-initialised-head": (
        "import torch.nn as nn\nhead = nn.Linear(1280, 5)\nhead.weight.data.zero_()\n"
        "head.bias.data.zero_()\nmodel.classifier[1] = head\n"
    ),
    "initialised-head": (
        "import torch.nn as nn\nhead = nn.Linear(1280, 5)\nnn.init.zeros_(head.bias)\n"
        "model.classifier[1] = head\n"
    ),
    "an-evaluation-pass-after": (
        "import torch\nimport torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 5)\n"
        "model.eval()\nwith torch.no_grad():\n    print(model(torch.randn(1, 3, 64, 64)).shape)\n"
    ),
}


@pytest.mark.parametrize("code", MOBILENET_CORRECT.values(), ids=MOBILENET_CORRECT.keys())
def test_mobilenet_correct_classifiers_get_full_marks(grade_fast, code):
    assert_full_marks(grade_fast(MOBILENET, code))


MOBILENET_WRONG = {
    "ten-classes": (
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 10)\n",
        {"classifier-shape", "model-output", "new-head"},
        {
            "classifier-shape": "[2, 10] on an input of shape [2, 1280], expected [2, 5]",
            "new-head": "holds tensors of shapes [10, 1280], [10], expected [5, 1280], [5]",
        },
        ["wrong-class-count"],
    ),
    "1000-classes-kept": (
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 1000)\n",
        {"classifier-shape", "model-output", "new-head"},
        {"classifier-shape": "[2, 1000]"},
        ["wrong-class-count"],
    ),
    "head-frozen": (
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 5).requires_grad_(False)\n",
        {"new-head"},
        {"new-head": "the new head `model.classifier.1` is frozen"},
        ["head-frozen"],
    ),
    "backbone-not-frozen": (
        "import torch.nn as nn\nmodel.requires_grad_(True)\nmodel.classifier[1] = nn.Linear(1280, 5)\n",
        {"backbone-frozen"},
        {"backbone-frozen": "still trainable (features.0.0.weight"},
        ["backbone-trainable"],
    ),
    "last-block-unfrozen": (
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 5)\n"
        "for p in model.features[-1].parameters():\n    p.requires_grad = True\n",
        {"backbone-frozen"},
        {"backbone-frozen": "3 backbone tensors still trainable (features.18.0.weight"},
        ["backbone-trainable"],
    ),
    "dropout-dropped-with-the-classifier": (
        "import torch.nn as nn\nmodel.classifier = nn.Linear(1280, 5)\n",
        {"classifier-shape", "model-output", "backbone", "new-head"},
        {
            "backbone": "`model.classifier` is a torch.nn.Linear, expected a torch.nn.Sequential; "
            "`model.classifier.0` (a torch.nn.Dropout) was removed",
            "new-head": "`model.classifier.1` does not exist (`model.classifier` is a "
            "torch.nn.Linear, expected a torch.nn.Sequential)",
        },
        ["backbone-changed"],
    ),
    "classifier-without-its-dropout": (
        "import torch.nn as nn\nmodel.classifier = nn.Sequential(nn.Linear(1280, 5))\n",
        {"classifier-shape", "model-output", "backbone", "new-head"},
        {"backbone": "`model.classifier.0` is a torch.nn.Linear, expected a torch.nn.Dropout"},
        ["backbone-changed"],
    ),
    "dropout-disabled": (
        "import torch.nn as nn\nmodel.classifier[0] = nn.Identity()\n"
        "model.classifier[1] = nn.Linear(1280, 5)\n",
        {"backbone"},
        {"backbone": "`model.classifier.0` is a torch.nn.Identity, expected a torch.nn.Dropout"},
        ["backbone-changed"],
    ),
    "dropout-rate-changed": (
        "import torch.nn as nn\nmodel.classifier[0].p = 0.5\nmodel.classifier[1] = nn.Linear(1280, 5)\n",
        {"backbone"},
        {"backbone": "`model.classifier.0` has p=0.5, expected p=0.2"},
        ["backbone-changed"],
    ),
    "dropout-replaced-instead": (
        "import torch.nn as nn\nmodel.classifier[0] = nn.Linear(1280, 5)\n",
        {"classifier-shape", "model-output", "backbone", "new-head"},
        {
            "backbone": "`model.classifier.0` is a torch.nn.Linear, expected a torch.nn.Dropout",
            "new-head": "`model.classifier.1` is still the layer the model came with",
        },
        ["wrong-class-count", "head-not-replaced", "backbone-changed"],
    ),
    "the-resnet-habit": (
        "import torch.nn as nn\nmodel.fc = nn.Linear(1280, 5)\n",
        {"classifier-shape", "model-output", "backbone", "new-head", "no-fc"},
        {
            "no-fc": "`model.fc` exists (a torch.nn.Linear)",
            "backbone": "`model.fc` (a torch.nn.Linear) was added",
            "new-head": "`model.classifier.1` is still the layer the model came with",
        },
        ["resnet-habit", "wrong-class-count", "head-not-replaced", "backbone-changed"],
    ),
    "a-layer-reinitialised": (
        "import torch.nn as nn\nmodel.features[0][0].reset_parameters()\n"
        "model.classifier[1] = nn.Linear(1280, 5)\n",
        {"backbone", "model-output"},
        {
            "backbone": "1 backbone weight tensor differs from the pre-trained weights "
            "(features.0.0.weight)",
            "model-output": "the features reaching `model.classifier.1` differ",
        },
        ["backbone-weights-changed"],
    ),
    "batch-norm-statistics-moved": (
        "import torch\nimport torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 5)\n"
        "model.train()\nmodel(torch.randn(2, 3, 64, 64))\n",
        {"backbone", "model-output"},
        {"backbone": "the batch-norm statistics changed"},
        ["statistics-moved"],
    ),
    "activation-swapped": (
        "import torch.nn as nn\nmodel.features[1].conv[0][2] = nn.ReLU()\n"
        "model.classifier[1] = nn.Linear(1280, 5)\n",
        {"backbone", "model-output"},
        {"backbone": "`model.features.1.conv.0.2` is a torch.nn.ReLU, expected a torch.nn.ReLU6"},
        ["backbone-changed"],
    ),
    "no-bias": (
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(1280, 5, bias=False)\n",
        {"new-head"},
        {"new-head": "it has no bias (the reference's head has)"},
        ["head-without-bias"],
    ),
    "wrong-in-features": (
        "import torch.nn as nn\nmodel.classifier[1] = nn.Linear(512, 5)\n",
        {"classifier-shape", "model-output", "new-head"},
        {
            "classifier-shape": "`model.classifier.1` raised RuntimeError on an input of shape "
            "[2, 1280]",
            "new-head": "holds tensors of shapes [5, 512], [5], expected [5, 1280], [5]",
        },
        ["head-fails-on-features"],
    ),
    "out-features-edited": (
        "model.classifier[1].out_features = 5\n",
        {"classifier-shape", "model-output", "new-head"},
        {"new-head": "`model.classifier.1` is still the layer the model came with"},
        ["wrong-class-count", "head-not-replaced"],
    ),
    "trained-from-scratch": (
        "from torchvision import models\nmodel = models.mobilenet_v2(num_classes=5)\n",
        {"model-output", "backbone", "backbone-frozen"},
        {"backbone": "156 backbone weight tensors differ from the pre-trained weights"},
        ["backbone-weights-changed", "backbone-trainable"],
    ),
    "final-layer-frozen-backbone-unfrozen": (
        "import torch.nn as nn\nmodel.requires_grad_(True)\n"
        "model.classifier[1] = nn.Linear(1280, 5).requires_grad_(False)\n",
        {"backbone-frozen", "new-head"},
        {"new-head": "the new head `model.classifier.1` is frozen"},
        ["head-frozen", "backbone-trainable"],
    ),
    "scores-normalised-over-the-batch": (
        "import torch.nn as nn\nmodel.classifier[1] = nn.Sequential(nn.Linear(1280, 5), "
        "nn.BatchNorm1d(5, affine=False, track_running_stats=False))\n",
        {"classifier-shape", "model-output"},
        {"model-output": "what `model` gives a sample depends on the other samples of its batch"},
        ["head-depends-on-batch"],
    ),
    "everything-dropped-in-training": (
        "import torch.nn as nn\n"
        "model.classifier[1] = nn.Sequential(nn.Linear(1280, 5), nn.Dropout(p=1.0))\n",
        {"classifier-shape", "model-output"},
        {"classifier-shape": "one gradient step on `model.classifier.1`'s trainable parameters"},
        ["head-cannot-learn"],
    ),
    # None of the task's mistakes: the checks' own messages are the feedback.
    "two-layer-classifier": (
        "import torch.nn as nn\n"
        "model.classifier[1] = nn.Sequential(nn.Linear(1280, 128), nn.ReLU(), nn.Linear(128, 5))\n",
        {"new-head"},
        {"new-head": "holds tensors of shapes [128, 1280], [128], [5, 128], [5], expected"},
        [],
    ),
}


@pytest.mark.parametrize(
    ("code", "failing", "messages", "mistakes"),
    MOBILENET_WRONG.values(),
    ids=MOBILENET_WRONG.keys(),
)
def test_mobilenet_wrong_classifiers_name_their_mistake(
    grade_fast, code, failing, messages, mistakes
):
    assert_wrong(grade_fast(MOBILENET, code), failing, messages, mistakes)
