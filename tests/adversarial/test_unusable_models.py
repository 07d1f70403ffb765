"""Models whose values are right but that cannot be fine-tuned, and models that training
left right and later code changed. Each task asks for a model to train (or trained): one
made under `torch.inference_mode()`, with a weight whose elements share memory, that
contains itself or cast to another dtype cannot be, nor a head that computes with values
set beside its parameters; an epoch's model whose
layers, dtypes, trainable parameters or element order are changed afterwards is not "as
the training left it".
None gets full marks; an evaluation after the epoch (`model.eval()` and a loss under
`torch.no_grad()`) keeps them (the honest answers: test_hooks_and_patches.py). On the
process backend."""

from __future__ import annotations

import pytest

from tests.results import assert_full_marks, failures

pytestmark = [pytest.mark.slow]

LOAD = "from torchvision import models\nmodel = models.resnet18(weights='DEFAULT')\n"
HEAD = "import torch.nn as nn\nmodel.fc = nn.Linear(model.fc.in_features, 10)\n"
FREEZE = "for p in model.parameters():\n    p.requires_grad = False\n"
EPOCH = (
    "model.train()\n"
    "for inputs, labels in dataloader:\n"
    "    optimizer.zero_grad()\n"
    "    loss = criterion(model(inputs), labels)\n"
    "    loss.backward()\n"
    "    optimizer.step()\n"
)


def assert_not_credited(result, fragment: str) -> None:
    """Fewer than all points, and some failed check says `fragment`."""
    failed = failures(result)
    assert result.score < result.max_score, result.model_dump_json(indent=2)
    assert any(fragment in message for message in failed.values()), failed


# id: (task, code, a fragment of a failed check's message)
UNTRAINABLE = {
    "loaded-in-inference-mode": (
        "finetune-load-pretrained",
        "import torch\nwith torch.inference_mode():\n    " + LOAD.replace("\n", "\n    "),
        "was made under torch.inference_mode()",
    ),
    "head-made-in-inference-mode": (
        "finetune-replace-head",
        "import torch\nwith torch.inference_mode():\n    " + HEAD.replace("\n", "\n    "),
        "was made under torch.inference_mode()",
    ),
    "head-weight-one-row-expanded": (
        "finetune-replace-head",
        HEAD + "model.fc.weight = nn.Parameter(model.fc.weight[:1].detach().expand(10, 512))\n",
        "share their memory",
    ),
    "model-holds-itself-after-loading": (
        "finetune-load-pretrained",
        LOAD + "model.layer1[0]._modules['again'] = model\n",
        "contains itself",
    ),
    "model-holds-itself-after-freezing": (
        "finetune-freeze",
        FREEZE + "model.layer2._modules['up'] = model.layer2\n",
        "contains itself",
    ),
    "model-holds-itself-after-a-new-head": (
        "finetune-replace-head",
        FREEZE + HEAD + "model.fc._modules['back'] = model\n",
        "contains itself",
    ),
    # a value set on the instance under a registered name is what the layer's forward reads
    "head-computing-with-a-frozen-copy": (
        "finetune-replace-head",
        FREEZE + HEAD + "import torch\nfor name in ('weight', 'bias'):\n"
        "    model.fc.__dict__[name] = getattr(model.fc, name).detach().clone()\n",
        "set on the instance beside its registered parameter",
    ),
    # the trainable weight registered under another name, a frozen copy where the forward
    # reads `weight`
    "head-weight-registered-under-another-name": (
        "finetune-replace-head",
        FREEZE + HEAD + "w = model.fc._parameters.pop('weight')\n"
        "model.fc.register_parameter('weight_', w)\n"
        "model.fc.__dict__['weight'] = w.detach().clone()\n",
        "is a tensor set outside its registered parameters and buffers",
    ),
    "loaded-as-float64": ("finetune-load-pretrained", LOAD + "model = model.double()\n", "float64"),
    "frozen-as-float64": ("finetune-freeze", FREEZE + "model.double()\n", "float64"),
}


@pytest.mark.parametrize("case", sorted(UNTRAINABLE))
def test_a_model_that_cannot_be_trained_is_not_credited(case, grade_answer):
    task, code, fragment = UNTRAINABLE[case]
    assert_not_credited(grade_answer(task, code), fragment)


