"""`optimizer`'s observer: the optimizer's class and param groups, and its steps probed
on copies (the check, and how it probes: contract/checks/optimizer.py).
"""

from __future__ import annotations

import numpy as np

from contract.checks.base import MAX_NAMES, PROTECTED, ObservationError, plural, preview
from contract.checks.optimizer import IMPLEMENTATION, MAX_STEPS, TYPE, Params

__all__ = ["TYPE", "RUNS_TORCH", "prepare", "observe"]  # what the harness reads

RUNS_TORCH = True  # it steps a copy of the optimizer: torch must be as the setup left it
# Why the optimizer of a model with hooks is not judged: what a hook would do.
HOOKS = (
    "it runs whenever the model is used or trained, and can change the optimizer's settings "
    "or the gradients it steps with"
)
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
    if (TYPE, "before", params.variable) not in ctx.shared:
        ctx.shared[(TYPE, "before", params.variable)] = _before(ctx, params.variable)


def _before(ctx, variable: str) -> tuple | None:
    """The optimizer the setup left under `variable` (None: none), and the identities of the
    hooks it carries before the answer runs: the setup's, not the answer's."""
    ti, kit = ctx.ti, ctx.shared[(TYPE, "kit")]
    try:
        optimizer = ti.lookup(ctx.scope, variable)
        ti.optimizer_of(optimizer, variable)
        fields = _fields(ti, optimizer, variable)
    except ObservationError:
        return None
    hooks = set()
    for key in kit.hook_keys:
        held = fields.get(key)
        if ti._obj_type(held) is kit.ordered_dict:
            hooks.update(ti._id(h) for h in ti._list(kit.dict_values(held)))
    return optimizer, frozenset(hooks)  # (the object is kept, so that its identity stays its own)


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
        import collections
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
        self._attributes()
        self._scheduler_wrapper()
        self.hook_keys = tuple(sorted({k for _, _, keys in self.attributes.values() for k in keys}))
        self.ordered_dict, self.default_dict = collections.OrderedDict, collections.defaultdict
        self.default_factory = collections.defaultdict.__dict__["default_factory"].__get__
        self.dict_values, self.dict_items, self.plain_dict = dict.values, dict.items, dict
        # The hooks every optimizer's step runs (torch.optim.optimizer's globals), and the
        # identities of those registered before the answer ran (the setup's).
        home = sys.modules["torch.optim.optimizer"].__dict__
        self.global_hooks = [
            (register, home[name], frozenset(id(h) for h in list(dict.values(home[name]))))
            for name, register in (
                ("_global_optimizer_pre_hooks", "register_optimizer_step_pre_hook"),
                ("_global_optimizer_post_hooks", "register_optimizer_step_post_hook"),
            )
            if type(home.get(name)) is collections.OrderedDict
        ]
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

    def _attributes(self) -> None:
        """What a new optimizer of each class holds as its own attributes, from new ones made
        here: built with each implementation setting, stepped, zeroed, saved and loaded, given
        a group, copied. `attributes[id(cls)]`: (every name one of them had, the names all of
        them had, the names of the hook dictionaries)."""
        import copy
        from collections import OrderedDict

        self.attributes: dict[int, tuple[frozenset, frozenset, tuple]] = {}
        for cls, step, accepted in self.classes.values():
            plain = {k: False for k in IMPLEMENTATION if k in accepted}
            variants = [plain] + [{**plain, k: True} for k in IMPLEMENTATION if k in accepted]
            seen: list[frozenset] = []
            hooks: set[str] = set()
            for settings in variants:
                tensor = self.from_numpy(np.zeros((2, 2), dtype=np.float32))  # (Muon: 2-D only)
                self.set_grad(tensor, self.from_numpy(np.ones((2, 2), dtype=np.float32)))
                try:
                    optimizer = cls([tensor], **settings)
                except Exception:  # noqa: S112  (a setting this machine does not support)
                    continue
                seen.append(frozenset(vars(optimizer)))
                hooks.update(k for k, v in vars(optimizer).items() if type(v) is OrderedDict)
                for action in ("step", "zero_grad", "reload", "add_param_group", "copy"):
                    try:
                        if action == "step":
                            step(optimizer)
                        elif action == "zero_grad":
                            optimizer.zero_grad()
                        elif action == "reload":
                            optimizer.load_state_dict(optimizer.state_dict())
                        elif action == "add_param_group":
                            extra = self.from_numpy(np.zeros((2, 2), dtype=np.float32))
                            optimizer.add_param_group({"params": [extra]})
                        else:
                            seen.append(frozenset(vars(copy.deepcopy(optimizer))))
                    except Exception:  # noqa: S112  (a class that needs more: a closure)
                        continue
                    seen.append(frozenset(vars(optimizer)))
            if seen:
                every = frozenset().union(*seen)
                self.attributes[id(cls)] = (every, every.intersection(*seen), tuple(sorted(hooks)))

    def _scheduler_wrapper(self) -> None:
        """torch's learning-rate schedulers set an optimizer's `step` to a wrapper of the
        class's (it counts the steps): its code, the readers of a function and of a cell, and
        the class's `step` it wraps, by identity; the attribute it sets when called."""
        import types
        import weakref

        from torch.optim import lr_scheduler

        def nested(code, name: str):
            for const in code.co_consts:
                if type(const) is types.CodeType:
                    if const.co_qualname.endswith(name):
                        return const
                    found = nested(const, name)
                    if found is not None:
                        return found
            return None

        self.wrapper_code = nested(
            lr_scheduler.LRScheduler.__init__.__code__, "wrap_step.<locals>.wrapper"
        )
        if self.wrapper_code is not None and self.wrapper_code.co_freevars != ("func", "opt_ref"):
            self.wrapper_code = None
        self.function, self.cell, self.weak_ref = types.FunctionType, types.CellType, weakref.ref
        self.code_of = types.FunctionType.__code__.__get__
        self.closure_of = types.FunctionType.__closure__.__get__
        self.cell_contents = types.CellType.cell_contents.__get__
        self.dereference = weakref.ref.__call__
        self.class_steps = {
            key: next(c.__dict__["step"] for c in cls.__mro__ if "step" in c.__dict__)
            for key, (cls, _, _) in self.classes.items()
        }
        self.wrapper_keys = frozenset({"step", "_opt_called"})

    def scheduler_step(self, optimizer, step) -> bool:
        """Whether `step`, an optimizer's own attribute, is a scheduler's wrapper of its class's
        step over this very optimizer (read by exact type, through C-level readers)."""
        if self.wrapper_code is None or type(step) is not self.function:
            return False
        if self.code_of(step) is not self.wrapper_code:
            return False
        cells = self.closure_of(step)
        if type(cells) is not tuple or len(cells) != 2:
            return False
        if type(cells[0]) is not self.cell or type(cells[1]) is not self.cell:
            return False
        try:
            func, ref = self.cell_contents(cells[0]), self.cell_contents(cells[1])
        except ValueError:  # an empty cell
            return False
        wrapped = self.class_steps.get(id(type(optimizer)))
        if wrapped is None or func is not wrapped or type(ref) is not self.weak_ref:
            return False
        return self.dereference(ref) is optimizer

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
    model = ti.require_module(ti.lookup(ctx.scope, params.model), params.model)
    ti.no_hooks(model, HOOKS)
    names = ti.param_ids(model)
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
    facts["tampering"] = _tampering(ctx, optimizer, params.variable)
    facts["tampering"] += _tensor_settings(ti, groups, model, params.variable)
    in_model = [id(p) in names for p in held]
    try:
        facts["changes"], tensors = _probe(
            ctx, optimizer, groups, layout, held, labels, in_model, params.steps
        )
    except _ProbeError as exc:
        facts["probe_error"], facts["probe_reason"], tensors = str(exc), exc.reason, {}
    return facts, tensors


