"""`training_loop`: what one training epoch did, observed while it ran.

Before the student's code, `prepare` snapshots the data loader's batches, measures the
loss on them, and instruments three things: the data loader's iterator (each batch
handed out), autograd's backward (whether the optimizer's gradients were clean when it
started) and the optimizer's step hook. Aspects, one per check:

- `batches`: every batch of the epoch was consumed, once;
- `order`: in each iteration, backward ran on clean gradients, then step ran after it;
- `loss_decrease`: the loss on the epoch's data fell, by at least `min_decrease_ratio`
  of what one correct epoch achieves;
- `final_weights`: the model's state after the epoch equals one correct epoch from the
  same start over the same batches, within a tolerance.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from graders.checks.base import (
    MAX_NAMES,
    MODULE_PATH_PATTERN,
    VARIABLE_PATTERN,
    CheckBase,
    FactsBase,
    ObservationError,
    Observed,
    Verdict,
    plural,
    preview,
)

TYPE = "training_loop"
EXECUTES_ANSWER = True  # the loss is measured with the model's forward
MAX_EVENTS = 20_000
MAX_BATCHES = 1_000


class Params(CheckBase):
    type: Literal["training_loop"]
    aspect: Literal["batches", "order", "loss_decrease", "final_weights"]
    model: str = Field("model", pattern=VARIABLE_PATTERN)
    optimizer: str = Field("optimizer", pattern=VARIABLE_PATTERN)
    dataloader: str = Field("dataloader", pattern=VARIABLE_PATTERN)
    head: str = Field(
        "",
        pattern=MODULE_PATH_PATTERN,
        description="Module whose values are compared element-wise.",
    )
    min_decrease_ratio: float = Field(0.5, ge=0, le=1)
    rtol: float = Field(1e-4, ge=0, le=1)
    atol: float = Field(1e-5, ge=0, le=1)


class Facts(FactsBase):
    batches_total: int = Field(ge=0)
    events: list[str] = Field(
        max_length=MAX_EVENTS,
        description="b<i>: batch i; w/W: backward on clean/stale grads; s: step.",
    )
    loss_before: float | None
    loss_after: float | None
    state: dict[str, list[float]] = Field(
        max_length=MAX_NAMES, description="Sum, abs sum, square sum per state tensor."
    )


# The instrumentation the answer can reach (the data loader's iterator, autograd's backward,
# the optimizer's step hook) is compiled into a namespace of its own holding only what it
# needs, so following its functions' globals or closures leads to the event log and to C
# functions, not to the grader's modules.
_INSTRUMENTATION = """
def logged_iter(self_):
    for i, batch in enumerate(original_iter(self_)):
        log("b%d" % i)
        yield batch


def logged_backward(*args, **kwargs):
    clean = True
    for p in trainable:
        g = grad_of(p)
        if g is not None and tensor_item(tensor_any(g)):
            clean = False
            break
    log("w" if clean else "W")
    return original_backward(*args, **kwargs)


def logged_step(*_):
    log("s")
