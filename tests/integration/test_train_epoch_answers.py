"""Free-form answers to finetune-train-epoch, graded end to end (the real harness, the
process backend). A correct epoch written in a style the reference does not use gets full
marks, harmless extra work included (a peek at a batch, a printed loss, an evaluation in
eval mode, batches fetched ahead), and is told no mistake; each natural mistake fails the
checks its facts show, with a message that names it, and is told exactly the task's
mistakes it made (a mistake is told when its trigger's facts hold; the result names the
ids of the mistakes it told).

Decisions: an evaluation pass in train mode is wrong (it moves the batch-norm running
statistics, so the model is not what one epoch leaves); so is a summed loss (the task's
criterion averages, and summing takes steps 8 times as large); training with
`model.eval()` is wrong too (the running statistics never move); not calling
`model.train()` is right (the model is in train mode already)."""

from __future__ import annotations

import pytest

from tests.results import assert_full_marks, assert_wrong, messages

pytestmark = pytest.mark.slow

TASK = "finetune-train-epoch"
EPOCH = (
    "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
    "    loss = criterion(model(x), y)\n    loss.backward()\n    optimizer.step()\n"
)
EVALUATE = (
    "def evaluate():\n    model.eval()\n    with torch.no_grad():\n"
    "        return sum(criterion(model(x), y).item() for x, y in dataloader) / len(dataloader)\n\n"
)

