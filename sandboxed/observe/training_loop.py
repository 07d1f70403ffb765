"""`training_loop`'s observer: the instrumentation `prepare` installs before the answer,
and what it and the epoch left (the check, and what is instrumented:
contract/checks/training_loop.py).
"""

from __future__ import annotations

import contextlib
import math

from contract.checks.base import PROTECTED, ObservationError
from contract.checks.training_loop import BUFFER, MAX_BATCHES, MAX_EVENTS, START, TYPE, Params
from sandboxed.observe.architecture import settings_of

__all__ = ["TYPE", "EXECUTES_ANSWER", "prepare", "observe"]  # what the harness reads

EXECUTES_ANSWER = True  # runs last: its forward runs torch's kernels on the answer's weights
MAX_SHARED_VALUES = 1_000_000  # head values copied into each diagnostic aspect's facts

# The instrumentation the answer can reach (the data loader's iterator, autograd's backward,
# the optimizer's step hook) is compiled into a namespace of its own holding only what it
# needs, so following its functions' globals or closures leads to the event log and to C
# functions, not to the grader's modules.
_INSTRUMENTATION = """
def logged_iter(self_):
    for i, batch in enumerate(original_iter(self_)):
        log("b%d" % i)
        yield batch


# Read by C functions with torch function handling and Python dispatch (a subclass's
# handlers, the answer's dispatch modes) off, here and in loss_value: no code of the
# answer's runs from the instrumentation.
def has_gradients():
    with no_torch_function(), no_torch_dispatch():
        for p in trainable:
            g = grad_of(p)
            if g is not None and tensor_item(tensor_any(g)):
                return True
    return False


# The value of a one-element loss of torch's own tensor type (what the kernels computed,
# whatever mode the answer set); None for anything else (a subclass, a sequence of
# tensors, a value that is not a float, a tensor without data).
def loss_value(tensors):
    if type(tensors) is not tensor_type:
        return None
    with no_torch_function(), no_torch_dispatch():
        if tensor_numel(tensors) != 1:
            return None
        try:
            value = tensor_item(tensors)
        except Exception:
            return None
    return value if type(value) is float else None


def logged_backward(*args, **kwargs):
    log("W" if has_gradients() else "w")
    if len(losses) < max_losses:
        losses.append(loss_value(args[0]) if args else None)
    try:
        out = original_backward(*args, **kwargs)
    except:
        log("r")
        raise
    if not has_gradients():
        log("n")
    return out


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


_type_dict = type.__dict__["__dict__"].__get__
_module_dict = type(contextlib).__dict__["__dict__"].__get__
_MISSING = object()
# Entries Python itself adds to a class or a module as it runs (a warning's registry,
# annotations read for the first time): not changes of code.
_LAZY = ("__warningregistry__", "__annotations__")


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
        self.writes = [ti.write_count(p) for p in self.trainable]
        self.initial = {name: ti.copy_of(t) for name, t in ti.named_buffers(self.model)}
        # Every parameter's values before the answer, to tell which the epoch left bit for
        # bit as they were (a frozen backbone): a change there is no epoch's, however small.
        # Their sums are taken now (on the fast path once per zygote, not once per job): a
        # tensor left as it was has them still.
        self.params_start = {name: ti.snapshot(t) for name, t in ti.named_parameters(self.model)}
        self.prints_start = {name: ti.fingerprint(v) for name, v in self.params_start.items()}
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
        self.losses: list[float | None] = []  # the value each backward() started from
        self.heads: set[str] = set()  # what final_weights compares element-wise
        self.head_start: dict[str, dict | ObservationError] = {}  # their values before
        self.tolerance: tuple[float, float] | None = None  # and with which rtol, atol
        self.observed: tuple[dict, dict] | BaseException | None = None  # see observe()
        self.moved_buffers: dict = {}  # the buffers the epoch moved, as it left them
        self._make_twin(self.model)
        self.loss_before, error = self.loss(self.model, record=True)
        if error is not None:
            raise ObservationError(f"the loss before the epoch could not be measured: {error}")
        self._instrument(loader)

    def decides(self, params: Params) -> None:
        """`params` (a final_weights aspect) compares its head: its values are recorded now,
        before the answer runs, so that the record's aspects can tell how they moved."""
        if params.head and params.head not in self.heads:
            self.heads.add(params.head)
            ti = self.ti
            try:
                head = ti.submodule(self.model, params.head, params.model)
                self.head_start[params.head] = {
                    f"{START}{params.head}.{name}": ti.snapshot(t)
                    for name, t in ti.named_state(head)
                }
            except ObservationError as exc:
                self.head_start[params.head] = exc
        rtol, atol = self.tolerance or (params.rtol, params.atol)
        self.tolerance = (min(rtol, params.rtol), min(atol, params.atol))

    def _instrument(self, loader) -> None:
        import torch

        cls = type(loader)
        namespace = {
            "__builtins__": {
                "enumerate": enumerate, "len": len, "type": type, "float": float,
                "Exception": Exception,
            },
            "original_iter": cls.__iter__,
            "original_backward": torch.autograd.backward,
            "log": self.events.append,  # a C method: it leads to the log and nowhere else
            "losses": self.losses,
            "max_losses": MAX_BATCHES,
            "trainable": self.trainable,
            "grad_of": torch._C.TensorBase.grad.__get__,
            "tensor_any": torch._C.TensorBase.any,
            "tensor_item": torch._C.TensorBase.item,
            "tensor_numel": torch._C.TensorBase.numel,
            "tensor_type": torch.Tensor,
            "no_torch_function": torch._C.DisableTorchFunction,
            "no_torch_dispatch": torch._C._DisableTorchDispatch,
        }  # fmt: skip
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

    def _make_twin(self, model) -> None:
        """A copy of the setup's model, made before the answer runs and out of its reach,
        and what its classes and their modules hold: the loss is measured on the twin with
        the answer's weights, so no code of the answer's computes it."""
        import copy
        import sys

        ti = self.ti
        self.twin = copy.deepcopy(model)
        self.twin_parameters = ti.named_parameters(self.twin)
        self.twin_buffers = ti.named_buffers(self.twin)
        self.twin_start = [(t, ti.copy_of(t)) for _, t in self.twin_buffers]
        part = _trained_part(ti, model, self.trainable)
        self.twin_head = None if part is None else (part, ti.submodule(self.twin, part, "model"))
        self.head_inputs: list | None = None  # see loss()
        classes, modules = {}, {}
        for _, module in ti.named_modules(self.twin):
            for cls in type(module).__mro__:
                if cls is not object and id(cls) not in classes:
                    classes[id(cls)] = (_type_dict, cls, cls.__qualname__, dict(_type_dict(cls)))
                    home = sys.modules.get(cls.__module__)
                    if home is not None and id(home) not in modules:
                        modules[id(home)] = (_module_dict, home, home.__name__, dict(vars(home)))
        self.held = [*classes.values(), *modules.values()]

    def _changed_code(self) -> str | None:
        """What of the twin's classes, or the modules they were defined in, the answer
        changed (by identity, through C-level reads): their code runs the twin's forward."""
        for read, holder, name, before in self.held:
            now = read(holder)
            added = sum(key in now and key not in before for key in _LAZY)
            if len(now) - added != len(before):
                return name
            for key, value in before.items():
                if now.get(key, _MISSING) is not value:
                    return f"{name}.{key}"
        return None

    def loss(
        self, model, record: bool = False, unchanged: frozenset = frozenset()
    ) -> tuple[float | None, str | None]:
        """(the mean loss on the epoch's batches, or why it could not be measured), by the
        twin (the setup's model, copied before the answer ran) holding the parameters of
        `model`, in train mode without gradients, from the buffers as they were before the
        epoch and a seeded generator: what the answer's weights compute, by the setup's code.
        The forward still runs in a thread of its own (`call_answer`). A model whose
        parameters are not the twin's (added, removed, reshaped), or a change of the code
        the twin runs, is not measured.

        The part of the twin that holds the optimizer's parameters (the head) is where
        training can change what the twin computes: with `record` (the loss before the
        epoch), what reaches it on each batch is kept, if the twin's output is the head's
        output; later, when every parameter outside the head is bit for bit as it was
        (`unchanged`), the same inputs from the same generator's state reach it, so only the
        head runs."""
        ti, c = self.ti, self.torch
        if not self.batches:
            return None, None
        changed = self._changed_code()
        if changed is not None:
            return None, f"the code of the model's layers was changed after the setup ({changed})"
        ti.restore_training(model, ti.set_training(model, True))  # its flags are plain ones
        answer = ti.named_parameters(model)
        if [name for name, _ in answer] != [name for name, _ in self.twin_parameters]:
            return None, "the model's parameters are not the ones it had before the epoch"
        for (name, t), (_, mine) in zip(answer, self.twin_parameters, strict=True):
            if ti.shape(t) != ti.shape(mine) or ti.dtype_name(t) != ti.dtype_name(mine):
                return None, f"the model's parameter {name} was reshaped or retyped"
        grad, rng = c.grad_enabled(), c.get_rng(c.generator)
        c.set_grad_enabled(False)
        c.seed_rng(c.generator, self.seed)
        try:
            with c.no_torch_function():
                for (_, t), (_, mine) in zip(answer, self.twin_parameters, strict=True):
                    c.copy(mine, t)
                for t, values in self.twin_start:
                    c.copy(t, values)
            ti.set_training(self.twin, True)
            if record:
                outs = self._record_head_inputs()
            elif self._head_only(unchanged):
                outs = self._head_outputs()
            else:
                outs = (ti.call_answer(ti._module_call, self.twin, x) for x, _ in self.batches)
            total = 0.0
            for out, (_, labels) in zip(outs, self.batches, strict=True):
                if type(out) is not c.tensor:
                    return None, "the model's forward did not return a tensor"
                total += ti.cross_entropy(out, labels)
            return total / len(self.batches), None
        except ti.AnswerRaised as exc:
            return None, f"the model's forward raised {str(exc)[:400]}"
        except (ObservationError, RuntimeError, IndexError, ValueError) as exc:
            return None, str(exc)[:500]
        finally:
            c.set_rng(c.generator, rng)
            c.set_grad_enabled(grad)

    def _record_head_inputs(self) -> list:
        """The twin's outputs on the batches, keeping what reached its head on each (and the
        generator's state then) when its output is what the head returned, its only call."""
        ti, c = self.ti, self.torch
        if self.twin_head is None:
            return [ti.call_answer(ti._module_call, self.twin, x) for x, _ in self.batches]
        _, head = self.twin_head
        seen: list = []

        def keep(module, args, kwargs, out):
            seen.append((args, kwargs, rng_then, out))

        rng_then = None

        def before(module, args, kwargs):
            nonlocal rng_then
            rng_then = c.get_rng(c.generator)

        handles = [
            head.register_forward_pre_hook(before, with_kwargs=True),
            head.register_forward_hook(keep, with_kwargs=True),
        ]
        outs, kept = [], []
        try:
            for inputs, _ in self.batches:
                seen.clear()
                out = ti.call_answer(ti._module_call, self.twin, inputs)
                outs.append(out)
                if len(seen) == 1 and seen[0][3] is out and not seen[0][1]:
                    kept.append((seen[0][0], seen[0][2]))
        finally:
            for handle in handles:
                handle.remove()
        self.head_inputs = kept if len(kept) == len(self.batches) else None
        return outs

    def _head_only(self, unchanged: frozenset) -> bool:
        if self.twin_head is None or self.head_inputs is None:
            return False
        prefix = self.twin_head[0] + "."
        return all(
            name in unchanged for name, _ in self.twin_parameters if not name.startswith(prefix)
        )

    def _head_outputs(self) -> list:
        ti, c = self.ti, self.torch
        _, head = self.twin_head
        outs = []
        for args, rng in self.head_inputs:
            c.set_rng(c.generator, rng)
            outs.append(ti.call_answer(ti._module_call, head, *args))
        return outs


