"""finetune-load-pretrained, graded on free-form answers by the real harness: "Load a
ResNet-18 from torchvision with its pre-trained ImageNet weights, ready for fine-tuning,
and call it `model`." Every way of loading torchvision's pre-trained ResNet-18 gets full
marks; each mistake (random weights, another architecture or head, weights changed after
loading, no `model`) fails the check whose message names it."""

from __future__ import annotations

import pytest

from tests.results import assert_fails, assert_full_marks

pytestmark = pytest.mark.slow

TASK = "finetune-load-pretrained"

CORRECT = {
    "weights-default-string": "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT')",
    "weights-enum-v1": "from torchvision import models\nmodel = models.resnet18(weights=models.ResNet18_Weights.IMAGENET1K_V1)",
    "weights-enum-default": "from torchvision.models import resnet18, ResNet18_Weights\nmodel = resnet18(weights=ResNet18_Weights.DEFAULT)",
    "weights-name-string": "import torchvision\nmodel = torchvision.models.resnet18(weights='IMAGENET1K_V1')",
    "weights-qualified-string": "import torchvision\nmodel = torchvision.models.resnet18(weights='ResNet18_Weights.IMAGENET1K_V1')",
    "weights-by-subscript": "from torchvision.models import resnet18, ResNet18_Weights\nmodel = resnet18(weights=ResNet18_Weights['IMAGENET1K_V1'])",
    "pretrained-true": "from torchvision import models\nmodel = models.resnet18(pretrained=True)",
    "pretrained-true-no-progress": "import torchvision.models as tvm\nmodel = tvm.resnet18(pretrained=True, progress=False)",
    "get-model": "import torchvision\nmodel = torchvision.models.get_model('resnet18', weights='DEFAULT')",
    "get-model-weights": "from torchvision.models import get_model, get_model_weights\nmodel = get_model('resnet18', weights=get_model_weights('resnet18').DEFAULT)",
    "get-weight": "from torchvision import models\nmodel = models.resnet18(weights=models.get_weight('ResNet18_Weights.IMAGENET1K_V1'))",
    "state-dict-loaded": "from torchvision.models import resnet18, ResNet18_Weights\nmodel = resnet18()\nmodel.load_state_dict(ResNet18_Weights.DEFAULT.get_state_dict(progress=False))",
    "hub-state-dict-from-url": "import torch\nfrom torchvision import models\nmodel = models.resnet18()\nstate = torch.hub.load_state_dict_from_url(models.ResNet18_Weights.IMAGENET1K_V1.url, progress=False)\nmodel.load_state_dict(state)",
    "resnet-class-built": "from torchvision.models.resnet import ResNet, BasicBlock, ResNet18_Weights\nmodel = ResNet(BasicBlock, [2, 2, 2, 2])\nmodel.load_state_dict(ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False))",
    "resnet-module-import": "from torchvision.models.resnet import resnet18, ResNet18_Weights\nmodel = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)",
    "getattr-builder": "from torchvision import models\nmodel = getattr(models, 'resnet18')(weights='DEFAULT')",
    "explicit-1000-classes": "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT', num_classes=1000)",
    "helper-function": "from torchvision import models\n\ndef load_backbone(name):\n    return getattr(models, name)(weights='DEFAULT')\n\nmodel = load_backbone('resnet18')",
    "transforms-too": "from torchvision.models import resnet18, ResNet18_Weights\nweights = ResNet18_Weights.DEFAULT\nmodel = resnet18(weights=weights)\npreprocess = weights.transforms()",
    "train-mode-and-trainable": "import torch\nfrom torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nmodel.train()\nfor p in model.parameters():\n    p.requires_grad = True",
    "moved-to-cpu": "import torch\nfrom torchvision import models\nmodel = models.resnet18(weights='DEFAULT').to(torch.device('cpu')).float()",
    "printed": "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nprint(model.fc)\nprint(sum(p.numel() for p in model.parameters()))",
}  # fmt: skip

