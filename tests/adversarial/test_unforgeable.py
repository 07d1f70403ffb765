"""Each way an answer was found to talk its way to a score, closed: answers that do not do
the task, dressed up so that a grader reading through Python (or through torch) would see
the right facts. Each must not pass, and what it planted must never run while observed."""

from __future__ import annotations

import re

import pytest

from services.answers import Answer
from services.grading import grade
from tests.adversarial.tripwires import TRIPWIRE_MARK, tripwire_answer
from tests.results import failures

pytestmark = [pytest.mark.slow]

FINALISERS = """
import builtins, gc, os, sys, threading, weakref
armed = []
class Planted:
    def __del__(self):
        if armed:
            os.write(1, f"\\nFINALISER RAN in {threading.current_thread().name}\\n".encode())
            frame = sys._getframe()
            while frame is not None:  # what the main thread's frames would hand over
                for name, value in list(frame.f_locals.items()):
                    if isinstance(value, dict) and 'frozen' in value:
                        value['frozen'] = '{"facts": {"parameters": {}}}'
                frame = frame.f_back
class Sneaky(dict):
    def __bool__(self):
        sys._getframe(1).f_locals.setdefault('planted', Planted())
        return dict.__len__(self) > 0
    def __len__(self):
        self.planted = Planted()
        return dict.__len__(self)
    def __iter__(self):
        self.planted = Planted()
        return dict.__iter__(self)
for m in model.modules():
    object.__getattribute__(m, '__dict__')['_parameters'] = Sneaky(m._parameters)
builtins.print = Planted()          # dropped when the builtins are put back
weakref.finalize(model, Planted().__del__)
cycle = [Planted()]; cycle.append(cycle); del cycle   # garbage for the collector
gc.enable()
armed.append(True)
"""


def test_no_finaliser_or_protocol_method_of_the_answer_runs_while_it_is_observed(grade_answer):
    result = grade_answer("finetune-freeze", FINALISERS)
    assert "FINALISER RAN" not in result.stdout, result.stdout
    assert result.score == 0 and result.outcome == "failed", result.model_dump_json(indent=2)


TORCH_FUNCTION = """
import torch
class Liar(torch.nn.Parameter):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, '__name__', '') == '__get__' and 'requires_grad' in repr(func):
            return False
        return super().__torch_function__(func, types, args, kwargs or {})
for m in model.modules():
    for name, p in list(m._parameters.items()):
        if p is not None:
            m._parameters[name] = Liar(p.data, requires_grad=True)
"""


def test_torch_function_cannot_answer_for_what_is_read(grade_answer):
    result = grade_answer("finetune-freeze", TORCH_FUNCTION)
    assert result.score == 0, result.model_dump_json(indent=2)
    assert "tampered" in result.checks[0].message


OPTIMIZER_IMPERSONATION = """
import torch
class SGD(torch.optim.Adam):
    pass
SGD.__module__, SGD.__qualname__ = 'torch.optim.sgd', 'SGD'
optimizer = SGD(model.parameters(), lr=0.1)
fake = {'params': list(model.fc.parameters()), 'lr': 0.001, 'momentum': 0.9}
class Groups(list):
    def __getitem__(self, index):
        return [fake] if isinstance(index, slice) else fake
    def __iter__(self):
        return iter([fake])
    def __len__(self):
        return 1
optimizer.__dict__['param_groups'] = Groups(optimizer.param_groups)
"""


def test_an_optimizer_that_claims_another_class_gets_nothing(grade_answer):
    result = grade_answer("finetune-optimizer", OPTIMIZER_IMPERSONATION)
    assert result.score == 0, result.model_dump_json(indent=2)


NO_TRAINING_ZERO_LOSS_KERNEL = """
import torch
library = torch.library.Library('aten', 'IMPL')
def zero_loss(self, target, weight, reduction, ignore_index):
    return torch.zeros((), dtype=self.dtype), torch.zeros((), dtype=self.dtype)
library.impl('nll_loss_forward', zero_loss, 'CPU')
"""

NO_TRAINING_DISPATCH_MODE = """
import torch
from torch.utils._python_dispatch import TorchDispatchMode
class ZeroLoss(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if 'nll_loss' in str(func):
            return torch.zeros_like(out[0]), out[1]
        return out
class Pushing(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, x):
        ZeroLoss().__enter__()   # never left: a mode that stays pushed in the thread it ran in
        return self.inner(x)
model.fc = Pushing(model.fc)
ZeroLoss().__enter__()
"""