CORRECT = {
    # the sandbox keeps torch's thread count: the request changes nothing, and is no error
    "more-threads-asked-for": "import torch\ntorch.set_num_threads(4)\n" + EPOCH,
    "enumerate": (
        "model.train()\nfor i, (inputs, labels) in enumerate(dataloader):\n"
        "    optimizer.zero_grad()\n    outputs = model(inputs)\n"
        "    loss = criterion(outputs, labels)\n    loss.backward()\n    optimizer.step()\n"
    ),
    "while-with-iterator": (
        "model.train()\nit = iter(dataloader)\nwhile True:\n    try:\n"
        "        inputs, labels = next(it)\n    except StopIteration:\n        break\n"
        "    optimizer.zero_grad()\n    criterion(model(inputs), labels).backward()\n"
        "    optimizer.step()\n"
    ),
    "batch-unpacked": (
        "model.train()\nfor batch in dataloader:\n    x, y = batch\n    optimizer.zero_grad()\n"
        "    loss = criterion(model(x), y)\n    loss.backward()\n    optimizer.step()\n"
    ),
    "peek-before-the-loop": (
        "xb, yb = next(iter(dataloader))\nprint(xb.shape, yb[:4].tolist())\n" + EPOCH
    ),
    "loss-under-no-grad-before-and-after": (
        EVALUATE + "before = evaluate()\n" + EPOCH + "after = evaluate()\nprint(before, after)\n"
    ),
    "printing-the-loss": (
        "model.train()\nfor step, (x, y) in enumerate(dataloader):\n    optimizer.zero_grad()\n"
        "    loss = criterion(model(x), y)\n    loss.backward()\n    optimizer.step()\n"
        "    print(f'step {step}: loss {loss.item():.4f}')\n"
    ),
    "set-to-none": EPOCH.replace("optimizer.zero_grad()", "optimizer.zero_grad(set_to_none=True)"),
    "zero-grad-at-the-end": (
        "model.train()\nfor x, y in dataloader:\n    loss = criterion(model(x), y)\n"
        "    loss.backward()\n    optimizer.step()\n    optimizer.zero_grad()\n"
    ),
    "model-zero-grad": EPOCH.replace("optimizer.zero_grad()", "model.zero_grad()"),
    "functional-cross-entropy": (
        "import torch.nn.functional as F\nmodel.train()\nfor x, y in dataloader:\n"
        "    optimizer.zero_grad()\n    F.cross_entropy(model(x), y).backward()\n"
        "    optimizer.step()\n"
    ),
    "eval-pass-after-the-epoch": (
        EPOCH + "model.eval()\ncorrect = 0\nwith torch.no_grad():\n    for x, y in dataloader:\n"
        "        correct += (model(x).argmax(1) == y).sum().item()\nprint('accuracy', correct / 64)\n"
    ),
    "without-model-train": EPOCH.replace("model.train()\n", ""),
    "helper-returning-the-mean-loss": (
        "def train_one_epoch(net, loader, opt, loss_fn):\n    net.train()\n    running = 0.0\n"
        "    for inputs, targets in loader:\n        opt.zero_grad()\n"
        "        loss = loss_fn(net(inputs), targets)\n        loss.backward()\n        opt.step()\n"
        "        running += loss.item() * inputs.size(0)\n    return running / len(loader.dataset)\n\n"
        "print(train_one_epoch(model, dataloader, optimizer, criterion))\n"
    ),
    "moved-to-the-device": (
        "model.to(device)\nmodel.train()\nfor inputs, labels in dataloader:\n"
        "    inputs, labels = inputs.to(device), labels.to(device)\n    optimizer.zero_grad()\n"
        "    criterion(model(inputs), labels).backward()\n    optimizer.step()\n"
    ),
    "zero-grad-after-the-forward": (
        "model.train()\nfor x, y in dataloader:\n    loss = criterion(model(x), y)\n"
        "    optimizer.zero_grad()\n    loss.backward()\n    optimizer.step()\n"
    ),
    "gradients-cleared-by-hand": (
        "model.train()\nfor x, y in dataloader:\n    for p in model.parameters():\n"
        "        p.grad = None\n    criterion(model(x), y).backward()\n    optimizer.step()\n"
    ),
    "tutorial-with-accuracy": (
        "model.train()\nrunning_loss, running_corrects = 0.0, 0\nfor inputs, labels in dataloader:\n"
        "    optimizer.zero_grad()\n    with torch.set_grad_enabled(True):\n"
        "        outputs = model(inputs)\n        _, preds = torch.max(outputs, 1)\n"
        "        loss = criterion(outputs, labels)\n        loss.backward()\n        optimizer.step()\n"
        "    running_loss += loss.item() * inputs.size(0)\n"
        "    running_corrects += int(torch.sum(preds == labels.data))\n"
        "print(running_loss / 64, running_corrects / 64)\n"
    ),
    "batches-listed-first": (
        "model.train()\nbatches = list(dataloader)\nfor x, y in batches:\n    optimizer.zero_grad()\n"
        "    criterion(model(x), y).backward()\n    optimizer.step()\n"
    ),
    "next-batch-fetched-before-the-step": (
        "model.train()\nit = iter(dataloader)\nbatch = next(it, None)\nwhile batch is not None:\n"
        "    x, y = batch\n    optimizer.zero_grad()\n    loss = criterion(model(x), y)\n"
        "    batch = next(it, None)\n    loss.backward()\n    optimizer.step()\n"
    ),
    "peek-inside-the-loop": (
        "model.train()\nfor x, y in dataloader:\n    probe, _ = next(iter(dataloader))\n"
        "    assert probe.shape == x.shape\n    optimizer.zero_grad()\n"
        "    criterion(model(x), y).backward()\n    optimizer.step()\n"
    ),
    "eval-mode-probe-after-each-step": (
        "x0, y0 = next(iter(dataloader))\nmodel.train()\nfor x, y in dataloader:\n"
        "    optimizer.zero_grad()\n    criterion(model(x), y).backward()\n    optimizer.step()\n"
        "    model.eval()\n    with torch.no_grad():\n        probe = criterion(model(x0), y0).item()\n"
        "    model.train()\n"
    ),
    "gradient-norm-printed": (
        "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
        "    criterion(model(x), y).backward()\n"
        "    print(float(sum(p.grad.norm() ** 2 for p in model.fc.parameters()) ** 0.5))\n"
        "    optimizer.step()\n"
    ),
}


@pytest.mark.parametrize("code", list(CORRECT.values()), ids=list(CORRECT))
def test_a_correct_epoch_in_another_style_gets_full_marks(grade_fast, code):
    assert_full_marks(grade_fast(TASK, code))


BATCHES, ORDER, LOSS, WEIGHTS = "all-batches", "step-order", "loss-decreases", "final-weights"
STALE = "gradients from an earlier batch were still there when backward() ran"

