"""`training_loop`: what one training epoch did, observed while it ran.

Before the student's code, `prepare` snapshots the data loader's batches, the model's
buffers and the optimizer's parameters, measures the loss on the batches, and instruments
three things: the data loader's iterator (each batch handed out), autograd's backward
(whether the optimizer's gradients were clean when it started) and the optimizer's step
hook (whether there were gradients to apply). An iteration is a batch followed by a
backward and a step: batches taken without a step (a peek, an evaluation pass) are not
iterations, and not faults. Aspects, one per check:

- `final_weights`, the decisive one: the model's state after the epoch equals one correct
  epoch from the same start over the same batches, within a tolerance;
- `batches`: each batch of the epoch fed one backward and one step;
- `order`: in each iteration, backward ran on clean gradients, then step applied them;
- `loss_decrease`: the loss on the epoch's batches fell by at least `min_decrease_ratio` of
  what one correct epoch achieves. It is measured before and after the epoch alike (train
  mode, without gradients, with the buffers as they were before the epoch, which are then
  put back), so that only updates of the weights can lower it, not running statistics.

The three diagnostic aspects explain a failure; they never take points from a loop whose
weights are right. Every aspect's facts carry the final-weights comparison's inputs (the
state's summaries and the compared heads' values, up to `MAX_SHARED_VALUES`), and a
diagnostic aspect passes whenever that comparison, as the task's `final_weights` check
makes it, holds.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from graders.checks.base import (
    MAX_NAMES,
    MODULE_PATH_PATTERN,
    PROTECTED,
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
MAX_SHARED_VALUES = 1_000_000  # head values copied into each diagnostic aspect's facts
BACKWARD, STEP = "wW", "se"


class Params(CheckBase):
    type: Literal["training_loop"]
    aspect: Literal["batches", "order", "loss_decrease", "final_weights"]
    model: str = Field("model", pattern=VARIABLE_PATTERN)
    optimizer: str = Field("optimizer", pattern=VARIABLE_PATTERN)
    dataloader: str = Field("dataloader", pattern=VARIABLE_PATTERN)
    head: str = Field(
        "",
        pattern=MODULE_PATH_PATTERN,
        description="final_weights: module whose values are compared element-wise.",
    )
    min_decrease_ratio: float = Field(0.5, ge=0, le=1)
    rtol: float = Field(1e-4, ge=0, le=1, description="final_weights: relative tolerance.")
    atol: float = Field(1e-5, ge=0, le=1, description="final_weights: absolute tolerance.")


class Decisive(FactsBase):
    """The task's final-weights comparison (the strictest, if several checks make one)."""

    heads: list[str] = Field(max_length=64)
    rtol: float = Field(ge=0, le=1)
    atol: float = Field(ge=0, le=1)


Event = Annotated[str, Field(pattern=r"^(b[0-9]{1,9}|[wWse])$")]
Summary = Annotated[list[float], Field(min_length=3, max_length=3)]