def _trained_part(ti, model, trainable: tuple) -> str | None:
    """The path of the smallest submodule of `model` that holds every one of the
    optimizer's parameters, if that is not the whole model."""
    names = ti.param_ids(model)
    paths = [names.get(ti._id(p)) for p in trainable]
    if not paths or any(path is None for path in paths):
        return None
    parts = [path.split(".")[:-1] for path in paths]
    common = parts[0]
    for other in parts[1:]:
        n = 0
        while n < min(len(common), len(other)) and common[n] == other[n]:
            n += 1
        common = common[:n]
    return ".".join(common) if common else None


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
        for name, values in recorder.moved_buffers.items():
            ctx.add_tensor(BUFFER + name, values)
    else:
        paths = sorted(recorder.heads) if facts["decisive"] is not None else []
    for path in paths:
        if isinstance(heads[path], dict):
            for name, values in heads[path].items():
                ctx.add_tensor(name, values)
            start = recorder.head_start.get(path)
            if params.aspect != "final_weights" and isinstance(start, dict):
                for name, values in start.items():
                    ctx.add_tensor(name, values)
    return facts


def _observe_loop(ctx, params: Params, recorder: _Recorder) -> tuple[dict, dict]:
    ti = ctx.ti
    model = ti.lookup(ctx.scope, params.model)
    if not ti.same_object(model, recorder.model):
        raise ObservationError(
            f"`{params.model}` was replaced by another object: train the model you were given",
            "model-replaced",
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
    buffers, buffers_moved, unchanged, moved = {}, 0, [], {}
    for name, t in ti.named_buffers(model):
        values = ti.to_numpy(t)
        buffers[name] = ti.fingerprint(values)
        start = recorder.initial.get(name)
        if start is not None and ti.same_bits(values, ti.to_numpy(start)):
            unchanged.append(name)
        else:
            buffers_moved += 1
            moved[name] = values
    if sum(v.size for v in moved.values()) <= MAX_SHARED_VALUES:
        recorder.moved_buffers = moved
    parameters = {}
    for name, t in ti.named_parameters(model):
        values = ti.to_numpy(t)
        start = recorder.params_start.get(name)
        if start is not None and ti.same_bits(values, start):
            unchanged.append(name)
            parameters[name] = recorder.prints_start[name]
        else:
            parameters[name] = ti.fingerprint(values)
    replaced, hyper = _optimizer_now(ctx, params, recorder)
    hooked = None  # code set on the model after the epoch runs whenever it is used
    try:
        ti.no_hooks(model, "it changes what the model computes, or how it trains, from now on")
    except ObservationError as exc:
        hooked = str(exc)[:1000]
    facts = {
        "batches_total": len(recorder.batches),
        "events": [e for e in recorder.events[:MAX_EVENTS] if type(e) is str],
        "losses": [
            v if type(v) is float and math.isfinite(v) else None
            for v in recorder.losses[:MAX_BATCHES]
        ],
        "loss_before": recorder.loss_before,
        "parameters": parameters,
        "buffers": buffers,
        "unchanged": unchanged,
        "buffers_moved": buffers_moved,
        "moved": _moved(ti, recorder),
        "parameter_writes": _writes(ti, recorder),
        "hyper": hyper,
        "optimizer_replaced": replaced,
        "hooked": hooked,
        "foreign_parameters": _foreign(ti, model, recorder),
        "decisive": decisive,
        **_layers(ti, model, params.model),
    }
    # Last: it runs the model's forward.
    facts["loss_after"], facts["loss_error"] = recorder.loss(model, unchanged=frozenset(unchanged))
    return facts, heads


def _layers(ti, model, variable: str) -> dict:
    """The model as the epoch left it beyond its values: each layer's class and settings
    (stride, eps, ...), each state tensor's dtype, which parameters are trainable. What the
    answer computes after the epoch must leave these as training did."""
    modules = list(ti.named_modules(model))
    return {
        "modules": {path: ti.class_name(m) for path, m in modules},
        "settings": {
            path: settings_of(ti, m, f"`{variable}.{path}`" if path else f"`{variable}`")
            for path, m in modules
        },
        "dtypes": {name: ti.dtype_name(t) for name, t in ti.named_state(model)},
        "trainable": sorted(n for n, p in ti.named_parameters(model) if ti.requires_grad(p)),
    }


def _moved(ti, recorder: _Recorder) -> float | None:
    total = 0.0
    try:
        for p, start in zip(recorder.trainable, recorder.start, strict=True):
            now = ti.to_numpy(p)
            if now.shape != start.shape:
                return None
            total += ti.squared_distance(now, start)
    except ObservationError:
        return None
    return math.sqrt(total) if math.isfinite(total) else None  # weights gone to NaN or inf


def _writes(ti, recorder: _Recorder) -> int | None:
    """How many in-place writes the optimizer's parameters took during the epoch (their
    version counters, which the answer's code cannot lower), or None if one cannot be read."""
    try:
        now = [ti.write_count(p) for p in recorder.trainable]
    except ObservationError:
        return None
    return sum(max(0, after - before) for after, before in zip(now, recorder.writes, strict=True))


def _foreign(ti, model, recorder: _Recorder) -> int:
    ids = {ti._id(t) for _, t in ti.named_parameters(model)}
    return sum(ti._id(p) not in ids for p in recorder.trainable)


def _optimizer_now(ctx, params: Params, recorder: _Recorder) -> tuple[bool, list[dict]]:
    """Whether `optimizer` is still the one instrumented, and its hyper-parameters now. The
    optimizer the task gave, with its structure tampered with (a param_groups list
    subclass, a group that is not a plain dict), is not "replaced": its error is raised."""
    ti = ctx.ti
    replaced = True
    try:
        current = ti.lookup(ctx.scope, params.optimizer)
        replaced = not ti.same_object(current, recorder.optimizer)
        _, groups = ti.optimizer_of(current, params.optimizer)
    except ObservationError:
        if not replaced:
            raise
        return True, []
    hyper = [{key: value for key, value in g.hyper.items() if type(value) is float} for g in groups]
    return replaced, hyper