WRONG = [
    pytest.param(
        "model.train()\nfor x, y in dataloader:\n    loss = criterion(model(x), y)\n"
        "    loss.backward()\n    optimizer.step()\n",
        {ORDER, LOSS, WEIGHTS}, {ORDER: f"in iteration 2, {STALE}"}, {"gradients-accumulate"},
        id="no-zero-grad",
    ),
    pytest.param(
        "model.train()\noptimizer.zero_grad()\nfor x, y in dataloader:\n"
        "    criterion(model(x), y).backward()\n    optimizer.step()\n",
        {ORDER, LOSS, WEIGHTS}, {ORDER: STALE}, {"gradients-accumulate"},
        id="zero-grad-once-before-the-loop",
    ),
    pytest.param(
        "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
        "    loss = criterion(model(x), y)\n    optimizer.step()\n    loss.backward()\n",
        # Each step finds the gradients cleared: the weights never change, so the loop's
        # batches earn nothing either.
        {BATCHES, ORDER, LOSS, WEIGHTS},
        {ORDER: "in iteration 1, optimizer.step() ran before loss.backward()",
         BATCHES: "do not bear that out: they compute what they did before"},
        {"step-before-backward"}, id="step-before-backward",
    ),
    pytest.param(
        "model.train()\nfor x, y in dataloader:\n    loss = criterion(model(x), y)\n"
        "    loss.backward()\n    optimizer.zero_grad()\n    optimizer.step()\n",
        {BATCHES, ORDER, LOSS, WEIGHTS},
        {
            BATCHES: "do not bear that out: they compute what they did before",
            ORDER: "the gradients were cleared after loss.backward() and before optimizer.step(), "
            "so step() had nothing to apply",
            WEIGHTS: "the optimizer's parameters did not change at all during the epoch",
        },
        {"zero-grad-between-backward-and-step"}, id="zero-grad-between-backward-and-step",
    ),
    pytest.param(
        EPOCH + "    break\n", {BATCHES, LOSS, WEIGHTS},
        {BATCHES: "training consumed 1 of 8 batches: batches 2, 3, 4, 5, ... (+3 more) never fed"},
        {"batches-skipped"}, id="only-one-batch",
    ),
    pytest.param(
        "model.train()\nfor epoch in range(2):\n    for x, y in dataloader:\n"
        "        optimizer.zero_grad()\n        criterion(model(x), y).backward()\n"
        "        optimizer.step()\n",
        {BATCHES, WEIGHTS},
        {
            BATCHES: "training consumed 16 batches: each of the 8 batches fed 2 training steps",
            WEIGHTS: "moved 2.31 times as far from their start as in one correct epoch",
        },
        {"more-than-one-epoch"}, id="two-epochs",
    ),
    pytest.param(
        "model.train()\nfor _ in range(len(dataloader)):\n    x, y = next(iter(dataloader))\n"
        "    optimizer.zero_grad()\n    criterion(model(x), y).backward()\n    optimizer.step()\n",
        {BATCHES, LOSS, WEIGHTS},
        {BATCHES: "batch 1 fed 8 steps, batches 2, 3, 4, 5, ... (+3 more) none): one epoch trains "
         "on every batch once; each iter(dataloader) starts again from the first batch"},
        {"fresh-iterator", "batches-skipped"}, id="the-first-batch-eight-times",
    ),
    pytest.param(
        "model.train()\nfor x, y in dataloader:\n    x, y = next(iter(dataloader))\n"
        "    optimizer.zero_grad()\n    criterion(model(x), y).backward()\n    optimizer.step()\n",
        {BATCHES, LOSS, WEIGHTS},
        {BATCHES: "each iter(dataloader) starts again from the first batch"},
        {"fresh-iterator", "batches-skipped"}, id="a-fresh-iterator-inside-the-loop",
    ),
    pytest.param(
        "model.train()\nfor i, (x, y) in enumerate(dataloader):\n    if i % 2 == 1:\n"
        "        continue\n    optimizer.zero_grad()\n    criterion(model(x), y).backward()\n"
        "    optimizer.step()\n",
        {BATCHES, WEIGHTS},
        {BATCHES: "training consumed 4 of 8 batches: batches 2, 4, 6, 8 never fed a backward and a step"},
        {"batches-skipped"}, id="half-the-batches",
    ),
    pytest.param(
        "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
        "    criterion(model(x), y).backward()\n",
        {BATCHES, ORDER, LOSS, WEIGHTS},
        {
            ORDER: "loss.backward() ran but optimizer.step() was never called",
            LOSS: "went from 2.8146 to 2.8146",
        },
        {"no-step"}, id="no-step",
    ),
    pytest.param(
        "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
        "    loss = criterion(model(x), y)\n    optimizer.step()\n",
        {BATCHES, ORDER, LOSS, WEIGHTS},
        {ORDER: "in iteration 1, optimizer.step() ran without loss.backward() before it"},
        {"no-backward"}, id="no-backward",
    ),
    pytest.param(
        "model.eval()\nwith torch.no_grad():\n    for x, y in dataloader:\n"
        "        loss = criterion(model(x), y)\n",
        {BATCHES, ORDER, LOSS, WEIGHTS},
        {
            ORDER: "neither loss.backward() nor optimizer.step() was called for the 8 batches",
            BATCHES: "no batch was followed by both loss.backward() and optimizer.step()",
        },
        {"nothing-trained"}, id="forward-in-eval-mode-only",
    ),
    pytest.param(
        "import torch.nn.functional as F\nmodel.train()\nfor x, y in dataloader:\n"
        "    optimizer.zero_grad()\n    F.cross_entropy(model(x), y, reduction='sum').backward()\n"
        "    optimizer.step()\n",
        {LOSS, WEIGHTS},
        {WEIGHTS: "the optimizer's parameters moved 10.7 times as far from their start as in one correct epoch"},
        set(), id="summed-loss",
    ),
    pytest.param(
        "for group in optimizer.param_groups:\n    group['lr'] = 0.1\n" + EPOCH,
        {LOSS, WEIGHTS},
        {WEIGHTS: "the optimizer's lr is 0.1 after the epoch, where a correct epoch leaves it at 0.01"},
        {"optimizer-settings-changed"}, id="lr-changed",
    ),
    pytest.param(
        "optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.1)\n" + EPOCH,
        {BATCHES, ORDER, LOSS, WEIGHTS},
        {
            ORDER: "`optimizer` was replaced by another object",
            WEIGHTS: "`optimizer` was replaced by another optimizer; the optimizer's lr is 0.1",
        },
        {"new-optimizer", "optimizer-settings-changed"}, id="a-new-optimizer",
    ),
    pytest.param(
        EPOCH + "with torch.no_grad():\n    print(sum(criterion(model(x), y).item() for x, y in dataloader))\n",
        {WEIGHTS},
        {WEIGHTS: "the parameters after the epoch equal one correct epoch's, but 60 buffers differ "
         "(bn1.running_mean, bn1.running_var, bn1.num_batches_tracked"},
        {"forward-in-train-mode-outside-training"}, id="evaluation-in-train-mode",
    ),
    pytest.param(
        EPOCH.replace("model.train()", "model.eval()"),
        {LOSS, WEIGHTS},
        {WEIGHTS: "the running statistics did not change during the epoch, as they do when the "
         "model trains in train mode (model.train())"},
        {"trained-in-eval-mode"}, id="training-in-eval-mode",
    ),
    pytest.param(
        "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
        "    loss = criterion(model(x), y)\n    loss.backward(retain_graph=True)\n"
        "    loss.backward()\n    optimizer.step()\n",
        {ORDER, LOSS, WEIGHTS},
        {ORDER: "in iteration 1, loss.backward() ran 2 times before optimizer.step()"},
        {"backward-twice"}, id="backward-twice",
    ),
    pytest.param(
        EPOCH + "    optimizer.step()\n", {ORDER, LOSS, WEIGHTS},
        {ORDER: "in iteration 1, optimizer.step() ran 2 times on one batch"},
        {"step-twice"}, id="step-twice",
    ),
    pytest.param(
        "model.train()\nfor i, (x, y) in enumerate(dataloader):\n"
        "    criterion(model(x), y).backward()\n    if i % 2 == 1:\n        optimizer.step()\n"
        "        optimizer.zero_grad()\n",
        {BATCHES, ORDER, WEIGHTS},
        {ORDER: f"in iteration 1, {STALE}", BATCHES: "training consumed 4 of 8 batches"},
        {"gradients-accumulate", "batches-skipped"}, id="gradients-accumulated-over-two-batches",
    ),
    pytest.param(
        # The new layer starts from fresh random weights: its batches earn nothing, since it moved
        # (from the old layer) in no direction training moves a head.
        "model.fc = nn.Linear(512, 10)\n" + EPOCH, {BATCHES, ORDER, LOSS, WEIGHTS},
        {ORDER: "in iteration 1, loss.backward() left no gradients on the optimizer's parameters, "
         "so step() had nothing to apply: 2 parameters the optimizer holds are no longer the model's",
         BATCHES: "not as training on the epoch's batches moves them"},
        {"optimizer-not-model"}, id="head-replaced-after-the-optimizer",
    ),
    pytest.param(
        "model.train()\ninputs, labels = next(iter(dataloader))\nfor _ in range(len(dataloader)):\n"
        "    optimizer.zero_grad()\n    criterion(model(inputs), labels).backward()\n"
        "    optimizer.step()\n",
        {BATCHES, ORDER, LOSS, WEIGHTS},
        {
            ORDER: "in iteration 1, its batch fed 8 rounds of loss.backward() and optimizer.step(), "
            "each in order",
            BATCHES: "batch 1 was taken from the data loader once and trained on again and again",
        },
        {"same-batch-reused", "batches-skipped"}, id="one-batch-taken-once-trained-eight-times",
    ),
    pytest.param(
        "model.train()\nfor x, y in DataLoader(dataloader.dataset, batch_size=16):\n"
        "    optimizer.zero_grad()\n    criterion(model(x), y).backward()\n    optimizer.step()\n",
        {BATCHES, ORDER, WEIGHTS},
        {ORDER: "optimizer.step() ran 4 times, but no batch was taken from `dataloader`"},
        {"dataloader-not-used"}, id="a-new-data-loader",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("code", "failing", "fragments", "mistakes"), WRONG)
def test_a_mistake_fails_the_checks_its_facts_show_and_is_named(
    grade_fast, code, failing, fragments, mistakes
):
    result = grade_fast(TASK, code)
    assert result.outcome == "failed", (result.error, messages(result))
    assert_wrong(result, failing, fragments, mistakes)


def test_labels_and_inputs_swapped_is_a_runtime_error_named_by_its_mistake(grade_fast):
    code = (
        "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
        "    loss = criterion(model(y), x)\n    loss.backward()\n    optimizer.step()\n"
    )
    result = grade_fast(TASK, code)
    assert result.outcome == "runtime_error" and result.score == 0
    assert result.error and "line 4" in result.error
    assert any("Passing labels to model instead of inputs" in f for f in result.feedback)
    assert result.mistakes == ["labels-to-model"], result.feedback


# An answer stopped by its exception: the mistakes its exception shows, and those the facts
# show that an early stop cannot produce; none of those a stop alone produces (batches left
# out, no step yet, nothing trained).
RAISING = [
    pytest.param(None, {1: "B", 2: "B", 3: "C"}, {"labels-to-model"}, id="seed-labels-to-model"),
    pytest.param(None, {1: "A", 2: "B", 3: "D"}, {"forward-on-loss"}, id="seed-loss-forward"),
    pytest.param(None, {1: "A", 2: "A", 3: "C"}, {"inputs-as-target"}, id="seed-inputs-as-target"),
    pytest.param(
        "model.train()\nfor i, (x, y) in enumerate(dataloader):\n    if i == 3:\n"
        "        raise RuntimeError('stop')\n    optimizer.zero_grad()\n"
        "    criterion(model(x), y).backward()\n    optimizer.step()\n",
        None, set(), id="stopped-after-three-batches",
    ),
    pytest.param(
        "model.train()\nfor x, y in dataloader:\n    optimizer.zero_grad()\n"
        "    criterion(model(x), y).backward()\n    print(undefined_name)\n    optimizer.step()\n",
        None, set(), id="stopped-between-backward-and-step",
    ),
    pytest.param(
        "model.train()\nfor x, y in dataloader:\n    criterion(model(x), y).backward()\n"
        "    optimizer.step()\nprint(undefined_name)\n",
        None, {"gradients-accumulate"}, id="no-zero-grad-then-stopped",
    ),
    pytest.param(
        "model.train()\nwith torch.no_grad():\n    for x, y in dataloader:\n"
        "        optimizer.zero_grad()\n        criterion(model(x), y).backward()\n"
        "        optimizer.step()\n",
        None, {"backward-without-graph"}, id="training-under-no-grad",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("code", "blanks", "mistakes"), RAISING)
def test_an_answer_that_raises_is_told_the_mistakes_its_run_shows(
    grade_fast, code, blanks, mistakes
):
    result = grade_fast(TASK, code, blanks=blanks)
    assert result.outcome == "runtime_error" and result.score < result.max_score, messages(result)
    assert set(result.mistakes) == mistakes, (
        {c.name: c.reasons for c in result.checks},
        result.error,
    )
