"""finetune-freeze, graded on free-form answers by the real harness: "`model` is a
pre-trained ResNet-18. Freeze all of its parameters so that training does not update
them." Every spelling of a full freeze gets full marks; each mistake (a partial freeze,
an attribute that does nothing, a copy frozen instead, weights changed or layers
replaced on the way) fails the check whose message names it."""

from __future__ import annotations

import pytest

from tests.results import assert_fails, assert_full_marks

pytestmark = pytest.mark.slow

TASK = "finetune-freeze"

CORRECT = {
    "module-requires-grad": "model.requires_grad_(False)",
    "module-requires-grad-keyword": "model.requires_grad_(requires_grad=False)",
    "unbound-module-method": "torch.nn.Module.requires_grad_(model, False)",
    "named-parameters": "for name, param in model.named_parameters():\n    param.requires_grad = False",
    "tensor-method": "for p in model.parameters():\n    p.requires_grad_(False)",
    "tensor-method-keyword": "for p in model.parameters():\n    p.requires_grad_(requires_grad=False)",
    "list-first": "params = list(model.parameters())\nfor p in params:\n    p.requires_grad = False",
    "map": "list(map(lambda p: p.requires_grad_(False), model.parameters()))",
    "comprehension": "_ = [p.requires_grad_(False) for p in model.parameters()]",
    "setattr": "for p in model.parameters():\n    setattr(p, 'requires_grad', False)",
    "modules-no-recurse": "for m in model.modules():\n    for p in m.parameters(recurse=False):\n        p.requires_grad = False",
    "named-modules": "for _, m in model.named_modules():\n    m.requires_grad_(False)",
    "children": "for child in model.children():\n    for p in child.parameters():\n        p.requires_grad = False",
    "named-children": "for name, child in model.named_children():\n    child.requires_grad_(False)",
    "apply-function": "def freeze(m):\n    for p in m.parameters(recurse=False):\n        p.requires_grad = False\n\nmodel.apply(freeze)",
    "apply-lambda": "model.apply(lambda m: m.requires_grad_(False))",
    "helper-returns-the-model": "def freeze(net):\n    for p in net.parameters():\n        p.requires_grad = False\n    return net\n\nmodel = freeze(model)",
    "while-next": "it = iter(model.parameters())\nwhile True:\n    try:\n        p = next(it)\n    except StopIteration:\n        break\n    p.requires_grad = False",
    "enumerate-reversed": "for i, p in enumerate(reversed(list(model.parameters()))):\n    p.requires_grad = False",
    "state-dict-keep-vars": "for t in model.state_dict(keep_vars=True).values():\n    t.requires_grad_(False)",
    "negated-constant": "for p in model.parameters():\n    p.requires_grad = not True",
    "under-no-grad": "with torch.no_grad():\n    model.requires_grad_(False)",
    "grads-cleared-too": "for p in model.parameters():\n    p.requires_grad = False\n    p.grad = None",
    "frozen-then-printed": "model.requires_grad_(False)\ntrainable = sum(p.numel() for p in model.parameters() if p.requires_grad)\nprint(f'trainable parameters: {trainable}')\nprint(model.fc)",
    "frozen-then-asserted": "model.requires_grad_(False)\nassert not any(p.requires_grad for p in model.parameters())",
    "frozen-twice": "for p in model.parameters():\n    p.requires_grad = False\nmodel.requires_grad_(False)",
    "frozen-then-evaluated": "model.requires_grad_(False)\nmodel.eval()\nwith torch.no_grad():\n    out = model(torch.randn(1, 3, 64, 64))\nprint(out.shape)",
    "detach-in-place": "for p in model.parameters():\n    p.detach_()",
}  # fmt: skip