# id: (code, the check that fails, a fragment of its message that names the mistake)
RANDOM = "102 of 122 weight tensors differ from the pre-trained weights"
WRONG = {
    "pretrained-false": (
        "from torchvision import models\nmodel = models.resnet18(pretrained=False)",
        "pretrained", RANDOM,
    ),
    "pretrained-zero": (
        "from torchvision import models\nmodel = models.resnet18(pretrained=0)",
        "pretrained", RANDOM,
    ),
    "weights-none": (
        "from torchvision import models\nmodel = models.resnet18(weights=None)",
        "pretrained", RANDOM,
    ),
    "no-weights-argument": (
        "from torchvision.models import resnet18\nmodel = resnet18()",
        "pretrained", RANDOM,
    ),
    "overwritten-by-a-fresh-one": (
        "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nmodel = models.resnet18()",
        "pretrained", RANDOM,
    ),
    "every-layer-re-initialised": (
        "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nfor m in model.modules():\n    if hasattr(m, 'reset_parameters'):\n        m.reset_parameters()",
        "pretrained", RANDOM,
    ),
    "head-re-initialised": (
        "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nmodel.fc.reset_parameters()",
        "pretrained", "2 of 122 weight tensors differ from the pre-trained weights (fc.bias, fc.weight)",
    ),
    "head-left-out-of-state": (
        "from torchvision.models import resnet18, ResNet18_Weights\nmodel = resnet18()\nstate = ResNet18_Weights.DEFAULT.get_state_dict(progress=False)\nmodel.load_state_dict({k: v for k, v in state.items() if not k.startswith('fc.')}, strict=False)",
        "pretrained", "2 of 122 weight tensors differ from the pre-trained weights (fc.bias, fc.weight)",
    ),
    "weights-scaled-in-place": (
        "import torch\nfrom torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nwith torch.no_grad():\n    model.conv1.weight.mul_(0.5)",
        "pretrained", "1 of 122 weight tensors differ from the pre-trained weights (conv1.weight)",
    ),
    "head-bias-zeroed": (
        "import torch\nfrom torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nwith torch.no_grad():\n    model.fc.bias.zero_()",
        "pretrained", "1 of 122 weight tensors differ from the pre-trained weights (fc.bias)",
    ),
    "forward-pass-in-training-mode": (
        "import torch\nfrom torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nout = model(torch.randn(2, 3, 64, 64))",
        "pretrained", "every weight equals the pre-trained one: the batch-norm statistics changed (a forward pass in training mode moves them",
    ),
    "resnet34": (
        "from torchvision import models\nmodel = models.resnet34()",
        "architecture", "unexpected layers layer1.2, layer1.2.bn1",
    ),
    "resnet50": (
        "from torchvision import models\nmodel = models.resnet50()",
        "architecture", "`layer1.0` is a torchvision.models.resnet.Bottleneck, expected a torchvision.models.resnet.BasicBlock",
    ),
    "ten-classes-no-weights": (
        "from torchvision import models\nmodel = models.resnet18(num_classes=10)",
        "architecture", "`model.fc` has out_features=10, expected out_features=1000",
    ),
    "head-replaced": (
        "import torch.nn as nn\nfrom torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nmodel.fc = nn.Linear(512, 10)",
        "architecture", "`model.fc` has out_features=10, expected out_features=1000",
    ),
    "ten-classes-with-weights": (
        "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT', num_classes=10)",
        "is-resnet18", "no variable named `model` exists after your code ran",
    ),
    "mobilenet": (
        "from torchvision import models\nmodel = models.mobilenet_v2(weights='DEFAULT')",
        "is-resnet18", "`model` is a torchvision.models.mobilenetv2.MobileNetV2, expected a torchvision.models.resnet.ResNet",
    ),
    "own-network": (
        "import torch.nn as nn\nmodel = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1000))",
        "is-resnet18", "`model` is a torch.nn.modules.container.Sequential, expected a torchvision.models.resnet.ResNet",
    ),
    "wrapped-with-softmax": (
        "import torch.nn as nn\nfrom torchvision import models\nmodel = nn.Sequential(models.resnet18(weights='DEFAULT'), nn.Softmax(dim=1))",
        "is-resnet18", "`model` is a torch.nn.modules.container.Sequential, expected a torchvision.models.resnet.ResNet",
    ),
    "named-differently": (
        "from torchvision import models\nnet = models.resnet18(weights='DEFAULT')",
        "is-resnet18", "no variable named `model` exists after your code ran",
    ),
    "not-assigned": (
        "from torchvision import models\nmodels.resnet18(weights='DEFAULT')",
        "is-resnet18", "no variable named `model` exists after your code ran",
    ),
    "raises-before-loading": (
        "from torchvision import models\nraise RuntimeError('not finished yet')\nmodel = models.resnet18(weights='DEFAULT')",
        "is-resnet18", "no variable named `model` exists after your code ran",
    ),
    "the-builder-not-called": (
        "from torchvision import models\nmodel = models.resnet18",
        "architecture", "`model` is a function, not a torch.nn.Module",
    ),
    "statistics-reset": (
        "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\n"
        "for m in model.modules():\n    if isinstance(m, models.resnet.nn.BatchNorm2d):\n        m.reset_running_stats()",
        "pretrained", "reset_running_stats() resets them",
    ),
}  # fmt: skip


def test_an_answer_that_raises_after_loading_earns_nothing(grade_fast):
    code = "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nraise RuntimeError('not finished')\n"
    result = grade_fast(TASK, code)
    assert (result.outcome, result.score) == ("runtime_error", 0.0), result.model_dump()
    assert all(c.passed for c in result.checks), [(c.name, c.message) for c in result.checks]
    assert "raised an exception before it finished" in result.checks[0].message


@pytest.mark.parametrize("code", CORRECT.values(), ids=CORRECT.keys())
def test_a_pretrained_resnet18_loaded_in_any_style_gets_full_marks(grade_fast, code):
    assert_full_marks(grade_fast(TASK, code + "\n"))


@pytest.mark.parametrize(("code", "check", "fragment"), WRONG.values(), ids=WRONG.keys())
def test_a_mistake_fails_the_check_that_names_it(grade_fast, code, check, fragment):
    assert_fails(grade_fast(TASK, code + "\n"), check, fragment)


def test_mistakes_get_the_feedback_that_fits_them(grade_fast):
    random = grade_fast(TASK, "from torchvision import models\nmodel = models.resnet18(pretrained=False)\n")  # fmt: skip
    assert any("pretrained=False will initialize random weights" in f for f in random.feedback), (
        random.feedback
    )
    reset = grade_fast(TASK, "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\nmodel.fc.reset_parameters()\n")  # fmt: skip
    assert any("`reset_parameters()`" in f for f in reset.feedback), reset.feedback