MAX_FINDINGS = 8  # what `_tampering` reports at most


def _tensor_settings(ti, groups, model, variable: str) -> list[str]:
    """A setting given as a tensor (a 0-d learning rate) that is a view of another tensor or
    shares memory with the model's state changes whenever that tensor does (a batch norm's
    statistics move at every forward in training mode): what the probe reads now is not what
    later steps use."""
    state = {ti.storage_key(t): name for name, t in ti.named_state(model)}
    found = []
    for group in groups:
        for key, tensor in group.tensors:
            shared = state.get(ti.storage_key(tensor))
            if shared is not None:
                found.append(
                    f"`{variable}`'s {key} is a tensor that shares its memory with `{shared}` "
                    "of the model: it changes whenever that tensor does"
                )
            elif ti.is_view(tensor):
                found.append(
                    f"`{variable}`'s {key} is a view of another tensor: it changes whenever "
                    "that tensor does"
                )
    return found[:MAX_FINDINGS]


def _fields(ti, optimizer, variable: str) -> dict:
    """The optimizer's own attributes, by name (exact strings), read through Optimizer's own
    `__dict__` descriptor and C-level iteration."""
    items = ti._plain_items(ti._optimizer_dict(optimizer), f"the attributes of `{variable}`")
    return {key: value for key, value in items}


