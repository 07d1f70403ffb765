"""`output_shape`'s observer: a module's output shape on a seeded input, the features
that reach `features_at`, and whether one gradient step changes what it computes
(`learns`) (the check: contract/checks/output_shape.py).
"""

from __future__ import annotations

import builtins

# A private copy of the builtins: what the answer's forward rebinds does not reach the
# code that reads its results.
__builtins__ = dict(builtins.__dict__)

from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from contract.checks.base import MAX_NAMES, ObservationError  # noqa: E402
from contract.checks.output_shape import TYPE, Params  # noqa: E402
from sandboxed.observe.architecture import find_module  # noqa: E402

__all__ = ["TYPE", "EXECUTES_ANSWER", "observe"]  # what the harness reads

EXECUTES_ANSWER = True  # it calls the module's forward, which the answer may have written
MAX_FEATURE_ELEMENTS = 1_000_000

# The probe's forward, compiled into a namespace of its own: the answer's forward can reach
# the probe (it is where the submodule was), and from it only the list it appends to and
# the submodule it wraps.
_PROBE = """
def forward(self, *args, **kwargs):
    record(args)
    return call(inner, *args, **kwargs)
"""


# One gradient step's forward and backward, compiled into a namespace of its own like the
# probe: the module's forward and the backward of what it computed are the answer's code,
# and the frames they can walk up to lead to C functions and to the step's arguments.
_STEP = """
def gradients(module, inputs, labels, params):
    out = call(module, inputs)
    if exact_type(out) is not tensor_type:
        return None
    with no_torch_function():
        loss = cross_entropy(out, labels, None, 1, -100, 0.0)
        return run_backward((loss,), (ones_like(loss),), False, False, params, True, False)
"""
LEARNING_RATE = 1.0


def _step_function(ti: Any) -> Any:
    """A fresh copy of the step for each call: what the answer's code changes in its
    namespace during one call does not reach another."""
    space: dict = {
        "__builtins__": {},
        "call": ti._module_call,
        "exact_type": type,
        "tensor_type": ti._Tensor,
        "no_torch_function": ti._no_torch_function,
        "cross_entropy": ti._cross_entropy_loss,
        "ones_like": ti._ones_like,
        "run_backward": ti._run_backward,
    }
    exec(compile(_STEP, "<gradient step>", "exec"), space)
    return space["gradients"]


def _probe(ti: Any, target: Any, box: list) -> Any:
    """A module of the grader's that records its input in box and calls target with it."""
    space: dict = {"__builtins__": {}, "record": box.append, "call": ti._module_call}
    space["inner"] = target
    exec(compile(_PROBE, "<probe>", "exec"), space)
    probe = type("FeatureProbe", (ti._Module,), {"forward": space["forward"]})()
    probe._modules["inner"] = target  # so that eval mode and the hook checks reach it
    return probe


def _holder(ti: Any, model: Any, path: str, what: str) -> tuple[Any, str, Any] | None:
    """(the dict of submodules that holds the module at path, its key there, the module)."""
    parent_path, _, name = path.rpartition(".")
    parent = find_module(ti, model, parent_path, what)
    target = None if parent is None else find_module(ti, parent, name, what)
    if target is None:
        return None
    # find_module read the parent's submodules: an exact dict (or OrderedDict), keyed by
    # exact strings.
    return ti._field(ti._fields_of(parent, what), "_modules"), name, target


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    where = params.variable + (f".{params.module}" if params.module else "")
    model = ti.lookup(ctx.scope, params.variable)
    module = ti.submodule(model, params.module, params.variable)
    x = ti.seeded_input(params.input_shape, ctx.seed)
    holder, box, features = None, [], None
    if params.features_at:
        holder = _holder(ti, model, params.features_at, params.variable)
        features = {"found": holder is not None}
    if holder is not None:
        children, name, target = holder
        ti.replace_item(children, name, _probe(ti, target, box))
    try:
        try:
            out = ti.forward(module, x)
        finally:
            if holder is not None:
                ti.replace_item(children, name, target)
    except ti.AnswerRaised as exc:  # the student's module failing on the input is a fact
        return {
            "error": f"`{where}` raised {exc.kind} on an input of shape {params.input_shape}: {exc.text}"[
                :2000
            ]
        }
    facts: dict = {"shape": ti.shape_of(out)}
    if params.per_sample and len(facts["shape"]) >= 1 and facts["shape"][0] >= 2:
        facts["per_sample"] = _beside_others(ctx, module, x, out, ctx.seed, where)
    if params.learns and len(facts["shape"]) == 2:
        facts["learns"] = _learns(ctx, module, x, out, where)
    if features is not None:
        if holder is not None:
            features |= _read_features(ctx, params, box)
        facts["features"] = features
    return facts


