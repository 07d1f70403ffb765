"""`optimizer`: what the optimizer's steps do to each parameter, and how it is built.

The observer reads the optimizer (a class of torch's own, its param groups) and probes it
without calling it: a new optimizer of the same class, with each group's settings, over
float64 copies of the tensors it holds (a tensor held twice is held twice), steps from
gradients seeded by each parameter's name, given only to the parameters that require
grad in the answer's model. It probes twice over: from the parameters' values (`step`:
one step, or the check's `steps`, each from gradients of its own; SGD's first step with
momentum is plain SGD's, so momentum passes unless a task asks for more steps: SGD with
momentum is still stochastic gradient descent at that learning rate), and one step from
zero (`zero`), where weight decay and the like vanish and the step depends on the
gradient and the learning rate alone. Aspects, one per check:

- `update` (decisive): every parameter changes as the reference's steps change it;
- `params`: the step changes exactly the parameters the reference's does, and the
  optimizer holds nothing the reference's does not (a frozen parameter it holds never
  changes, but the optimizer is then not one over the trainable parameters), each once;
- `lr`: each parameter's step from zero equals the reference's: its sign and size, a
  parameter held twice (an optimizer of another class: its `lr` setting, by value); a step
  whose size differs although the `lr` setting is the reference's is another setting's
  doing (nesterov), which `update` tells;
- `type`: the class."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from graders.checks.base import (
    MAX_NAMES,
    VARIABLE_PATTERN,
    CheckBase,
    FactsBase,
    ObservationError,
    Observed,
    Verdict,
    plural,
    preview,
)

TYPE = "optimizer"
REASONS = {
    "other-class": "the optimizer is of another class than the reference's",
    "left-out": "a parameter the reference's step changes is not changed (not held, frozen, or lr 0)",
    "extra-updated": "the step changes parameters the reference's step leaves unchanged",
    "frozen-held": "it holds frozen parameters (which never change): not only the trainable ones",
    "idle-held": "it holds trainable parameters that its step does not change",
    "foreign": "it holds tensors that are not parameters of the model",
    "held-twice": "it holds a parameter more times than the reference (each step updates it again)",
    "lr-above": "a parameter's step is larger than the reference's: a higher effective learning rate",
    "lr-below": "a parameter's step is smaller than the reference's: a lower effective learning rate",
    "lr-zero": "a parameter's step does not move it: learning rate 0",
    "ascent": "a step goes along the gradient: gradient ascent (maximize=True, or a negative lr)",
    "not-a-multiple": "a step from zero is not a multiple of the reference's (another update rule)",
    "settings": "the step depends on a parameter's value: settings such as weight_decay differ",
    "step-differs": "one step changes a parameter differently from the reference's step",
}
RUNS_TORCH = True  # it steps a copy of the optimizer: torch must be as the setup left it
Hyper = float | bool | None | list[float]
# Settings that choose an implementation, not the update: the probe runs the plain one.
IMPLEMENTATION = ("foreach", "fused", "differentiable", "capturable")
MAX_EXPORTED = 1 << 20  # elements of the changes exported as tensors, per probe
MULTIPLE_TOL = 1e-4  # how close a change must be to a multiple of the reference's
# The most steps a spec's `steps` may ask of the `step` probe (warm-up steps each class as often).
MAX_STEPS = 5


class Params(CheckBase):
    type: Literal["optimizer"]
    aspect: Literal["type", "params", "lr", "update"]
    variable: str = Field("optimizer", pattern=VARIABLE_PATTERN)
    model: str = Field(
        "model", pattern=VARIABLE_PATTERN, description="Variable whose parameter names are used."
    )
    rel_tol: float = Field(
        1e-6, ge=0, le=1, description="Relative tolerance on each parameter's change."
    )
    steps: int = Field(
        1,
        ge=1,
        le=MAX_STEPS,
        description="Steps of the update probe, each from gradients of its own. SGD's first "
        "step with momentum is plain SGD's: 2 or more tells momentum (and its dampening) "
        "apart, for a task that asks for plain SGD.",
    )


class Group(FactsBase):
    params: list[str] = Field(max_length=MAX_NAMES)
    hyper: dict[str, Hyper] = Field(max_length=64)


Summary = list[float]  # sum, absolute sum and sum of squares of a change


class Change(FactsBase):
    """What one step did to one tensor the optimizer holds."""

    held: int = Field(ge=1, description="How many times the optimizer holds it.")
    trainable: bool = Field(description="Requires grad in the model: the probe gave it a gradient.")
    in_model: bool
    step: Summary = Field(min_length=3, max_length=3, description="From the model's values.")
    along: float = Field(description="The step along the gradient, per unit of gradient.")
    zero: Summary = Field(min_length=3, max_length=3, description="From zero.")
    zero_along: float


class Facts(FactsBase):
    class_name: str = Field(max_length=300)
    groups: list[Group] = Field(max_length=256)
    frozen: list[str] = Field(
        default_factory=list, max_length=MAX_NAMES, description="Held but not trainable."
    )
    changes: dict[str, Change] = Field(default_factory=dict, max_length=MAX_NAMES)
    probe_error: str | None = Field(None, max_length=2000)
    probe_reason: Literal["unobservable", "tampered"] = "unobservable"

    def lr_by_param(self) -> dict[str, float | None]:
        return {name: _lr(hyper) for name, hyper in self.hyper_by_param().items()}

    def hyper_by_param(self) -> dict[str, dict[str, Hyper]]:
        out: dict[str, dict[str, Hyper]] = {}
        for g in self.groups:
            for name in g.params:
                out.setdefault(name, g.hyper)
        return out

    def moving(self, probe: str) -> list[str]:
        """The model's parameters the probe's step changed (a NaN change counts)."""
        return [n for n, c in self.changes.items() if c.in_model and getattr(c, probe)[1] != 0]


def _lr(hyper: dict[str, Hyper]) -> float | None:
    lr = hyper.get("lr")
    return lr if isinstance(lr, float) else None


# --- observe (in the sandbox) --------------------------------------------------------


class _ProbeError(Exception):
    """The step could not be probed: the facts say why, the aspects that need it fail."""

    def __init__(self, message: str, reason: str = "unobservable"):
        super().__init__(message)
        self.reason = reason


class _Refused(BaseException):
    """Raised into code that is not torch's own when the probe's step calls it."""


def prepare(ctx, params: Params) -> None:
    """Capture what the probe uses before the answer runs. It is kept in the state the
    checks share, which the answer cannot reach (a module's globals, it can)."""
    if (TYPE, "kit") not in ctx.shared:
        import gc

        enabled = gc.isenabled()
        gc.disable()  # what the kit allocates must not set off a collection of torch's heap
        try:
            kit = _Kit()
        finally:
            if enabled:
                gc.enable()
        ctx.shared[(TYPE, "kit")] = kit
        ctx.shared[(TYPE, "tables")] = kit.tables()


class _Kit:
    """Torch's and numpy's functions the probe calls, the unwrapped `step` of every optimizer
    class (torch's profiling wrapper calls global hooks; `_use_grad` calls `torch._dynamo`),
    and the code objects of torch's own that a step may run: everything reachable from the
    modules a step's code looks names up in, and what a warm-up step of each class ran."""

    # Modules whose functions an optimizer's construction and step call.
    MODULES = (
        "torch.optim",
        "torch._jit_internal",
        "torch.jit",
        "torch.compiler",
        "torch._compile",
        "torch._dynamo.eval_frame",
        "torch._tensor",
        "torch.functional",
        "torch.utils._foreach_utils",
        "torch._utils",
    )

    def __init__(self) -> None:
        import hashlib
        import inspect
        import sys
        import types

        import torch

        from graders import integrity, introspect

        self.to_numpy = introspect.to_numpy

        # Only C functions of numpy's and torch's here: their Python-level wrappers (einsum,
        # ndarray.ctypes, numpy.random's seeding) read globals the answer can rebind.
        self.sha256, self.zeros = hashlib.sha256, np.zeros
        self.add_reduce, self.multiply = np.add.reduce, np.multiply
        self.float64, self.float32 = np.float64, np.float32
        self.torch_generator, self.seed_generator = (
            torch._C.Generator,
            torch._C.Generator.manual_seed,
        )
        self.randn, self.float64_dtype = torch._C._VariableFunctions.randn, torch.float64
        self.setprofile, self.getprofile = sys.setprofile, sys.getprofile
        self.from_numpy = torch.from_numpy
        self.set_grad = torch._C.TensorBase.grad.__set__
        self.data_ptr = torch._C.TensorBase.data_ptr
        self.dump_table, self.ops = torch._C._dispatch_dump_table, tuple(integrity.WATCHED_OPS)
        self.classes: dict[int, tuple] = {}
        for cls in list(vars(torch.optim).values()):
            if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
                continue
            if cls is torch.optim.Optimizer:
                continue
            step = next(c.__dict__["step"] for c in cls.__mro__ if "step" in c.__dict__)
            while type(step) is types.FunctionType and "__wrapped__" in step.__dict__:
                step = step.__dict__["__wrapped__"]
            accepted = frozenset(inspect.signature(cls.__init__).parameters)
            self.classes[id(cls)] = (cls, step, accepted)
        self.spaces = [
            (name, module.__dict__)
            for name, module in list(sys.modules.items())
            if name.startswith("torch.optim") and type(module) is types.ModuleType
        ]
        self.spaces += [(cls.__qualname__, vars(cls)) for cls, _, _ in self.classes.values()]
        self.code: list = []  # the code objects allowed, kept alive so that ids stay theirs
        self.allowed: set[int] = set()
        seen: set[int] = set()
        for name, module in list(sys.modules.items()):
            if type(module) is types.ModuleType and any(
                name == m or name.startswith(m + ".") for m in self.MODULES
            ):
                for value in list(module.__dict__.values()):
                    self._allow(value, seen, types, 0)
        self._warm_up(torch)  # (a class's first instance wraps its `step`: before the identities)
        self.identities = [self._identities(space) for _, space in self.spaces]

    def _allow(self, value, seen: set[int], types, depth: int) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        kind = type(value)
        if kind is types.CodeType:
            self.code.append(value)
            self.allowed.add(id(value))
            for const in value.co_consts:
                self._allow(const, seen, types, depth)
        elif kind is types.FunctionType:
            self._allow(value.__code__, seen, types, depth)
            for cell in value.__closure__ or ():
                try:
                    self._allow(cell.cell_contents, seen, types, depth)
                except ValueError:  # an empty cell
                    continue
            self._allow(getattr(value, "__wrapped__", None), seen, types, depth)
        elif kind is staticmethod or kind is classmethod:
            self._allow(value.__func__, seen, types, depth)
        elif kind is property:
            for f in (value.fget, value.fset, value.fdel):
                self._allow(f, seen, types, depth)
        elif issubclass(kind, type) and depth < 3:
            for member in list(vars(value).values()):
                self._allow(member, seen, types, depth + 1)

    def _warm_up(self, torch) -> None:
        """One step of each class on a tiny tensor, recording the code it runs as allowed:
        lazy imports and branches of this machine (an accelerator's) are settled now."""

        def record(frame, event, arg) -> None:
            if event == "call" and id(frame.f_code) not in self.allowed:
                self.code.append(frame.f_code)
                self.allowed.add(id(frame.f_code))

        for cls, step, accepted in self.classes.values():
            work = np.zeros(2)
            tensor = self.from_numpy(work)
            self.set_grad(tensor, self.from_numpy(np.ones(2)))
            settings = {k: False for k in IMPLEMENTATION if k in accepted}
            self.setprofile(record)
            try:
                optimizer = cls([{"params": [tensor], **settings}])
                for _ in range(MAX_STEPS):  # a later step runs code the first does not (state)
                    step(optimizer)
            except Exception:  # noqa: S112  (a class that needs more: a closure, sparse grads)
                continue
            finally:
                self.setprofile(None)

    @staticmethod
    def _identities(space) -> dict[str, int] | None:
        """The identity of each value by name; None when a key is not an exact str (the
        answer's key, whose `__eq__` is its code: nothing is looked up by it)."""
        items = list(dict.items(space)) if type(space) is dict else list(dict(space).items())
        out = {}
        for key, value in items:
            if type(key) is not str:
                return None
            out[key] = id(value)
        return out

    def tables(self) -> tuple:
        return tuple(self.dump_table(op) for op in self.ops)

    def torch_changes(self, tables: tuple) -> list[str]:
        """What the answer changed of what the probe runs: the watched operators' kernels,
        the names torch.optim's modules and classes hold."""
        found = [
            f"the kernels of {op}"
            for op, was in zip(self.ops, tables, strict=True)
            if self.dump_table(op) != was
        ]
        for (label, space), was in zip(self.spaces, self.identities, strict=True):
            now = self._identities(space)
            if now is None or was is None:
                found.append(f"{label} holds a name that is not a string")
                continue
            found += [f"{label}.{k}" for k in was if now.get(k) != was[k]]
        return found

    def gradient(self, seed: int, name: str, shape: tuple, step: int = 0) -> np.ndarray:
        """A gradient that depends only on the job's seed, the parameter's name and which
        step of the probe it is for."""
        digest = self.sha256((f"{seed}/{name}" + (f"/{step}" if step else "")).encode()).digest()
        generator = self.torch_generator()
        self.seed_generator(generator, int.from_bytes(digest[:8], "little") >> 1)
        values = self.randn(*shape, generator=generator, dtype=self.float64_dtype)
        return self.to_numpy(values).astype(self.float64)

    def along(self, delta: np.ndarray, grad: np.ndarray | None) -> float:
        """How far the change goes along the gradient, per unit of gradient (-lr for SGD)."""
        if grad is None:
            return 0.0
        d, g = delta.reshape(-1), grad.reshape(-1)
        return float(self.add_reduce(self.multiply(d, g)) / self.add_reduce(self.multiply(g, g)))

    def step(
        self, entry: tuple, layout: list, settings: list, starts: list, gradients: list
    ) -> list:
        """One step per set of `gradients` of a new optimizer of the class over copies of
        `starts`, laid out in groups as `layout` says; returns the values after them. Only
        code of torch's own may run in them: anything else is refused before its first line
        and fails the probe."""
        cls, step, _ = entry
        works = [start.copy() for start in starts]
        tensors = [self.from_numpy(w) for w in works]
        taken: set[int] = set()
        groups, repeats = [], []
        for indexes, group_settings in zip(layout, settings, strict=True):
            first, again = [], []
            for i in indexes:
                (again if i in taken else first).append(tensors[i])
                taken.add(i)
            groups.append({**group_settings, "params": first})
            repeats.append(again)
        refused: list = []
        allowed = self.allowed

        def guard(frame, event, arg) -> None:
            if event == "call" and id(frame.f_code) not in allowed:
                refused.append(frame.f_code.co_name)
                raise _Refused

        failure, optimizer, intact = None, None, True
        for grads in gradients:
            for tensor, grad in zip(tensors, grads, strict=True):
                if grad is not None:
                    self.set_grad(tensor, self.from_numpy(grad.copy()))
            self.setprofile(guard)
            try:
                if optimizer is None:
                    optimizer = cls(groups)
                    for group, extra in zip(optimizer.param_groups, repeats, strict=True):
                        group["params"].extend(extra)  # held again: torch steps it again
                step(optimizer)
            except _Refused:
                pass
            except Exception as exc:  # formatted once the guard is off: torch's own exception
                failure = exc
            finally:
                intact = self.getprofile() is guard
                self.setprofile(None)
            if refused or not intact or failure is not None:
                break
        if refused or not intact:
            name = refused[0] if refused and type(refused[0]) is str else "?"
            raise _ProbeError(
                f"your code replaced code of torch's that an optimizer's step runs (`{name}`), "
                "so the step cannot be probed",
                "tampered",
            )
        if failure is not None:
            text = f"{type(failure).__name__}: {str(failure)[:300]}"
            raise _ProbeError(f"one step of the optimizer could not be probed ({text})")
        for tensor, work in zip(tensors, works, strict=True):
            if self.data_ptr(tensor) != work.__array_interface__["data"][0]:
                raise _ProbeError("the optimizer's step replaced a parameter's memory", "tampered")
        return works


def observe(ctx, params: Params) -> dict:
    """The facts, observed once for all the aspects (and their error, too)."""
    key = (TYPE, params.variable, params.model, params.steps)
    if key not in ctx.shared:
        try:
            ctx.shared[key] = _observe(ctx, params)
        except ObservationError as exc:
            ctx.shared[key] = exc
    found = ctx.shared[key]
    if isinstance(found, ObservationError):
        raise found
    facts, tensors = found
    for name, values in tensors.items():
        ctx.add_tensor(name, values)
    return facts


def _observe(ctx, params: Params) -> tuple[dict, dict]:
    ti = ctx.ti
    optimizer = ti.lookup(ctx.scope, params.variable)
    class_name, groups = ti.optimizer_of(optimizer, params.variable)
    names = ti.param_ids(ti.require_module(ti.lookup(ctx.scope, params.model), params.model))
    if len(groups) > 256 or sum(len(g.params) for g in groups) > MAX_NAMES:
        raise ObservationError(f"`{params.variable}` holds more tensors than the checks read")
    held: list = []  # each tensor once, in the order first held
    labels: list[str] = []
    index: dict[int, int] = {}
    layout, out_groups, frozen, unknown = [], [], [], 0
    for group in groups:
        indexes = []
        for p in group.params:
            i = index.get(id(p))
            if i is None:
                i = index[id(p)] = len(held)
                held.append(p)
                name = names.get(id(p))
                if name is None:
                    unknown += 1
                    name = f"<tensor #{unknown} not in `{params.model}`>"
                elif not ti.requires_grad(p):
                    frozen.append(name)
                labels.append(name)
            indexes.append(i)
        layout.append(indexes)
        hyper = {
            key: value
            for key, value in list(group.hyper.items())[:64]
            if len(key) <= 64 and ti.readable(value)
        }
        out_groups.append({"params": [labels[i] for i in indexes], "hyper": hyper})
    facts: dict = {"class_name": class_name, "groups": out_groups, "frozen": frozen}
    in_model = [id(p) in names for p in held]
    try:
        facts["changes"], tensors = _probe(
            ctx, optimizer, groups, layout, held, labels, in_model, params.steps
        )
    except _ProbeError as exc:
        facts["probe_error"], facts["probe_reason"], tensors = str(exc), exc.reason, {}
    return facts, tensors


def _probe(ctx, optimizer, groups, layout, held, labels, in_model, steps) -> tuple[dict, dict]:
    """Step a copy of the optimizer twice over, from the values and from zero."""
    ti, kit = ctx.ti, ctx.shared.get((TYPE, "kit"))
    if kit is None:
        raise _ProbeError("the optimizer's step was not prepared for probing")
    changed = kit.torch_changes(ctx.shared[(TYPE, "tables")])
    if changed:
        raise _ProbeError(
            f"your code changed torch itself ({preview(changed)}): the optimizer's step cannot be probed",
            "tampered",
        )
    entry = kit.classes[id(type(optimizer))]  # optimizer_of checked it is one of these
    settings = []
    for group in groups:
        chosen = {}
        for key, value in group.hyper.items():
            if ti.readable(value):
                chosen[key] = value
            elif key in entry[2]:
                raise _ProbeError(
                    f"the optimizer's setting `{key}` is not a plain number, so its step cannot be probed"
                )
        chosen.update({key: False for key in IMPLEMENTATION if key in entry[2] or key in chosen})
        settings.append(chosen)
    starts, grads = [], []
    for p, label in zip(held, labels, strict=True):
        if ti.requires_grad(p):  # a frozen tensor gets no gradient: torch's step skips it
            values = ti.to_numpy(p)
            if values.dtype.kind != "f":
                raise _ProbeError(f"{label} is not a floating-point tensor")
            starts.append(values.astype(kit.float64))
            grads.append(kit.gradient(ctx.seed, label, starts[-1].shape))
        else:
            starts.append(kit.zeros(1))
            grads.append(None)
    later = [
        [
            kit.gradient(ctx.seed, label, g.shape, k) if g is not None else None
            for label, g in zip(labels, grads, strict=True)
        ]
        for k in range(1, steps)
    ]
    counts = [0] * len(held)
    for indexes in layout:
        for i in indexes:
            counts[i] += 1
    changes = {
        label: {"held": counts[i], "trainable": grads[i] is not None, "in_model": in_model[i]}
        for i, label in enumerate(labels)
    }
    tensors: dict = {}
    for probe, along in (("step", "along"), ("zero", "zero_along")):
        if probe == "zero":
            starts = [kit.zeros(s.shape) for s in starts]
        gradients = [grads] if probe == "zero" else [grads, *later]
        after, budget = kit.step(entry, layout, settings, starts, gradients), MAX_EXPORTED
        for i, label in enumerate(labels):
            delta = after[i] - starts[i]
            record = changes[label]
            record[probe], record[along] = ti.summary(delta), kit.along(delta, grads[i])
            if grads[i] is not None and record[probe][1] != 0 and delta.size <= budget:
                tensors[f"{probe}/{label}"] = delta.astype(kit.float32)
                budget -= delta.size
        del after
    return changes, tensors


# --- judge (on the host) -------------------------------------------------------------


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    if want.probe_error is not None:  # the reference's step is the grader's to probe
        raise ValueError(f"the reference's optimizer could not be probed: {want.probe_error}")
    if params.aspect == "type":
        if have.class_name != want.class_name:
            return Verdict.fail(
                f"the optimizer is a {have.class_name}, expected a {want.class_name}", "other-class"
            )
        return Verdict(True, f"the optimizer is a {want.class_name}")
    if params.aspect == "params":
        return _judge_params(have, want)
    if params.aspect == "lr":
        if have.class_name != want.class_name:
            return _judge_lr_values(params, have, want)
        if have.probe_error is not None:
            return Verdict.fail(have.probe_error, have.probe_reason)
        return _judge_lr(params, got, expected)
    if have.probe_error is not None:
        return Verdict.fail(have.probe_error, have.probe_reason)
    return _judge_update(params, got, expected)


def _judge_update(params: Params, got: Observed, expected: Observed) -> Verdict:
    have, want = got.facts, expected.facts
    wanted, moved = want.moving("step"), have.moving("step")
    problems: list[tuple[str, str]] = []
    for name in wanted:
        if name not in moved:
            problems.append((f"{name} does not change{_why_still(have, name)}", "left-out"))
        elif not _same(params, got, expected, name, "step"):
            size = _step_size(params, got, expected, name)
            problems.append(
                size
                if size is not None
                else (
                    _unlike(have, want, name) + _differences(have, want, name, lr=False),
                    "settings" if have.class_name == want.class_name else "other-class",
                )
            )
    problems += [
        (f"{n} changes, which the reference's step leaves unchanged", "extra-updated")
        for n in moved
        if n not in wanted
    ]
    if problems:
        more = f" ({plural(len(problems), 'tensor')} differ)" if len(problems) > 1 else ""
        return Verdict(
            False,
            f"after {_steps(params)} from the same gradients, {problems[0][0]}{more}",
            frozenset({"step-differs", *(reason for _, reason in problems)}),
        )
    return Verdict(
        True,
        f"one step from seeded gradients changes {plural(len(wanted), 'tensor')} "
        f"({preview(wanted)}) as the reference's step does",
    )


def _judge_params(have: Facts, want: Facts) -> Verdict:
    wanted = _union(want.moving("step"), want.moving("zero"))
    holds, reference_holds = _holdings(have), _holdings(want)
    if have.probe_error is None:
        moved = _union(have.moving("step"), have.moving("zero"))
    else:  # what it would update, from what it holds
        moved = [n for n, (_, trainable, _) in holds.items() if trainable]
    problems, reasons = [], set()
    missing = [n for n in wanted if n not in moved]
    if missing:
        problems.append(f"it leaves {preview(missing)} unchanged{_why_still(have, missing[0])}")
        reasons.update(_still_reason(have, n) for n in missing)
    extra = [n for n in moved if n not in wanted]
    if extra:
        problems.append(f"it also updates {preview(extra)}, which the reference leaves unchanged")
        reasons.add("extra-updated")
    idle = [n for n in holds if n not in moved and n not in reference_holds and n not in wanted]
    frozen = [n for n in idle if holds[n][2] and not holds[n][1]]
    if frozen:
        problems.append(
            f"it also holds {plural(len(frozen), 'frozen tensor')} ({preview(frozen)}) that never change: "
            "an optimizer over the trainable parameters holds only those"
        )
        reasons.add("frozen-held")
    still = [n for n in idle if holds[n][2] and holds[n][1]]
    if still:
        problems.append(f"it also holds {preview(still)}, which its step does not change")
        reasons.add("idle-held")
    foreign = [n for n in holds if not holds[n][2]]
    if foreign:
        reasons.add("foreign")
        problems.append(
            f"it holds {plural(len(foreign), 'tensor')} that {'is' if len(foreign) == 1 else 'are'} "
            "not a parameter of the model (made after the optimizer, or by another model?)"
        )
    repeats = [n for n in wanted if n in holds and holds[n][0] != reference_holds[n][0]]
    if repeats:
        times, once = holds[repeats[0]][0], reference_holds[repeats[0]][0]
        problems.append(
            f"it holds {repeats[0]} {plural(times, 'time')}, expected {plural(once, 'time')}: "
            f"each step updates it {plural(times, 'time')}"
            + (f" ({plural(len(repeats), 'tensor')} affected)" if len(repeats) > 1 else "")
        )
        reasons.add("held-twice")
    if not problems:
        return Verdict(
            True,
            f"the optimizer updates exactly {plural(len(wanted), 'tensor')} ({preview(wanted)})",
        )
    head = f"the optimizer updates {plural(len(moved), 'tensor')}"
    head += f" ({preview(moved)})" if moved else ""
    return Verdict(
        False,
        f"{head}, expected {len(wanted)} ({preview(wanted)}); " + "; ".join(problems),
        frozenset(reasons),
    )


def _holdings(facts: Facts) -> dict[str, tuple[int, bool, bool]]:
    """Each tensor the optimizer holds: how many times, whether trainable, whether the
    model's (from the probe's facts, else from the param groups)."""
    if facts.changes:
        return {n: (c.held, c.trainable, c.in_model) for n, c in facts.changes.items()}
    out: dict[str, tuple[int, bool, bool]] = {}
    for name in (n for g in facts.groups for n in g.params):
        count, _, _ = out.get(name, (0, False, False))
        in_model = not name.startswith("<tensor #")
        out[name] = (count + 1, in_model and name not in facts.frozen, in_model)
    return out


def _judge_lr(params: Params, got: Observed, expected: Observed) -> Verdict:
    have, want = got.facts, expected.facts
    wanted, moved = want.moving("zero"), have.moving("zero")
    compared = [n for n in wanted if n in moved]
    still = [
        n for n in wanted if n not in moved and n in have.changes and have.changes[n].trainable
    ]
    if not compared and not still:
        return Verdict.fail(
            "the optimizer updates none of the expected parameters, so no learning rate applies to them",
            "left-out",
        )
    wrong = [size for n in compared if (size := _step_size(params, got, expected, n)) is not None]
    others = [text for text, reason in wrong if reason == "settings"]
    wrong = [(text, reason) for text, reason in wrong if reason != "settings"]
    wrong += [
        (f"one step leaves {n} unchanged{_why_still(have, n)}", _still_reason(have, n))
        for n in still
    ]
    if wrong:
        more = f" ({plural(len(wrong), 'tensor')} affected)" if len(wrong) > 1 else ""
        return Verdict(False, wrong[0][0] + more, frozenset(reason for _, reason in wrong))
    lrs = sorted({lr for n in wanted if (lr := want.lr_by_param().get(n)) is not None})
    if others:
        return Verdict(
            True,
            "learning rate " + ", ".join(f"{lr:g}" for lr in lrs) + " as expected; another "
            "setting changes the size of the step (see the update check)",
        )
    return Verdict(
        True,
        "learning rate "
        + ", ".join(f"{lr:g}" for lr in lrs)
        + ": one step moves each parameter as far as the reference's",
    )


def _judge_lr_values(params: Params, have: Facts, want: Facts) -> Verdict:
    """Another class's step cannot be compared with the reference's: its `lr`, by value."""
    have_lr, want_lr = have.lr_by_param(), want.lr_by_param()
    note = f" (compared by value: a {have.class_name} steps differently from a {want.class_name})"
    held = [n for n in want_lr if n in have_lr]
    if not held:
        return Verdict.fail(
            "the optimizer updates none of the expected parameters, so no learning rate applies to them",
            "left-out",
        )
    for name in held:
        got_lr, lr = have_lr[name], want_lr[name]
        if got_lr is None:
            return Verdict.fail(
                f"the learning rate for {name} is not a plain number", "unobservable"
            )
        if lr is None or not math.isclose(got_lr, lr, rel_tol=params.rel_tol, abs_tol=1e-12):
            return Verdict.fail(
                f"the learning rate for {name} is {got_lr:g}, expected {lr}{note}",
                _compared(got_lr, lr),
            )
    lrs = sorted({lr for n in held if (lr := want_lr[n]) is not None})
    return Verdict(True, "learning rate " + ", ".join(f"{lr:g}" for lr in lrs) + note)


def _steps(params: Params) -> str:
    return "one step" if params.steps == 1 else f"{params.steps} steps"


def _unlike(have: Facts, want: Facts, name: str) -> str:
    """How the steps of `name` differ, when its first step from zero is the reference's."""
    mine, theirs = have.hyper_by_param().get(name, {}), want.hyper_by_param().get(name, {})
    if mine.get("weight_decay") != theirs.get("weight_decay"):
        return f"the change of {name} depends on its value, not only on its gradient"
    return f"the second step of {name} differs from the reference's: the optimizer carries a state from one step to the next"


def _union(a: list[str], b: list[str]) -> list[str]:
    return list(dict.fromkeys([*a, *b]))


def _why_still(have: Facts, name: str) -> str:
    held = _holdings(have).get(name)
    if held is None:
        return ": the optimizer does not hold it"
    if not held[1]:
        return ": it does not require grad, so it gets no gradient"
    lr = have.lr_by_param().get(name)
    return f": its step does not move it (learning rate {lr:g})" if lr is not None else ""


def _compared(got: float, want: float | None) -> str:
    if want is None:
        return "step-differs"
    if got == 0:
        return "lr-zero"
    if got < 0:
        return "ascent"
    return "lr-above" if got > want else "lr-below"


def _still_reason(have: Facts, name: str) -> str:
    held = _holdings(have).get(name)
    return "lr-zero" if held is not None and held[1] else "left-out"


def _step_size(
    params: Params, got: Observed, expected: Observed, name: str
) -> tuple[str, str] | None:
    """How the step from zero of `name` differs from the reference's, and the reason that
    names it (None: it does not differ)."""
    if _same(params, got, expected, name, "zero"):
        return None
    have, want = got.facts, expected.facts
    factor = _factor(got, expected, name)
    if factor is None:
        text = f"the step of {name} is not a multiple of the reference's"
        other = have.class_name != want.class_name
        return text + _differences(have, want, name, lr=True), (
            "other-class" if other else "not-a-multiple"
        )
    lr = want.lr_by_param().get(name)
    times, once = have.changes[name].held, want.changes[name].held
    size = abs(factor)
    if lr is not None:
        text = f"the effective learning rate for {name} is {size * lr:g}, expected {lr:g}"
    else:
        text = f"the step of {name} is {size:.3g} times the reference's"
    if factor < 0:
        maximize = have.hyper_by_param().get(name, {}).get("maximize") is True
        ascent = (
            f"the step of {name} goes along its gradient instead of against it: gradient ascent"
            + (" (maximize=True)" if maximize else "")
        )
        if math.isclose(size, 1, rel_tol=MULTIPLE_TOL):
            return ascent, "ascent"
        return f"{ascent}, and {text}", "ascent"
    if times != once and math.isclose(size, times / once, rel_tol=MULTIPLE_TOL):
        held = (
            f"it is held {plural(times, 'time')}, so each step updates it {plural(times, 'time')}"
        )
        return f"{text}: {held}", "held-twice"
    set_lr = have.lr_by_param().get(name)
    if lr is not None and set_lr is not None and math.isclose(set_lr, lr, rel_tol=1e-9):
        text = (
            f"the step of {name} is {size:.3g} times the reference's, with the learning rate "
            f"{lr:g} as expected"
        )
        return text + _differences(have, want, name, lr=False), "settings"
    return text + _differences(have, want, name, lr=False), "lr-above" if size > 1 else "lr-below"


def _differences(have: Facts, want: Facts, name: str, lr: bool) -> str:
    """The settings of the group holding `name` that differ from the reference's."""
    if have.class_name != want.class_name:
        return f": a {have.class_name} steps differently from a {want.class_name}"
    mine, theirs = have.hyper_by_param().get(name, {}), want.hyper_by_param().get(name, {})
    keys = [
        k
        for k in dict.fromkeys([*theirs, *mine])
        if k not in IMPLEMENTATION and (lr or k != "lr") and mine.get(k) != theirs.get(k)
    ]
    if not keys:
        return ""
    shown = ", ".join(
        f"{k}={_plain(mine.get(k))} (expected {_plain(theirs.get(k))})" for k in keys[:3]
    )
    return f": its settings differ: {shown}"


def _plain(value: Hyper) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    return str(value)


def _same(params: Params, got: Observed, expected: Observed, name: str, probe: str) -> bool:
    """Whether the probe changed `name` as it changed the reference's, within the tolerance:
    element-wise where both exported the change, else by its summary."""
    mine, theirs = got.tensors.get(f"{probe}/{name}"), expected.tensors.get(f"{probe}/{name}")
    if mine is not None and theirs is not None and mine.shape == theirs.shape:
        a, b = mine.astype(np.float64), theirs.astype(np.float64)
        return bool(np.linalg.norm(a - b) <= params.rel_tol * np.linalg.norm(b) + 1e-30)
    have, want = (
        getattr(got.facts.changes[name], probe),
        getattr(expected.facts.changes[name], probe),
    )
    scales = (want[1], want[1], want[2])
    return all(
        abs(h - w) <= params.rel_tol * s + 1e-30 for h, w, s in zip(have, want, scales, strict=True)
    )


def _factor(got: Observed, expected: Observed, name: str) -> float | None:
    """r where the step from zero of `name` is r times the reference's, else None."""
    mine, theirs = got.facts.changes[name], expected.facts.changes[name]
    if not theirs.zero_along or not math.isfinite(mine.zero_along):
        return None
    r = mine.zero_along / theirs.zero_along
    a, b = got.tensors.get(f"zero/{name}"), expected.tensors.get(f"zero/{name}")
    if a is not None and b is not None and a.shape == b.shape:
        a, b = a.astype(np.float64), b.astype(np.float64)
        close = np.linalg.norm(a - r * b) <= MULTIPLE_TOL * abs(r) * np.linalg.norm(b)
        return r if close else None
    h, w = mine.zero, theirs.zero
    close = (
        abs(h[0] - r * w[0]) <= MULTIPLE_TOL * abs(r) * w[1]
        and math.isclose(h[1], abs(r) * w[1], rel_tol=MULTIPLE_TOL)
        and math.isclose(h[2], r * r * w[2], rel_tol=MULTIPLE_TOL)
    )
    return r if close else None