def _tampering(ctx, optimizer, variable: str) -> list[str]:
    """What the answer attached to its optimizer, or to every optimizer, that a new one of
    the class (which the probe steps) does not have: attributes of its own (a `step` that
    shadows the class's), hooks, state its next step would start from. Read by exact type,
    by identity and by C-level iteration; nothing of it is called."""
    ti, kit = ctx.ti, ctx.shared.get((TYPE, "kit"))
    if kit is None:
        return []  # the probe says it was not prepared
    what, cls = f"`{variable}`", ti._obj_type(optimizer)
    allowed, required, hook_keys = kit.attributes.get(ti._id(cls), (None, (), kit.hook_keys))
    fields = _fields(ti, optimizer, variable)
    found: list[str] = []
    if allowed is not None:
        if "step" in fields and kit.scheduler_step(optimizer, fields["step"]):
            allowed = allowed | kit.wrapper_keys  # a learning-rate scheduler's, of torch's own
        own = [key for key in fields if key not in allowed]
        label = ti.type_name(cls)
        if "step" in own:
            found.append(
                f"{what} has an attribute `step` of its own: it shadows {label}'s step, so "
                f"`{variable}.step()` runs your code instead (a new optimizer has no such attribute)"
            )
        others = [f"`{key[:40]}`" for key in own if key != "step"]
        if others:
            found.append(
                f"{what} has {'an attribute' if len(others) == 1 else 'attributes'} of its own "
                f"that a new {label} does not have: {preview(others)}"
            )
        lacking = [f"`{key}`" for key in sorted(required) if key not in fields]
        if lacking:
            found.append(f"{what} lacks {preview(lacking)}, which every new {label} holds")
    # Hooks the grader itself installed (its instrumentation), or the setup did, are not the answer's.
    before = ctx.shared.get((TYPE, "before", variable))
    graders = _grader_functions(ti, ctx.shared.get(PROTECTED))
    mine = graders | before[1] if before is not None and before[0] is optimizer else graders
    for key in hook_keys:
        held = fields.get(key)
        if held is None:
            continue  # (reported as lacking)
        kind = key.removeprefix("_optimizer_").removesuffix("_hooks")
        if ti._obj_type(held) is not kit.ordered_dict:
            found.append(
                f"{what}'s {kind.replace('_', ' ')} hooks are a {ti.class_name(held)} where an "
                "OrderedDict was expected: the structure its step reads was replaced"
            )
            continue
        hooks = [h for h in ti._list(kit.dict_values(held)) if ti._id(h) not in mine]
        if hooks:
            event, _, when = kind.rpartition("_")
            label = "step" if event == "step" else f"`{event}`"
            count = "a" if len(hooks) == 1 else str(len(hooks))
            found.append(
                f"{what} carries {count} {label} {when}-hook{'s' if len(hooks) > 1 else ''} of "
                f"yours (`{variable}.register_{kind}_hook`), which a new optimizer does not: it "
                f"runs with each {'step' if event == 'step' else f'call of {label}'}"
            )
    for register, held, setup in kit.global_hooks:
        hooks = [
            h
            for h in ti._list(kit.dict_values(held))
            if ti._id(h) not in setup and ti._id(h) not in graders
        ]
        if hooks:
            found.append(
                f"a global optimizer hook of yours is registered "
                f"(`torch.optim.optimizer.{register}`): it runs at every optimizer's step"
            )
    defaults = fields.get("defaults")
    if ti._obj_type(defaults) is not dict:
        found.append(f"{what}'s defaults are a {ti.class_name(defaults)} where a dict was expected")
    else:
        flag = ti._field(ti._plain_items(defaults, f"the defaults of {what}"), "differentiable")
        groups_flags = {
            ti._obj_type(v) is bool and v
            for g in ti.optimizer_of(optimizer, variable)[1]
            for k, v in g.hyper.items()
            if k == "differentiable"
        }
        if flag is not None and (
            ti._obj_type(flag) is not bool or {flag} != (groups_flags or {flag})
        ):
            found.append(
                f"{what}.defaults['differentiable'] differs from its param groups': its step "
                "reads it (a new optimizer with these settings would hold the groups' value)"
            )
    if (
        before is None or before[0] is not optimizer
    ):  # the setup's optimizer: its state is the answer's steps
        found += _state(ti, kit, fields.get("state"), what)
    return [text[:500] for text in found[:MAX_FINDINGS]]