# Every batch-norm statistic rearranged across its channels by swaps chosen so that the
# sum weighted by position stays within 1e-9 of its value (the plain sums are kept by any
# rearrangement): the model is broken in eval mode, and every summary still matches.
REARRANGED_STATISTICS = """
import numpy as np

def position_weights(n):
    s = np.multiply(np.arange(n, dtype=np.uint32), np.uint32(0x9E3779B1))
    return np.multiply(s.view(np.int32), 2.0 ** -32, dtype=np.float32).astype(np.float64)

def rearrange(t, rng):
    v = t.detach().numpy().astype(np.float64)
    w = position_weights(v.size)
    perm = rng.permutation(v.size)
    target = float(np.dot(w, v))
    for _ in range(30):
        off = float(np.dot(w, v[perm])) - target
        if abs(off) < 1e-9 * (1 + abs(target)):
            break
        vp = v[perm]
        delta = np.subtract.outer(w, w) * (vp[None, :] - vp[:, None])
        i, j = np.unravel_index(np.argmin(np.abs(off + delta)), delta.shape)
        perm[i], perm[j] = perm[j], perm[i]
    with torch.no_grad():
        t.copy_(torch.from_numpy(v[perm].astype(np.float32)))

rng = np.random.default_rng(0)
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        rearrange(m.running_mean, rng)
        rearrange(m.running_var, rng)
"""

# id: (code after a correct epoch, a fragment of final-weights' message)
CHANGED_AFTER_THE_EPOCH = {
    "statistics-rearranged-keeping-every-sum": (REARRANGED_STATISTICS, "buffers differ"),
    # code set on the trained model runs whenever it is used: it is not as training left it
    "scores-zeroed-by-a-forward-hook": (
        "model.fc.register_forward_hook(lambda module, args, output: output * 0)\n",
        "after the epoch, a hook is registered on `fc`",
    ),
    "gradients-zeroed-by-a-tensor-hook": (
        "model.fc.weight.register_hook(lambda g: g * 0)\n",
        "after the epoch, a hook is registered on the gradient of `fc.weight`",
    ),
    "call-replaced-on-the-instance": (
        "model.fc._compiled_call_impl = lambda *args, **kwargs: 0\n",
        "after the epoch, the call of `fc` was replaced on the instance",
    ),
    "strides-and-eps": (
        "model.conv1.stride = (4, 4)\nfor m in model.modules():\n"
        "    if isinstance(m, torch.nn.BatchNorm2d):\n        m.eps = 1e3\n",
        "after the epoch, `",
    ),
    "layers-swapped": (
        "import torch.nn as nn\nmodel.avgpool = nn.AdaptiveMaxPool2d(1)\n",
        "`avgpool` is a torch.nn.modules.pooling.AdaptiveMaxPool2d",
    ),
    "head-frozen": ("model.fc.requires_grad_(False)\n", "frozen"),
    "backbone-unfrozen": ("model.layer4.requires_grad_(True)\n", "trainable"),
    "cast-to-float64": ("model.double()\n", "float64"),
    # two neighbouring elements of one frozen weight swapped: every sum moves less than the
    # tolerance
    "two-backbone-elements-swapped": (
        "with torch.no_grad():\n    w = model.layer1[0].conv1.weight.view(-1)\n"
        "    w[100], w[101] = w[101].item(), w[100].item()\n",
        "that a correct epoch leaves exactly as they were (layer1.0.conv1.weight)",
    ),
    # every backbone tensor keeps its elements (and so every sum of them), in another order
    "backbone-shuffled": (
        "with torch.no_grad():\n"
        "    for name, t in list(model.named_parameters()) + list(model.named_buffers()):\n"
        "        if not name.startswith('fc.') and t.is_floating_point() and t.numel() > 1:\n"
        "            t.copy_(t.flatten().flip(0).reshape(t.shape))\n",
        "that a correct epoch leaves exactly as they were",
    ),
}


@pytest.mark.parametrize("case", sorted(CHANGED_AFTER_THE_EPOCH))
def test_a_model_changed_after_its_epoch_fails_the_final_weights(case, grade_answer):
    code, fragment = CHANGED_AFTER_THE_EPOCH[case]
    result = grade_answer("finetune-train-epoch", "import torch\n" + EPOCH + code)
    failed = failures(result)
    assert "final-weights" in failed, failed
    if case != "cast-to-float64":  # a float64 model's own forward fails on the task's data
        assert fragment in failed["final-weights"], failed


def test_an_evaluation_after_the_epoch_keeps_full_marks(grade_answer):
    """eval() and a loss under no_grad are what a learner computes after training: the
    model's values, layers and trainable parameters stay as the epoch left them."""
    code = (
        EPOCH + "import torch\nmodel.eval()\nwith torch.no_grad():\n"
        "    total = sum(criterion(model(x), y).item() for x, y in dataloader)\n"
    )
    assert_full_marks(grade_answer("finetune-train-epoch", code))