class Facts(FactsBase):
    batches_total: int = Field(ge=0)
    events: list[Event] = Field(
        max_length=MAX_EVENTS,
        description="b<i>: batch i of an iterator (i restarts for each one); w/W: backward "
        "on clean/stale gradients; s/e: step with gradients to apply/with none.",
    )
    loss_before: float | None
    loss_after: float | None
    loss_error: str | None = Field(max_length=1000, description="Why loss_after is missing.")
    parameters: dict[str, Summary] = Field(
        max_length=MAX_NAMES, description="Sum, abs sum, square sum per parameter."
    )
    buffers: dict[str, Summary] = Field(max_length=MAX_NAMES, description="The same per buffer.")
    buffers_moved: int = Field(ge=0, description="How many buffers changed during the epoch.")
    moved: float | None = Field(
        ge=0, description="How far (L2) the optimizer's parameters moved during the epoch."
    )
    hyper: list[dict[str, float]] = Field(
        max_length=64, description="The optimizer's numeric hyper-parameters, per param group."
    )
    optimizer_replaced: bool
    decisive: Decisive | None = Field(
        description="What final_weights compares; its head values are this check's tensors."
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


def has_gradients():
    for p in trainable:
        g = grad_of(p)
        if g is not None and tensor_item(tensor_any(g)):
            return True
    return False


def logged_backward(*args, **kwargs):
    log("W" if has_gradients() else "w")
    return original_backward(*args, **kwargs)


def logged_step(*_):
    log("s" if has_gradients() else "e")
"""


class _Torch:
    """The torch functions the loss measurement calls, captured before the answer runs."""

    def __init__(self) -> None:
        import torch

        self.tensor = torch.Tensor
        self.copy = torch._C.TensorBase.copy_
        self.no_torch_function = torch._C.DisableTorchFunction
        self.grad_enabled = torch._C.is_grad_enabled
        self.set_grad_enabled = torch._C._set_grad_enabled
        self.generator = torch._C.default_generator
        self.get_rng = torch._C.Generator.get_state
        self.set_rng = torch._C.Generator.set_state
        self.seed_rng = torch._C.Generator.manual_seed


def _buffers(ti, model) -> list[tuple[str, object]]:
    params = {name for name, _ in ti.named_parameters(model)}
    return [(name, t) for name, t in ti.named_state(model) if name not in params]


class _Recorder:
    """Instrumentation installed once per (model, optimizer, dataloader), shared by the aspects."""

    def __init__(self, ctx, params: Params) -> None:
        ti = self.ti = ctx.ti
        self.torch = _Torch()
        self.seed = ctx.seed
        self.model = ti.require_module(ti.lookup(ctx.scope, params.model), params.model)
        self.optimizer = ti.lookup(ctx.scope, params.optimizer)
        _, groups = ti.optimizer_of(self.optimizer, params.optimizer)
        self.trainable = tuple(p for g in groups for p in g.params)
        self.start = [ti.snapshot(p) for p in self.trainable]
        self.initial = {name: ti.copy_of(t) for name, t in _buffers(ti, self.model)}
        # The setup's data loader, before the answer runs: trusted code and objects.
        loader = ti.lookup(ctx.scope, params.dataloader)
        self.batches = []
        for batch in loader:
            if len(self.batches) >= MAX_BATCHES:
                raise ObservationError(
                    f"`{params.dataloader}` yields more than {MAX_BATCHES} batches"
                )
            inputs, labels = batch[0], batch[1]
            self.batches.append((ti.copy_of(inputs), ti.copy_of(labels)))
        self.events: list[str] = []
        self.heads: set[str] = set()  # what final_weights compares element-wise
        self.tolerance: tuple[float, float] | None = None  # and with which rtol, atol
        self.observed: tuple[dict, dict] | BaseException | None = None  # see observe()
        self.loss_before, error = self.loss(self.model)
        if error is not None:
            raise ObservationError(f"the loss before the epoch could not be measured: {error}")
        self._instrument(loader)

    def decides(self, params: Params) -> None:
        if params.head:
            self.heads.add(params.head)
        rtol, atol = self.tolerance or (params.rtol, params.atol)
        self.tolerance = (min(rtol, params.rtol), min(atol, params.atol))

    def _instrument(self, loader) -> None:
        import torch

        cls = type(loader)
        namespace = {
            "__builtins__": {"enumerate": enumerate},
            "original_iter": cls.__iter__,
            "original_backward": torch.autograd.backward,
            "log": self.events.append,  # a C method: it leads to the log and nowhere else
            "trainable": self.trainable,
            "grad_of": torch._C.TensorBase.grad.__get__,
            "tensor_any": torch._C.TensorBase.any,
            "tensor_item": torch._C.TensorBase.item,
        }
        exec(compile(_INSTRUMENTATION, "<instrumentation>", "exec"), namespace)
        # The answer reaches this namespace (through the functions installed below): the
        # harness holds it, and its functions' code, unchanged through the answer.
        self.namespace = namespace
        loader.__class__ = type(
            cls.__name__,
            (cls,),
            {"__iter__": namespace["logged_iter"], "__module__": cls.__module__},
        )
        torch.autograd.backward = namespace["logged_backward"]
        self.optimizer.register_step_pre_hook(namespace["logged_step"])

    def loss(self, model) -> tuple[float | None, str | None]:
        """(the mean loss on the epoch's batches, or why it could not be measured), by the
        model's forward (the answer's code, run by `call_answer` in a thread of its own) in
        train mode without gradients, from the buffers as they were before the epoch and a
        seeded generator; the model's buffers, flags and the generator are put back after.
        A tampered structure raises (it fails every aspect); a forward that is not the
        model's classes' own (set on an instance, hooked) is not measured."""
        ti, c = self.ti, self.torch
        if not self.batches:
            return None, None
        current = _buffers(ti, model)
        for name, t in current:
            start = self.initial.get(name)
            if start is None or ti.shape(t) != ti.shape(start):
                return None, f"the model's buffer {name} is not the one it had before the epoch"
        try:
            ti._plain_forward(model)
        except ObservationError as exc:
            return None, str(exc)
        saved = [(t, ti.copy_of(t)) for _, t in current]
        flags = ti.set_training(model, True)
        grad, rng = c.grad_enabled(), c.get_rng(c.generator)
        c.set_grad_enabled(False)
        c.seed_rng(c.generator, self.seed)
        try:
            with c.no_torch_function():
                for name, t in current:
                    c.copy(t, self.initial[name])
            total = 0.0
            for inputs, labels in self.batches:
                out = ti.call_answer(ti._module_call, model, inputs)
                if type(out) is not c.tensor:
                    return (
                        None,
                        f"the model's forward returned a {ti.class_name(out)}, not a tensor",
                    )
                total += ti.cross_entropy(out, labels)
            return total / len(self.batches), None
        except ti.AnswerRaised as exc:
            return None, f"the model's forward raised {exc}"
        except (ObservationError, RuntimeError, IndexError, ValueError) as exc:
            return None, str(exc)[:500]
        finally:
            with c.no_torch_function():
                for t, values in saved:
                    with contextlib.suppress(RuntimeError):  # it failed above: unchanged
                        c.copy(t, values)
            c.set_rng(c.generator, rng)
            c.set_grad_enabled(grad)
            ti.restore_training(model, flags)


def _key(params: Params) -> tuple:
    return (TYPE, params.model, params.optimizer, params.dataloader)


def prepare(ctx, params: Params) -> None:
    if _key(params) not in ctx.shared:
        ctx.shared[_key(params)] = _Recorder(ctx, params)
        ctx.shared.setdefault(PROTECTED, []).append(ctx.shared[_key(params)].namespace)
    if params.aspect == "final_weights":
        ctx.shared[_key(params)].decides(params)


def observe(ctx, params: Params) -> dict:
    """The loop's facts, observed once for all its aspects (an error too): every head's
    values are copied before the model's forward (the answer's code) measures the loss
    after, and that forward runs once. final_weights exports its own head's values, the
    other aspects those of every head final_weights compares."""
    recorder: _Recorder = ctx.shared[_key(params)]
    if recorder.observed is None:
        try:
            recorder.observed = _observe_loop(ctx, params, recorder)
        except BaseException as exc:
            recorder.observed = exc
    if isinstance(recorder.observed, BaseException):
        raise recorder.observed
    facts, heads = recorder.observed
    if params.aspect == "final_weights":
        paths = [params.head] if params.head else []
        for path in paths:
            if isinstance(heads[path], ObservationError):
                raise heads[path]
    else:
        paths = sorted(recorder.heads) if facts["decisive"] is not None else []
    for path in paths:
        if isinstance(heads[path], dict):
            for name, values in heads[path].items():
                ctx.add_tensor(name, values)
    return facts


def _observe_loop(ctx, params: Params, recorder: _Recorder) -> tuple[dict, dict]:
    ti = ctx.ti
    model = ti.lookup(ctx.scope, params.model)
    if not ti.same_object(model, recorder.model):
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
    shared = sum(v.size for h in heads.values() if isinstance(h, dict) for v in h.values())
    decisive = None
    if recorder.tolerance is not None and shared <= MAX_SHARED_VALUES:
        rtol, atol = recorder.tolerance
        decisive = {"heads": sorted(recorder.heads), "rtol": rtol, "atol": atol}
    buffers, buffers_moved = {}, 0
    for name, t in _buffers(ti, model):
        values = ti.to_numpy(t)
        buffers[name] = ti.summary(values)
        start = recorder.initial.get(name)
        if start is None or not np.array_equal(values, ti.to_numpy(start)):
            buffers_moved += 1
    replaced, hyper = _optimizer_now(ctx, params, recorder)
    facts = {
        "batches_total": len(recorder.batches),
        "events": [e for e in recorder.events[:MAX_EVENTS] if type(e) is str],
        "loss_before": recorder.loss_before,
        "parameters": {n: ti.summary(ti.to_numpy(t)) for n, t in ti.named_parameters(model)},
        "buffers": buffers,
        "buffers_moved": buffers_moved,
        "moved": _moved(ti, recorder),
        "hyper": hyper,
        "optimizer_replaced": replaced,
        "decisive": decisive,
    }
    # Last: it runs the model's forward.
    facts["loss_after"], facts["loss_error"] = recorder.loss(model)
    return facts, heads


def _moved(ti, recorder: _Recorder) -> float | None:
    total = 0.0
    try:
        for p, start in zip(recorder.trainable, recorder.start, strict=True):
            now = ti.to_numpy(p)
            if now.shape != start.shape:
                return None
            total += float(np.sum(np.square(now.astype(np.float64) - start)))
    except ObservationError:
        return None
    return math.sqrt(total)


def _optimizer_now(ctx, params: Params, recorder: _Recorder) -> tuple[bool, list[dict]]:
    """Whether `optimizer` is still the one instrumented, and its hyper-parameters now."""
    ti = ctx.ti
    try:
        current = ti.lookup(ctx.scope, params.optimizer)
        _, groups = ti.optimizer_of(current, params.optimizer)
    except ObservationError:
        return True, []
    hyper = [{key: value for key, value in g.hyper.items() if type(value) is float} for g in groups]
    return not ti.same_object(current, recorder.optimizer), hyper


# --- the judge ---------------------------------------------------------------------


def _segments(events: list[str]) -> list[tuple[int, list[str]]]:
    """Each batch handed out, with the events until the next one; earlier events are dropped."""
    out: list[tuple[int, list[str]]] = []
    for e in events:
        if e.startswith("b"):
            out.append((int(e[1:]), []))
        elif out:
            out[-1][1].append(e)
    return out


def _has(ev: list[str], kinds: str) -> bool:
    return any(e in kinds for e in ev)


def _replaced(params: Params) -> Verdict:
    return Verdict(
        False,
        f"`{params.optimizer}` was replaced by another object, so the steps of the optimizer "
        "you were given could not be followed: train with it",
    )


def _judge_order(params: Params, have: Facts) -> Verdict:
    if have.optimizer_replaced:
        return _replaced(params)
    segments = _segments(have.events)
    iterations = [ev for _, ev in segments if _has(ev, STEP)]
    if not iterations:
        if not segments:
            return Verdict(
                False, "no batch was taken from the data loader, so no training step ran"
            )
        if any(_has(ev, BACKWARD) for _, ev in segments):
            return Verdict(
                False,
                "loss.backward() ran but optimizer.step() was never called: the gradients were "
                "computed and never applied to the weights",
            )
        return Verdict(
            False,
            f"neither loss.backward() nor optimizer.step() was called for the "
            f"{_count(len(segments))} taken from the data loader: nothing was trained",
        )
    for i, ev in enumerate(iterations, start=1):
        first = next(k for k, e in enumerate(ev) if e in STEP)
        backwards = [e for e in ev[:first] if e in BACKWARD]
        if not backwards:
            if _has(ev[first:], BACKWARD):
                return Verdict(
                    False, f"in iteration {i}, optimizer.step() ran before loss.backward()"
                )
            return Verdict(
                False,
                f"in iteration {i}, optimizer.step() ran without loss.backward() before it: "
                "there were no gradients for it to apply",
            )
        if len(backwards) > 1:
            return Verdict(
                False,
                f"in iteration {i}, loss.backward() ran {len(backwards)} times before "
                "optimizer.step(): one backward per batch",
            )
        if backwards[0] == "W":
            return Verdict(
                False,
                f"in iteration {i}, gradients from an earlier batch were still there when backward() ran: "
                "call optimizer.zero_grad() once per iteration, before loss.backward()",
            )
        if ev[first] == "e":
            return Verdict(
                False,
                f"in iteration {i}, the gradients were cleared after loss.backward() and before "
                "optimizer.step(), so step() had nothing to apply: call optimizer.zero_grad() "
                "before loss.backward() (or after step()), never between them",
            )
        steps = sum(e in STEP for e in ev)
        if steps > 1:
            return Verdict(
                False,
                f"in iteration {i}, optimizer.step() ran {steps} times on one batch: one step per batch",
            )
    n = len(iterations)
    where = "the one iteration" if n == 1 else f"all {n} iterations"
    return Verdict(True, f"zero_grad, backward and step in order in {where}")


def _count(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


def _numbers(batches: list[int]) -> str:
    return ("batch " if len(batches) == 1 else "batches ") + preview([str(b + 1) for b in batches])


def _judge_batches(params: Params, have: Facts) -> Verdict:
    if have.optimizer_replaced:
        return _replaced(params)
    n = have.batches_total
    segments = _segments(have.events)
    trained = Counter(b for b, ev in segments if _has(ev, BACKWARD) and _has(ev, STEP))
    if trained == Counter(range(n)):
        return Verdict(True, f"each of the {n} batches fed one backward and one step")
    if not trained:
        return Verdict(
            False,
            f"no batch was followed by both loss.backward() and optimizer.step() "
            f"({_count(len(segments))} taken from the data loader): one epoch "
            f"trains on each of the {n} batches once",
        )
    total = sum(trained.values())
    missing = [b for b in range(n) if b not in trained]
    repeated = sorted(b for b, count in trained.items() if count > 1)
    if not repeated:
        return Verdict(
            False,
            f"training consumed {total} of {n} batches: {_numbers(missing)} never fed a "
            "backward and a step; one epoch trains on every batch once",
        )
    counts = set(trained.values())
    if not missing and len(counts) == 1:
        return Verdict(
            False,
            f"training consumed {total} batches: each of the {n} batches fed {counts.pop()} "
            "training steps; one epoch trains on every batch once",
        )
    found = ", ".join(f"batch {b + 1} fed {trained[b]} steps" for b in repeated[:3])
    message = (
        f"training consumed {total} batches but only {len(trained)} of the {n} distinct ones "
        f"({found}{f', {_numbers(missing)} none' if missing else ''}): one epoch trains on "
        "every batch once"
    )
    if 0 in repeated and sum(e == "b0" for e in have.events) > 1:
        message += (
            "; each iter(dataloader) starts again from the first batch, so take the batches "
            "from one loop over the data loader"
        )
    return Verdict(False, message)


def _judge_loss(params: Params, have: Facts, want: Facts) -> Verdict:
    if have.loss_after is None and have.loss_error:
        return Verdict(False, f"the loss after the epoch could not be measured: {have.loss_error}")
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


def _differ(n: int, what: str) -> str:
    return f"{plural(n, what)} {'differs' if n == 1 else 'differ'}"


def _differing(have: dict, want: dict, rtol: float, atol: float) -> list[str]:
    return [n for n in want if not np.allclose(have[n], want[n], rtol=rtol, atol=atol)]


def _causes(params: Params, have: Facts, want: Facts) -> str:
    """What else the facts show about weights that differ, as clauses to append."""
    out = []
    if have.optimizer_replaced:
        out.append(f"`{params.optimizer}` was replaced by another optimizer")
    for group, (mine, theirs) in enumerate(zip(have.hyper, want.hyper, strict=False)):
        for key in sorted(theirs):
            if key in mine and not np.isclose(mine[key], theirs[key], rtol=1e-6, atol=0):
                where = f" (param group {group + 1})" if len(want.hyper) > 1 else ""
                out.append(
                    f"the optimizer's {key}{where} is {mine[key]:g} after the epoch, where a "
                    f"correct epoch leaves it at {theirs[key]:g}"
                )
    if have.moved is not None and want.moved:
        ratio = have.moved / want.moved
        if have.moved == 0:
            out.append("the optimizer's parameters did not change at all during the epoch")
        elif not 0.9 <= ratio <= 1.1:
            out.append(
                f"the optimizer's parameters moved {ratio:.3g} times as far from their start "
                "as in one correct epoch"
            )
    if have.buffers_moved == 0 and want.buffers_moved > 0:
        out.append(
            "the running statistics did not change during the epoch, as they do when the "
            "model trains in train mode (model.train())"
        )
    return "".join(f"; {clause}" for clause in out[:3])


def _judge_weights(
    rtol: float, atol: float, params: Params, got: Observed, expected: Observed
) -> Verdict:
    have, want = got.facts, expected.facts
    changed = (set(have.parameters) ^ set(want.parameters)) | (
        set(have.buffers) ^ set(want.buffers)
    )
    if changed:
        return Verdict(False, f"the model's layers changed ({preview(changed)})")
    for name, values in expected.tensors.items():
        mine = got.tensors.get(name)
        if mine is None or mine.shape != values.shape:
            return Verdict(False, f"{name} is missing or has another shape after the epoch")
        if not np.allclose(mine, values, rtol=rtol, atol=atol):
            diff = float(np.max(np.abs(mine.astype(np.float64) - values)))
            return Verdict(
                False,
                f"after the epoch, {name} differs from one correct epoch from the same start and batches "
                f"(largest difference {diff:.3g}){_causes(params, have, want)}",
            )
    off = _differing(have.parameters, want.parameters, rtol * 10, atol * 10)
    if off:
        return Verdict(
            False,
            f"after the epoch, {_differ(len(off), 'parameter')} from one correct epoch "
            f"({preview(off)}){_causes(params, have, want)}",
        )
    off = _differing(have.buffers, want.buffers, rtol * 10, atol * 10)
    if off:
        return Verdict(
            False,
            f"the parameters after the epoch equal one correct epoch's, but "
            f"{_differ(len(off), 'buffer')} ({preview(off)}): running statistics move with every forward pass in "
            "train mode, so evaluate (or measure a loss) in model.eval() mode",
        )
    return Verdict(True, "the weights after the epoch equal one correct epoch from the same start")


_SETTLED = {
    "batches": "every batch was trained on once: the weights after the epoch equal one correct epoch's",
    "order": "the steps trained as a correct loop's do: the weights after the epoch equal one correct epoch's",
    "loss_decrease": "the weights after the epoch equal one correct epoch's",
}


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    if params.aspect == "final_weights":
        return _judge_weights(params.rtol, params.atol, params, got, expected)
    if params.aspect == "batches":
        verdict = _judge_batches(params, have)
    elif params.aspect == "order":
        verdict = _judge_order(params, have)
    else:
        verdict = _judge_loss(params, have, want)
    # The decisive fact, as the task's final_weights check establishes it (from the reference
    # run's facts): a loop whose weights are right loses no points to its diagnostics, nor to
    # a loss its forward kept from being measured (a hook, a forward set on the instance).
    decisive = want.decisive
    if verdict.passed or decisive is None:
        return verdict
    if _judge_weights(decisive.rtol, decisive.atol, params, got, expected).passed:
        return Verdict(True, _SETTLED[params.aspect])
    return verdict
