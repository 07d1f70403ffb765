"""`optimizer`'s observer: the optimizer's class and param groups, and its steps probed
on copies (the check, and how it probes: contract/checks/optimizer.py).
"""

from __future__ import annotations

import numpy as np

from contract.checks.base import MAX_NAMES, ObservationError, preview
from contract.checks.optimizer import IMPLEMENTATION, MAX_STEPS, TYPE, Params

__all__ = ["TYPE", "RUNS_TORCH", "prepare", "observe"]  # what the harness reads

RUNS_TORCH = True  # it steps a copy of the optimizer: torch must be as the setup left it
MAX_EXPORTED = 1 << 20  # elements of the changes exported as tensors, per probe


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

        from sandboxed import integrity, introspect

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