def _read_features(ctx, params: Params, box: list) -> dict:
    """How often the hook ran, and the first input it saw (exported as a tensor)."""
    ti = ctx.ti
    calls = len(box)
    first = box[0] if calls else None
    if type(first) is not tuple or len(first) == 0:
        return {"calls": calls}
    try:
        shape = ti.shape_of(first[0])
    except ObservationError:  # not a plain tensor
        return {"calls": calls}
    if ti.numel(first[0]) > MAX_FEATURE_ELEMENTS:
        raise ObservationError(
            f"the input reaching `{params.variable}.{params.features_at}` has more than "
            f"{MAX_FEATURE_ELEMENTS:,} elements: compare the features at a smaller module"
        )
    ctx.add_tensor("features", ti.to_numpy(first[0]).astype(np.float32))
    return {"calls": calls, "shape": shape}


def _beside_others(ctx, module: Any, x: Any, out: Any, seed: int, where: str) -> dict:
    """The module's output for the first sample of `x`, and for it again among other
    companions (eval mode): this check's tensors, compared on the host."""
    ti = ctx.ti
    again = ti.with_first_sample(x, seed + 1)
    try:
        other = ti.forward(module, again)
    except ti.AnswerRaised as exc:
        return {"error": f"`{where}` raised {exc.kind} on another batch: {exc.text}"[:2000]}
    first, beside = ti.to_numpy(out), ti.to_numpy(other)
    if first.shape != beside.shape:
        return {"error": f"`{where}` gives another shape on another batch of that shape"}
    ctx.add_tensor("first-sample", first[:1].astype(np.float32))
    ctx.add_tensor("first-sample-again", beside[:1].astype(np.float32))
    return {}


def _learns(ctx, module: Any, x: Any, out: Any, where: str) -> dict | None:
    """One plain gradient step on the module's trainable parameters (train mode, the
    cross-entropy of its output against labels 0, 1, ...), then its eval-mode output again:
    both outputs are this check's tensors, compared on the host, and the facts name the
    weights (not the biases: what learns there depends on the input) that a gradient
    reached. The trainable parameters and the buffers are put back afterwards. None when
    nothing is trainable (the head's checks tell)."""
    ti = ctx.ti
    named = [(n, p) for n, p in ti.named_parameters(module) if ti.requires_grad(p)]
    trainable = tuple(p for _, p in named)
    if not trainable:
        return None
    before = ti.to_numpy(out)
    rows, classes = before.shape
    labels = ti.class_labels(rows, classes, out)
    # What the step and a train-mode forward change: the trainable parameters and the buffers.
    buffers = [(t, ti.copy_of(t)) for _, t in ti.named_buffers(module)]
    saved = [(t, ti.copy_of(t)) for t in trainable] + buffers
    try:
        flags = ti.set_training(module, True)
        try:
            grads = ti.call_answer(_step_function(ti), module, x, labels, trainable, grad=True)
        finally:
            ti.restore_training(module, flags)
        for t, value in buffers:  # the train-mode forward moved batch-norm statistics
            ti.overwrite(t, value)
        if type(grads) is not tuple or len(grads) != len(trainable):
            return {"error": f"`{where}` does not give a plain tensor in training mode"}
        reached = []  # the weights (2 dimensions or more) that a gradient reached
        for (name, param), grad in zip(named, grads, strict=True):
            if grad is not None:
                if len(ti.shape_of(param)) >= 2 and ti.any_nonzero(ti.to_numpy(grad)):
                    reached.append(name)
                ti.descend(param, grad, LEARNING_RATE)
        after = ti.to_numpy(ti.forward(module, x))
    except ti.AnswerRaised as exc:
        return {"error": f"`{where}` raised {exc.kind} when trained: {exc.text}"[:2000]}
    finally:
        for t, value in saved:
            ti.overwrite(t, value)
    if after.shape != before.shape:
        return {"error": f"`{where}` gives another shape after a gradient step"}
    ctx.add_tensor("before-step", before.astype(np.float32))
    ctx.add_tensor("after-step", after.astype(np.float32))
    return {"weights_reached": reached[:MAX_NAMES]}