"""


class _Recorder:
    """Instrumentation installed once per (model, optimizer, dataloader), shared by the aspects."""

    def __init__(self, ctx, params: Params) -> None:
        ti = self.ti = ctx.ti
        self.model = ti.require_module(ti.lookup(ctx.scope, params.model), params.model)
        self.optimizer = ti.lookup(ctx.scope, params.optimizer)
        groups = ti.optimizer_groups(self.optimizer)
        trainable = tuple(p for g in groups for p in g["params"])
        loader = ti.lookup(ctx.scope, params.dataloader)
        self.batches = []
        for batch in loader:
            if len(self.batches) >= MAX_BATCHES:
                raise ObservationError(
                    f"`{params.dataloader}` yields more than {MAX_BATCHES} batches"
                )
            inputs, labels = batch[0], batch[1]
            self.batches.append((ti.clone(ti.detach(inputs)), ti.clone(ti.detach(labels))))
        # Batches of one size are evaluated in one forward pass (eval mode: each sample's
        # output does not depend on its batch), whose mean loss equals the batches' mean.
        shapes = {(ti.shape(inputs), ti.shape(labels)) for inputs, labels in self.batches}
        self.joined = None
        if len(self.batches) > 1 and len(shapes) == 1:
            self.joined = (
                ti.concat([inputs for inputs, _ in self.batches]),
                ti.concat([labels for _, labels in self.batches]),
            )
        self.events: list[str] = []
        self.heads: set[str] = set()  # modules whose values some aspect compares element-wise
        self.observed: tuple[dict, dict] | BaseException | None = None  # see observe()
        self.loss_before = self.loss()
        self._instrument(loader, trainable)

    def _instrument(self, loader, trainable: tuple) -> None:
        import torch

        cls = type(loader)
        namespace = {
            "__builtins__": {"enumerate": enumerate},
            "original_iter": cls.__iter__,
            "original_backward": torch.autograd.backward,
            "log": self.events.append,  # a C method: it leads to the log and nowhere else
            "trainable": trainable,
            "grad_of": torch._C.TensorBase.grad.__get__,
            "tensor_any": torch._C.TensorBase.any,
            "tensor_item": torch._C.TensorBase.item,
        }
        exec(compile(_INSTRUMENTATION, "<instrumentation>", "exec"), namespace)
        loader.__class__ = type(
            cls.__name__,
            (cls,),
            {"__iter__": namespace["logged_iter"], "__module__": cls.__module__},
        )
        torch.autograd.backward = namespace["logged_backward"]
        self.optimizer.register_step_pre_hook(namespace["logged_step"])

    def loss(self) -> float | None:
        ti = self.ti
        if not self.batches:
            return None
        flags = ti.set_training(self.model, False)
        try:
            with ti.no_grad():
                if self.joined is not None:
                    inputs, labels = self.joined
                    return float(ti.cross_entropy(ti.call_module(self.model, inputs), labels))
                total = 0.0
                for inputs, labels in self.batches:
                    total += float(ti.cross_entropy(ti.call_module(self.model, inputs), labels))
            return total / len(self.batches)
        finally:
            ti.restore_training(self.model, flags)


def _key(params: Params) -> tuple:
    return (TYPE, params.model, params.optimizer, params.dataloader)


def prepare(ctx, params: Params) -> None:
    if _key(params) not in ctx.shared:
        ctx.shared[_key(params)] = _Recorder(ctx, params)
    if params.head:
        ctx.shared[_key(params)].heads.add(params.head)


def observe(ctx, params: Params) -> dict:
    """The loop's facts, observed once for all its aspects (an error too): every aspect's
    head values are copied before the model's forward (the answer's code) measures the
    loss after, and that forward runs once."""
    recorder: _Recorder = ctx.shared[_key(params)]
    if recorder.observed is None:
        try:
            recorder.observed = _observe_loop(ctx, params, recorder)
        except BaseException as exc:
            recorder.observed = exc
    if isinstance(recorder.observed, BaseException):
        raise recorder.observed
    facts, heads = recorder.observed
    head = heads.get(params.head, {})
    if isinstance(head, ObservationError):
        raise head
    for name, values in head.items():
        ctx.add_tensor(name, values)
    return facts


def _observe_loop(ctx, params: Params, recorder: _Recorder) -> tuple[dict, dict]:
    ti = ctx.ti
    model = ti.lookup(ctx.scope, params.model)
    if model is not recorder.model:
        raise ObservationError(
            f"`{params.model}` was replaced by another object: train the model you were given"
        )
    heads: dict = {}
    for path in sorted(recorder.heads):
        try:
            head = ti.submodule(model, path, params.model)
            heads[path] = {f"{path}.{name}": ti.snapshot(t) for name, t in ti.named_state(head)}
        except ObservationError as exc:  # only the aspects comparing this head report it
            heads[path] = exc
    facts = {
        "batches_total": len(recorder.batches),
        "events": [e for e in recorder.events[:MAX_EVENTS] if type(e) is str],
        "loss_before": recorder.loss_before,
        "state": {name: ti.summary(ti.to_numpy(t)) for name, t in ti.named_state(model)},
    }
    facts["loss_after"] = recorder.loss()  # last: it runs the model's forward
    return facts, heads


def _iterations(events: list[str]) -> list[list[str]]:
    """Split the event log at each batch handed out; events before the first batch are dropped."""
    out: list[list[str]] = []
    for e in events:
        if e.startswith("b"):
            out.append([])
        elif out:
            out[-1].append(e)
    return out


def _judge_order(events: list[str]) -> Verdict:
    iterations = _iterations(events)
    if not iterations:
        return Verdict(False, "no batch was taken from the data loader, so no training step ran")
    for i, ev in enumerate(iterations, start=1):
        if "s" in ev and not any(e in "wW" for e in ev[: ev.index("s")]):
            return Verdict(False, f"in iteration {i}, optimizer.step() ran before loss.backward()")
        if not any(e in "wW" for e in ev):
            return Verdict(False, f"in iteration {i}, loss.backward() was not called")
        if "W" in ev:
            return Verdict(
                False,
                f"in iteration {i}, gradients from an earlier batch were still there when backward() ran: "
                "call optimizer.zero_grad() once per iteration, before loss.backward()",
            )
        if "s" not in ev:
            return Verdict(
                False, f"in iteration {i}, optimizer.step() was not called after loss.backward()"
            )
        if ev.count("s") > 1 or sum(e in "wW" for e in ev) > 1:
            return Verdict(False, f"in iteration {i}, backward() or step() ran more than once")
    return Verdict(
        True, f"zero_grad, backward and step in order in all {len(iterations)} iterations"
    )


def _judge_batches(have: Facts) -> Verdict:
    taken = sum(e.startswith("b") for e in have.events)
    if taken == have.batches_total:
        return Verdict(True, f"all {have.batches_total} batches consumed once")
    if taken < have.batches_total:
        return Verdict(
            False,
            f"your loop consumed {taken} of {have.batches_total} batches: one epoch goes over all of them",
        )
    return Verdict(
        False,
        f"your loop consumed {taken} batches: one epoch goes over the {have.batches_total} batches once",
    )


def _judge_loss(params: Params, have: Facts, want: Facts) -> Verdict:
    if (
        have.loss_before is None
        or have.loss_after is None
        or want.loss_before is None
        or want.loss_after is None
    ):
        return Verdict(False, "the loss could not be measured on the epoch's data")
    gained, target = have.loss_before - have.loss_after, want.loss_before - want.loss_after
    summary = (
        f"the loss on the epoch's data went from {have.loss_before:.4f} to {have.loss_after:.4f}"
    )
    if not np.isfinite(have.loss_after):
        return Verdict(False, summary + ": training diverged")
    if gained > 0 and gained >= params.min_decrease_ratio * target:
        return Verdict(True, summary)
    return Verdict(False, summary + f"; one correct epoch brings it to {want.loss_after:.4f}")


def _judge_weights(params: Params, got: Observed, expected: Observed) -> Verdict:
    have, want = got.facts, expected.facts
    if set(have.state) != set(want.state):
        return Verdict(
            False, f"the model's layers changed ({preview(set(have.state) ^ set(want.state))})"
        )
    for name, values in expected.tensors.items():
        mine = got.tensors.get(name)
        if mine is None or mine.shape != values.shape:
            return Verdict(False, f"{name} is missing or has another shape after the epoch")
        if not np.allclose(mine, values, rtol=params.rtol, atol=params.atol):
            diff = float(np.max(np.abs(mine.astype(np.float64) - values)))
            return Verdict(
                False,
                f"after the epoch, {name} differs from one correct epoch from the same start and batches "
                f"(largest difference {diff:.3g})",
            )
    off = [
        n
        for n in want.state
        if not np.allclose(
            have.state[n], want.state[n], rtol=params.rtol * 10, atol=params.atol * 10
        )
    ]
    if off:
        return Verdict(
            False,
            f"after the epoch, {plural(len(off), 'tensor')} differ from one correct epoch ({preview(off)})",
        )
    return Verdict(True, "the weights after the epoch equal one correct epoch from the same start")


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    if params.aspect == "batches":
        return _judge_batches(got.facts)
    if params.aspect == "order":
        return _judge_order(got.facts.events)
    if params.aspect == "loss_decrease":
        return _judge_loss(params, got.facts, expected.facts)
    return _judge_weights(params, got, expected)