# id: (code, the check that fails, a fragment of its message that names the mistake)
WRONG = {
    "eval-mode": (
        "model.eval()",
        "frozen", "expected 0 trainable tensors, found 62 (conv1.weight",
    ),
    "train-false": (
        "model.train(False)",
        "frozen", "expected 0 trainable tensors, found 62 (conv1.weight",
    ),
    "head-only": (
        "for param in model.fc.parameters():\n    param.requires_grad = False",
        "frozen", "expected 0 trainable tensors, found 60 (conv1.weight",
    ),
    "all-but-head": (
        "for name, p in model.named_parameters():\n    if not name.startswith('fc'):\n        p.requires_grad = False",
        "frozen", "expected 0 trainable tensors, found 2 (fc.weight, fc.bias)",
    ),
    "first-layers-only": (
        "for layer in [model.conv1, model.bn1, model.layer1, model.layer2]:\n    layer.requires_grad_(False)",
        "frozen", "found 32 (layer3.0.conv1.weight",
    ),
    "batch-norm-only": (
        "for m in model.modules():\n    if isinstance(m, nn.BatchNorm2d):\n        m.requires_grad_(False)",
        "frozen", "found 22 (conv1.weight, layer1.0.conv1.weight",
    ),
    "convolutions-only": (
        "for m in model.modules():\n    if isinstance(m, nn.Conv2d):\n        m.weight.requires_grad = False",
        "frozen", "found 42 (bn1.weight, bn1.bias",
    ),
    "loop-stops-after-one": (
        "for p in model.parameters():\n    p.requires_grad = False\n    break",
        "frozen", "found 61 (bn1.weight, bn1.bias, layer1.0.conv1.weight",
    ),
    "unfrozen-afterwards": (
        "model.requires_grad_(False)\nmodel.layer4.requires_grad_(True)",
        "frozen", "found 15 (layer4.0.conv1.weight",
    ),
    "module-attribute": (
        "model.requires_grad = False",
        "same-model", "`model` has an attribute `requires_grad` = False that the reference's has not",
    ),
    "method-name-typo": (
        "for param in model.parameters():\n    param.requires_grad_ = False",
        "frozen", "expected 0 trainable tensors, found 62",
    ),
    "comparison-not-assignment": (
        "for param in model.parameters():\n    param.requires_grad == False",
        "frozen", "expected 0 trainable tensors, found 62",
    ),
    "grad-false": (
        "for param in model.parameters():\n    param.grad = False",
        "frozen", "expected 0 trainable tensors, found 62",
    ),
    "grad-none": (
        "for param in model.parameters():\n    param.grad = None",
        "frozen", "expected 0 trainable tensors, found 62",
    ),
    "zero-grad": (
        "model.zero_grad()",
        "frozen", "expected 0 trainable tensors, found 62",
    ),
    "no-grad-block": (
        "with torch.no_grad():\n    out = model(torch.randn(1, 3, 64, 64))",
        "frozen", "expected 0 trainable tensors, found 62",
    ),
    "grad-disabled-globally": (
        "torch.set_grad_enabled(False)",
        "frozen", "expected 0 trainable tensors, found 62",
    ),
    "detached-copies": (
        "for param in model.parameters():\n    param = param.detach()",
        "frozen", "expected 0 trainable tensors, found 62",
    ),
    "deepcopy-frozen": (
        "import copy\nfrozen = copy.deepcopy(model)\nfrozen.requires_grad_(False)",
        "frozen", "expected 0 trainable tensors, found 62",
    ),
    "buffers-instead": (
        "for b in model.buffers():\n    b.requires_grad = False",
        "frozen", "expected 0 trainable tensors, found 62",
    ),
    "forward-pass-in-training-mode": (
        "model.requires_grad_(False)\nout = model(torch.randn(1, 3, 64, 64))",
        "weights-intact", "every weight equals the pre-trained one: the batch-norm statistics changed (a forward pass in training mode moves them",
    ),
    "re-created-untrained": (
        "model = models.resnet18()\nmodel.requires_grad_(False)",
        "weights-intact", "102 of 122 weight tensors differ from the pre-trained weights",
    ),
    "weights-zeroed-while-freezing": (
        "for param in model.parameters():\n    param.requires_grad = False\n    param.data.zero_()",
        "weights-intact", "62 of 122 weight tensors differ from the pre-trained weights (bn1.bias, bn1.weight, conv1.weight",
    ),
    "a-weight-scaled": (
        "model.requires_grad_(False)\nmodel.conv1.weight.mul_(2)",
        "weights-intact", "1 of 122 weight tensors differ from the pre-trained weights (conv1.weight)",
    ),
    "head-re-initialised": (
        "model.requires_grad_(False)\nmodel.fc.reset_parameters()",
        "weights-intact", "2 of 122 weight tensors differ from the pre-trained weights (fc.bias, fc.weight)",
    ),
    "head-replaced": (
        "model.requires_grad_(False)\nmodel.fc = nn.Linear(512, 10)",
        "same-model", "`model.fc` has out_features=10, expected out_features=1000",
    ),
    "head-wrapped": (
        "model.requires_grad_(False)\nmodel.fc = nn.Sequential(nn.Dropout(0.5), model.fc)",
        "same-model", "`fc` is a torch.nn.modules.container.Sequential, expected a torch.nn.modules.linear.Linear",
    ),
    "layer-removed": (
        "model.requires_grad_(False)\nmodel.layer4 = nn.Identity()",
        "same-model", "`layer4` is a torch.nn.modules.linear.Identity, expected a torch.nn.modules.container.Sequential",
    ),
}  # fmt: skip


@pytest.mark.parametrize("code", CORRECT.values(), ids=CORRECT.keys())
def test_a_full_freeze_in_any_style_gets_full_marks(grade_fast, code):
    assert_full_marks(grade_fast(TASK, code + "\n"))


@pytest.mark.parametrize(("code", "check", "fragment"), WRONG.values(), ids=WRONG.keys())
def test_a_mistake_fails_the_check_that_names_it(grade_fast, code, check, fragment):
    assert_fails(grade_fast(TASK, code + "\n"), check, fragment)


def test_mistakes_get_the_feedback_that_fits_them(grade_fast):
    grad = grade_fast(TASK, "for param in model.parameters():\n    param.grad = False\n")
    assert grad.outcome == "runtime_error", grad.model_dump()
    assert any("assigning False to" in f for f in grad.feedback), grad.feedback
    evaluating = grade_fast(TASK, "model.eval()\n")
    assert any("only switches dropout and batch norm" in f for f in evaluating.feedback), (
        evaluating.feedback
    )
    assert not any("assigning False to" in f for f in evaluating.feedback), evaluating.feedback