@pytest.mark.parametrize(
    "code", [NO_TRAINING_ZERO_LOSS_KERNEL, NO_TRAINING_DISPATCH_MODE], ids=["aten-kernel", "mode"]
)
def test_changing_what_torch_computes_does_not_lower_the_loss(grade_answer, code):
    result = grade_answer("finetune-train-epoch", code)
    verdicts = {c.name: c for c in result.checks}
    assert verdicts["loss-decreases"].passed is False, result.model_dump_json(indent=2)
    assert result.score == 0, result.model_dump_json(indent=2)


def test_a_registered_kernel_is_named_as_a_change_of_torch(grade_answer):
    code = (
        "model.train()\nfor inputs, labels in dataloader:\n    optimizer.zero_grad()\n"
        "    criterion(model(inputs), labels).backward()\n    optimizer.step()\n"
        + NO_TRAINING_ZERO_LOSS_KERNEL
    )
    result = grade_answer("finetune-train-epoch", code)
    message = {c.name: c.message for c in result.checks}["loss-decreases"]
    assert "changed torch itself" in message and "nll_loss_forward" in message, message


def test_a_thread_left_running_is_an_error_not_a_grade(grade_answer):
    code = (
        "import threading, time\nmodel.requires_grad_(False)\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    )
    result = grade_answer("finetune-freeze", code)
    assert result.outcome == "runtime_error", result.model_dump_json(indent=2)
    assert "left a thread running" in (result.error or ""), result.error


def test_a_tripwire_touched_outside_a_call_into_the_answer_is_seen(grade_answer):
    """The control of the tripwire suite: a wire the answer itself touches fires."""
    code = tripwire_answer("parameter-dicts") + "bool(model._parameters)\n"
    result = grade_answer("finetune-freeze", code)
    assert any(line.startswith(TRIPWIRE_MARK) for line in result.stdout.splitlines())


def test_a_helper_process_cannot_read_the_harness_memory(
    backend, attack_spec, attack_expected, settings
):
    code = (
        "import os, subprocess, sys\n"
        'probe = f\'open("/proc/{os.getpid()}/mem", "rb"); print("OPENED")\'\n'
        "subprocess.run([sys.executable, '-c', probe])\n"
        "print('PROBED')\n"
    )
    result = grade(
        attack_spec, Answer(code=code), backend=backend, expected=attack_expected, settings=settings
    )
    assert "PROBED" in result.stdout, result.model_dump_json(indent=2)
    assert "OPENED" not in result.stdout, result.stdout


def _every_class():
    return (
        "def every_class():\n"
        "    seen, stack = set(), [object]\n"
        "    while stack:\n"
        "        cls = stack.pop()\n"
        "        for sub in type.__subclasses__(cls):\n"
        "            if id(sub) not in seen:\n"
        "                seen.add(id(sub)); stack.append(sub); yield sub\n"
    )


GRADER_GLOBALS = _every_class() + (
    "for cls in every_class():\n"
    "    if cls.__module__.startswith(('contract.', 'sandboxed.')):\n"
    "        for value in list(vars(cls).values()):\n"
    "            space = getattr(value, '__globals__', None)\n"
    "            if isinstance(space, dict) and '_plain_items' in space:\n"
    "                space['_plain_items'] = lambda d, what: list(dict.items(d))\n"
    "                space['requires_grad'] = lambda t: False\n"
    "                print('PATCHED', space['__name__'])\n"
)

GRADER_CLASSES = _every_class() + (
    "for cls in every_class():\n"
    "    if cls.__module__ == 'contract.checks.trainable_params' and cls.__name__ == 'Params':\n"
    "        cls.variable = property(lambda self: 'nothing_here')\n"
    "        print('PATCHED', cls)\n"
)

GRADER_CODE = _every_class() + (
    "for cls in every_class():\n"
    "    if cls.__module__.startswith(('contract.', 'sandboxed.')):\n"
    "        for value in list(vars(cls).values()):\n"
    "            if callable(value) and hasattr(value, '__code__'):\n"
    "                try:\n"
    "                    value.__code__ = (lambda *a, **k: None).__code__\n"
    "                    print('REPLACED', value)\n"
    "                except Exception as exc:\n"
    "                    print('refused', type(exc).__name__)\n"
    "                    raise SystemExit\n"
)


@pytest.mark.parametrize(
    "code", [GRADER_GLOBALS, GRADER_CLASSES], ids=["module-globals", "class-descriptor"]
)
def test_changing_the_graders_own_code_is_found(grade_answer, code):
    """Every class is reachable (`object.__subclasses__()`), and through a method its
    module: what an answer changes there fails every check instead of reaching them."""
    result = grade_answer("finetune-freeze", code)
    assert "PATCHED" in result.stdout, result.model_dump_json(indent=2)
    assert result.score == 0, result.model_dump_json(indent=2)
    assert "changed the grader's own code" in result.checks[0].message, result.checks[0]


def test_replacing_a_graders_function_code_is_refused(grade_answer):
    result = grade_answer("finetune-freeze", GRADER_CODE)
    assert "refused PermissionError" in result.stdout and "REPLACED" not in result.stdout
    assert result.score == 0


FORWARD_ON_THE_INSTANCE = """
import torch
_images, _labels = dataloader.dataset.tensors
model.forward = lambda x: torch.nn.functional.one_hot(_labels, 10).float() * 30
"""


def test_a_forward_set_on_the_instance_does_not_lower_the_loss(grade_answer):
    """The loss is what the weights compute by the setup's model, whatever forward the
    answer's model was given."""
    result = grade_answer("finetune-train-epoch", FORWARD_ON_THE_INSTANCE)
    check = {c.name: c for c in result.checks}["loss-decreases"]
    before, after = re.search(r"went from ([0-9.]+) to ([0-9.]+)", check.message).groups()
    assert not check.passed and before == after, result.model_dump_json(indent=2)
    assert result.score == 0


MEMORY_BY_OTHER_NAMES = """
import os
for path in (b'/proc/self/mem', '/proc/self/./mem', '/proc/thread-self/mem'):
    try:
        open(path, 'rb'); print('OPENED', path)
    except (OSError, RuntimeError) as exc:
        print('refused', type(exc).__name__)
try:
    os.open('mem', os.O_RDONLY, dir_fd=os.open('/proc/self', os.O_RDONLY)); print('OPENED dir_fd')
except (OSError, RuntimeError) as exc:
    print('refused', type(exc).__name__)
try:
    os.symlink('/proc/self/mem', '/tmp/m'); open('/tmp/m', 'rb'); print('OPENED link')
except (OSError, RuntimeError) as exc:
    print('refused', type(exc).__name__)
"""


def test_process_memory_is_refused_however_it_is_named(grade_answer):
    result = grade_answer("finetune-freeze", MEMORY_BY_OTHER_NAMES)
    assert "OPENED" not in result.stdout and result.stdout.count("refused") == 5, result.stdout


ZOMBIE_THREAD = """
import gc, threading, time
model.requires_grad_(False)
class Lingers:
    def __del__(self):          # runs while the thread's state is cleared, after it counted out
        end = time.monotonic() + 15
        while time.monotonic() < end:
            gc.enable()
local = threading.local()
def start():
    local.keep = Lingers()
threading.Thread(target=start).start()
time.sleep(0.2)
"""


def test_a_thread_still_clearing_its_state_is_a_thread_left_running(grade_answer):
    result = grade_answer("finetune-freeze", ZOMBIE_THREAD)
    assert result.outcome in ("runtime_error", "time_limit"), result.model_dump_json(indent=2)
    assert result.score == 0


def test_an_answer_that_prints_tensors_and_makes_named_tuples_is_graded_as_usual(grade_answer):
    """What the audit hook refuses is the grader's code, not the code torch or the standard
    library change as they load (a named tuple sets its constructor's defaults)."""
    code = (
        "import collections, torch\n"
        "Pair = collections.namedtuple('Pair', 'a b', defaults=(0,))\n"
        "print(torch.tensor([1, 2]), Pair(1))\n"
        "model.requires_grad_(False)\n"
    )
    result = grade_answer("finetune-freeze", code)
    assert result.outcome == "passed", result.model_dump_json(indent=2)
    assert "tensor([1, 2])" in result.stdout


INSTRUMENTATION_GLOBALS = """
import torch
torch.autograd.backward.__globals__['tensor_item'] = lambda t: False
model.train()
for inputs, labels in dataloader:
    loss = criterion(model(inputs), labels)
    loss.backward()
    optimizer.step()
"""


def test_the_training_loops_instrumentation_is_held_unchanged(grade_answer):
    """The instrumentation is within the answer's reach (it runs in the answer's loop);
    what an answer changes of it fails the checks instead of hiding a missing zero_grad."""
    result = grade_answer("finetune-train-epoch", INSTRUMENTATION_GLOBALS)
    verdicts = {c.name: c for c in result.checks}
    assert verdicts["step-order"].passed is False, result.model_dump_json(indent=2)
    assert "changed the grader's own code" in verdicts["step-order"].message


LIBRARY_WRAPPER = """
import sys, torch.optim as optim
import numpy._core._dtype as dtype_module
optimizer = optim.SGD(model.parameters(), lr=0.01)
original, done = dtype_module._name_get, []
def rebound(dtype):
    if not done:
        done.append(1)
        frame = sys._getframe(1)
        while frame is not None and 'ctx' not in frame.f_locals:
            frame = frame.f_back
        if frame is not None:
            print('REACHED THE OBSERVER')
    return original(dtype)
dtype_module._name_get = rebound
"""

LIBRARY_FUNCTION = """
import numpy, math
numpy.array_equal = lambda *a, **k: print('REACHED THE OBSERVER') or True
math.sqrt = lambda x: print('REACHED THE OBSERVER') or 0.0
"""


@pytest.mark.parametrize(
    ("task", "code"),
    [("finetune-optimizer", LIBRARY_WRAPPER), ("finetune-train-epoch", LIBRARY_FUNCTION)],
    ids=["numpy-internals", "numpy-and-math-functions"],
)
def test_rebinding_what_the_observers_call_in_a_library_is_found(grade_answer, task, code):
    """numpy's Python-level code and a module attribute looked up as the observers run
    are the answer's to rebind: that is found before any observer runs."""
    result = grade_answer(task, code)
    assert "REACHED THE OBSERVER" not in result.stdout, result.stdout
    assert result.score == 0, result.model_dump_json(indent=2)
    assert "changed the grader's own code" in result.checks[0].message, result.checks[0]


FORGED_RECORD = {
    # The instrumentation's own log, written directly: a perfect epoch on paper.
    "log-written": """
log = __import__('torch').autograd.backward.__globals__['log']
for i in range(8):
    log('b%d' % i); log('w'); log('s')
""",
    # The real loader and the optimizer's own step hook, called by hand: no backward, no step.
    "hooks-called": """
import torch
hooks = list(optimizer._optimizer_step_pre_hooks.values())
log = torch.autograd.backward.__globals__['log']
for p in optimizer.param_groups[0]['params']:
    p.grad = torch.ones_like(p)
for inputs, labels in dataloader:
    log('w')
    for hook in hooks:
        hook(optimizer, (), {})
""",
}


@pytest.mark.parametrize("code", FORGED_RECORD.values(), ids=FORGED_RECORD.keys())
def test_a_record_of_the_loop_written_by_the_answer_earns_nothing(grade_answer, code):
    """The event log is within the answer's reach: a log that records steps which wrote
    none of the optimizer's parameters is told as forged, and no check passes."""
    result = grade_answer("finetune-train-epoch", code)
    verdicts = {c.name: c for c in result.checks}
    assert result.score == 0, result.model_dump_json(indent=2)
    for name in ("all-batches", "step-order"):
        assert "record-forged" in verdicts[name].reasons, verdicts[name]
        assert "written by the answer" in verdicts[name].message


# A perfect epoch on paper that the weights cannot bear out: the log written by hand, every
# step's in-place write counted by bumping the version counters, and the weights moved (by
# as far as an epoch moves them, or to infinity) without a single gradient.
RANDOM_WEIGHTS = """
import torch
from torch.autograd.graph import increment_version
log = torch.autograd.backward.__globals__['log']
params = optimizer.param_groups[0]['params']
for i in range(8):
    log('b%d' % i); log('w'); log('s')
    for p in params:
        increment_version(p)
with torch.no_grad():
    for p in params:
        p.add_(torch.randn_like(p) * {scale})
"""


@pytest.mark.parametrize("scale", ["0.05", "float('inf')"], ids=["at-random", "to-infinity"])
def test_a_written_record_over_weights_moved_without_training_earns_nothing(grade_answer, scale):
    result = grade_answer("finetune-train-epoch", RANDOM_WEIGHTS.format(scale=scale))
    verdicts = {c.name: c for c in result.checks}
    assert result.score == 0, result.model_dump_json(indent=2)
    for name in ("all-batches", "step-order"):
        assert "no-effect" in verdicts[name].reasons, verdicts[name]


@pytest.mark.parametrize("factor", ["0.0", "0.3"], ids=["zeroed", "shrunk"])
def test_a_head_shrunk_without_training_earns_nothing_for_the_lower_loss(grade_answer, factor):
    """Scores closer to uniform lower the loss on the epoch's (random) labels, below a
    correct epoch's; no batch was trained on."""
    code = f"import torch\nwith torch.no_grad():\n    for p in model.fc.parameters():\n        p.mul_({factor})\n"
    result = grade_answer("finetune-train-epoch", code)
    verdicts = {c.name: c for c in result.checks}
    assert result.score == 0, result.model_dump_json(indent=2)
    assert verdicts["loss-decreases"].reasons == ["not-trained"], verdicts["loss-decreases"]


def test_an_optimizer_whose_groups_were_swapped_for_a_list_subclass_is_tampered(grade_answer):
    """The optimizer the task gave, its param_groups now a list subclass whose slices lie:
    the structure was tampered with, not the optimizer replaced."""
    code = """
class Groups(list):
    def __getitem__(self, i):
        return super().__getitem__(i)
model.train()
for inputs, labels in dataloader:
    optimizer.zero_grad()
    criterion(model(inputs), labels).backward()
    optimizer.step()
optimizer.param_groups = Groups(optimizer.param_groups)
"""
    result = grade_answer("finetune-train-epoch", code)
    assert result.score == 0, result.model_dump_json(indent=2)
    for check in result.checks:
        assert "tampered" in check.reasons, check
        assert "optimizer-replaced" not in check.reasons, check


MEMORISED = """
imgs, labs = dataloader.dataset.tensors
table = {float(imgs[i].sum()): int(labs[i]) for i in range(len(imgs))}
def memorised(self, x):
    out = torch.zeros(x.shape[0], 10)
    for i in range(x.shape[0]):
        out[i, table.get(float(x[i].sum()), 0)] = 30.0
    return out
"""
NO_TRAINING = {
    # A forward that knows the labels, put in the model's class for everyone; steps the
    # step hook records, version counters raised without a write, one weight nudged.
    "class-forward-and-hooks-called": "import torch, torchvision\n"
    + MEMORISED
    + """
torchvision.models.resnet.ResNet.forward = memorised
hook = list(optimizer._optimizer_step_pre_hooks.values())[0]
params = [p for g in optimizer.param_groups for p in g["params"]]
for inputs, labels in dataloader:
    optimizer.zero_grad()
    torch.autograd.backward(torch.zeros(1, requires_grad=True).sum())
    for p in params:
        p.grad = torch.ones_like(p)
    hook(optimizer, (), {})
    for p in params:
        torch.autograd.graph.increment_version(p)
with torch.no_grad():
    params[1][0] += 1e-3
optimizer.zero_grad()
""",
    # The same forward in a class of the answer's own; the log written by hand; lr set to 0.
    "own-class-and-log-written": "import torch\n"
    + MEMORISED
    + """
model.__class__ = type("Memorised", (type(model),), {"forward": memorised})
log = torch.autograd.backward.__globals__["log"]
params = [p for g in optimizer.param_groups for p in g["params"]]
for i in range(len(dataloader)):
    log("b%d" % i); log("w"); log("s")
    for p in params:
        torch.autograd.graph.increment_version(p)
for g in optimizer.param_groups:
    g["lr"] = 0
""",
    # Real steps, on gradients made up without a forward.
    "made-up-gradients": """
params = [p for g in optimizer.param_groups for p in g["params"]]
for inputs, labels in dataloader:
    optimizer.zero_grad()
    torch.autograd.backward(torch.ones(1, requires_grad=True).sum())
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    optimizer.step()
""",
}


@pytest.mark.parametrize("code", NO_TRAINING.values(), ids=NO_TRAINING.keys())
def test_an_epoch_that_trained_nothing_earns_nothing(grade_answer, code):
    """The loss is what the answer's weights compute by the setup's code, and a record of
    the loop counts only for weights that learned: no forward, class or record of the
    answer's earns a point without training."""
    result = grade_answer("finetune-train-epoch", "import torch\n" + code)
    assert result.score == 0, result.model_dump_json(indent=2)


def test_a_correct_epochs_model_given_another_class_afterwards_loses_only_the_final_weights(
    grade_answer,
):
    """What the loop did still counts (the loss is measured on the setup's own classes, so
    the new forward's error changes nothing), but a model whose class was changed after the
    epoch is not left as training left it."""
    code = """
model.train()
for inputs, labels in dataloader:
    optimizer.zero_grad()
    loss = criterion(model(inputs), labels)
    loss.backward()
    optimizer.step()
class Loud(type(model)):
    def forward(self, x):
        raise ValueError("x" * 3000)
model.__class__ = Loud
"""
    failed = failures(grade_answer("finetune-train-epoch", code))
    assert set(failed) == {"final-weights"}, failed
    assert "after the epoch, the model is a Loud" in failed["final-weights"], failed


@pytest.mark.parametrize(
    ("task", "code"),
    [
        ("finetune-replace-head", "class Head(nn.Linear):\n    def forward(self, x):\n        return super().forward(x)[:, :10]\nmodel.fc.__class__ = Head\n"),
        ("mobilenet-replace-classifier", "class Head(nn.Linear):\n    def forward(self, x):\n        return super().forward(x)[:, :5]\nmodel.classifier[1].__class__ = Head\n"),
    ],
    ids=["resnet", "mobilenet"],
)  # fmt: skip
def test_a_head_that_only_answers_the_right_shape_earns_no_baseline_points(
    grade_answer, task, code
):
    """The old head, sliced by a forward of the answer's: the shapes its forward gives are
    what its code says; the checks an empty answer passes stay at 0 while every check read
    from the model's state fails."""
    result = grade_answer(task, "import torch.nn as nn\n" + code)
    assert not any(c.passed for c in result.checks if c.name == "new-head"), result.checks
    earned = {c.name: c.points for c in result.checks if c.points}
    assert set(earned) <= {"head-shape", "classifier-shape", "model-output"}, earned
    assert result.score <= 4, result.model_dump_json(indent=2)


UNFREEZING_HOOK = """
import torch
def unfreeze(module, *_):
    torch.nn.Module.requires_grad_(module, True)
"""
HOOKED = {
    "forward-pre-hook": "model.requires_grad_(False)\nmodel.register_forward_pre_hook(unfreeze)",
    "hook-on-a-layer": "model.requires_grad_(False)\nmodel.bn1.register_forward_hook(unfreeze)",
    "full-backward-hook": "model.requires_grad_(False)\n"
    "model.fc.register_full_backward_hook(lambda *a: unfreeze(model))",
    "global-hook": "model.requires_grad_(False)\n"
    "torch.nn.modules.module.register_module_forward_pre_hook(unfreeze)",
}


@pytest.mark.parametrize("task", ["finetune-freeze", "finetune-replace-head"])
@pytest.mark.parametrize("hook", HOOKED.values(), ids=HOOKED.keys())
def test_a_model_frozen_with_a_hook_that_unfreezes_it_is_tampered(grade_answer, task, hook):
    """The flags read frozen, but a hook sets them back the first time the model is used:
    what is frozen is the model's code's to decide, so the model is refused, not judged."""
    code = UNFREEZING_HOOK
    if task == "finetune-replace-head":
        code += "model.fc = torch.nn.Linear(model.fc.in_features, 10)\n"
    result = grade_answer(task, code + hook)
    # Only output shapes (what a forward gives, which a backward hook does not change) may
    # still earn points.
    earned = {c.name for c in result.checks if c.points}
    assert earned <= {"head-shape", "model-output"}, result.model_dump_json(indent=2)
    told = [c for c in result.checks if "tampered" in c.reasons]
    assert told and all("hook" in c.message for c in told), result.model_dump_json(indent=2)
    assert {"frozen", "backbone-frozen"} & {c.name for c in told}, [c.name for c in told]