def _grader_functions(ti, namespaces) -> frozenset[int]:
    """The identities of the functions of the grader's instrumentation (`PROTECTED`): a hook
    the grader installed on the answer's optimizer (the training loop's) is not the answer's."""
    found: set[int] = set()
    if ti._obj_type(namespaces) is not ti._list:
        return frozenset()
    for space in ti._list(namespaces):
        if ti._obj_type(space) is dict:
            found.update(ti._id(value) for value in ti._list(dict.values(space)))
    return frozenset(found)


def _state(ti, kit, state, what: str) -> list[str]:
    """What `state` holds that a new optimizer's does not: any entry but an empty dict (torch
    makes one on reading a tensor's state), or a factory of its own for new entries."""
    if state is None:
        return []
    if ti._obj_type(state) is not kit.default_dict:
        return [
            f"{what}.state is a {ti.class_name(state)} where a defaultdict was expected (a new "
            "optimizer's): the state its step reads was replaced"
        ]
    found = []
    if kit.default_factory(state) is not kit.plain_dict:
        found.append(
            f"{what}.state makes new entries with a factory of its own (`default_factory`): "
            "a new optimizer's starts each tensor's state empty"
        )
    held, names = 0, []
    for _, entry in ti._list(kit.dict_items(state)):
        if ti._obj_type(entry) is kit.plain_dict and ti._len(entry) == 0:
            continue
        held += 1
        if ti._obj_type(entry) is kit.plain_dict:
            names += [
                f"`{k[:40]}`"
                for k in ti._list(entry)
                if ti._obj_type(k) is str and f"`{k[:40]}`" not in names
            ]
    if held:
        found.append(
            f"{what} already holds state for {plural(held, 'tensor')}"
            + (f" ({preview(names)})" if names else "")
            + ": its next step starts from it, where a new optimizer holds none"
        )
    return found


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
