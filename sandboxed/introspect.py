"""Readers of the objects an answer left behind, for observers running in the sandbox.

Every object the answer made is hostile: its special methods (`__bool__`, `__eq__`,
`__hash__`, `__iter__`, `__getattr__`, `__del__`, `__torch_function__`, descriptors,
metaclass hooks) are the learner's code. So the readers here never let Python choose
what runs: every structure is checked for its exact type first (`type(x) is dict`, an
exact `Parameter` or `Tensor`, a module class whose metaclass is `type`), dictionaries
are walked by C-level iteration after their keys are checked to be exact strings,
instance dictionaries are read through `nn.Module`'s own `__dict__` descriptor, tensors
through the C-level accessors captured when this module is imported (with torch function
dispatch disabled), and tensor values are copied straight from their memory by numpy,
without running an operator of torch's dispatcher. A subclass or proxy where a plain
object is expected is a tampered structure: an `ObservationError` that says so.

Calls into the answer's own code (a module's `forward`) go through `call_answer`, which
runs them in a thread of their own whose frames lead nowhere, and keeps whatever they
return alive until the process exits, so no finaliser of theirs runs in an observer.
"""

from __future__ import annotations

import _thread
import builtins
import gc
import hashlib
import os as _os
import time
import types

# A private copy of the builtins: a student who rebinds `builtins.isinstance` or
# `builtins.sorted` does not reach the functions defined below.
__builtins__ = dict(builtins.__dict__)
from collections import OrderedDict as _OrderedDict  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from contract.checks.base import ObservationError  # noqa: E402

_TensorBase = torch._C.TensorBase
_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter
_Module = torch.nn.Module
_Optimizer = torch.optim.Optimizer
_LazyModule = torch.nn.modules.lazy.LazyModuleMixin
_requires_grad = _TensorBase.requires_grad.__get__
_grad = _TensorBase.grad.__get__
_version = _TensorBase._version.__get__
_tensor_backward_hooks = _TensorBase._backward_hooks.__get__
_tensor_post_accumulate_hooks = _TensorBase._post_accumulate_grad_hooks.__get__
_tensor_attributes = torch.Tensor.__dict__["__dict__"].__get__
_base_of = _TensorBase._base.__get__
_untyped_storage = _TensorBase.untyped_storage
_storage_ptr = torch._C.StorageBase.data_ptr
_shape = _TensorBase.shape.__get__
_dtype = _TensorBase.dtype.__get__
_device = _TensorBase.device.__get__
_layout = _TensorBase.layout.__get__
_is_sparse = _TensorBase.is_sparse.__get__
_is_quantized = _TensorBase.is_quantized.__get__
_is_meta = _TensorBase.is_meta.__get__
_stride = _TensorBase.stride
_data_ptr = _TensorBase.data_ptr
_is_conj = _TensorBase.is_conj
_is_neg = _TensorBase.is_neg
_numel = _TensorBase.numel
_is_inference = _TensorBase.is_inference
_internal_overlap = torch._debug_has_internal_overlap  # 1: some elements share memory
_detach = _TensorBase.detach
_to = _TensorBase.to
_clone = _TensorBase.clone
_add_ = _TensorBase.add_
_narrow = _TensorBase.narrow
_copy_ = _TensorBase.copy_
_from_numpy = torch.from_numpy
_device_type = torch.device.type.__get__
_strided = torch.strided
_no_torch_function = torch._C.DisableTorchFunction
_set_grad_enabled = torch._C._set_grad_enabled
_cross_entropy_loss = torch._C._nn.cross_entropy_loss
_ones_like = torch._C._VariableFunctions.ones_like
_run_backward = torch.autograd.variable.Variable._execution_engine.run_backward
_cat = torch._C._VariableFunctions.cat
_torch_randn = torch._C._VariableFunctions.randn
_Generator = torch._C.Generator
_generator_seed = torch._C.Generator.manual_seed
_module_call = torch.nn.Module.__call__
_module_dict = _Module.__dict__["__dict__"].__get__
_optimizer_dict = _Optimizer.__dict__["__dict__"].__get__
_is_subclass = type.__dict__["__subclasscheck__"]
_type_mro = type.__dict__["__mro__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_class_dict = type.__dict__["__dict__"].__get__
_FunctionType = type(lambda: None)
_proxy_items = type(type.__dict__).items
_obj_type = builtins.type
_dict_items = dict.items
_od_items = _OrderedDict.items
_od_setitem = _OrderedDict.__setitem__
_dict_setitem = dict.__setitem__
_dict = builtins.dict
_id = builtins.id
_float = builtins.float
_int = builtins.int
_bool = builtins.bool
_str = builtins.str
_list = builtins.list
_tuple = builtins.tuple
_len = builtins.len
_sha256 = hashlib.sha256
_float64 = np.float64
_float32 = np.float32
_uint32 = np.uint32
_int32 = np.int32
_int64 = np.int64
_np_reduce = np.add.reduce
_np_abs = np.abs
_np_multiply = np.multiply
_np_arange = np.arange
_np_array = np.array
_np_not_equal = np.not_equal
_np_subtract = np.subtract
_np_any = np.logical_or.reduce
_np_uint8 = np.uint8
_np_empty = np.empty
_start_thread = _thread.start_new_thread
_new_lock = _thread.allocate_lock
_thread_count = _thread._count
_gc_disable = gc.disable
_sleep = time.sleep

# numpy's description of each torch dtype whose memory it can read as it is, and the
# dtype the copy is converted to (float tensors are compared as float32).
_READABLE = {
    torch.float32: ("<f4", None),
    torch.float64: ("<f8", np.float32),
    torch.float16: ("<f2", np.float32),
    torch.bfloat16: ("<u2", "bfloat16"),
    torch.int64: ("<i8", None),
    torch.int32: ("<i4", None),
    torch.int16: ("<i2", None),
    torch.int8: ("|i1", None),
    torch.uint8: ("|u1", None),
    torch.bool: ("|b1", None),
}
_ITEMSIZE = {"<f4": 4, "<f8": 8, "<f2": 2, "<u2": 2, "<i8": 8, "<i4": 4, "<i2": 2, "|i1": 1, "|u1": 1, "|b1": 1}  # fmt: skip
_DTYPE_NAMES = {dt: _str(dt).removeprefix("torch.") for dt in _READABLE}


def _class_names() -> dict[int, str]:
    """The qualified name of every class torch, torchvision and the optimizers define, by the
    identity of the class: a class of the answer's cannot take one by setting `__module__`."""
    import torchvision

    names: dict[int, str] = {}
    for package in (torch.nn, torch.optim, torch.utils.data, torchvision.models, torchvision.ops):
        stack = [package]
        seen: set[int] = set()
        while stack:
            mod = stack.pop()
            if _id(mod) in seen:
                continue
            seen.add(_id(mod))
            for value in _list(_dict_items(mod.__dict__)):
                obj = value[1]
                if _obj_type(obj) is _obj_type(torch) and obj.__name__.startswith(package.__name__):
                    stack.append(obj)
                elif isinstance(obj, type) and _id(obj) not in names:
                    names[_id(obj)] = f"{obj.__module__}.{obj.__qualname__}"
    for cls in (_Tensor, _Parameter, _Module, _Optimizer, torch.device, torch.Generator):
        names[_id(cls)] = f"{cls.__module__}.{cls.__qualname__}"
    for value in _list(vars(builtins).values()):
        if isinstance(value, type):
            names[_id(value)] = f"builtins.{value.__qualname__}"
    for value in _list(vars(types).values()):  # functions, methods, modules, None's type
        if isinstance(value, type) and _id(value) not in names:
            names[_id(value)] = value.__qualname__
    return names


_NAMES = _class_names()
_METACLASSES = {_id(type), _id(_obj_type(_Tensor)), _id(_obj_type(_Parameter))}
_METACLASSES |= {_id(_obj_type(c)) for c in (torch.optim.Optimizer, torch.utils.data.Dataset)}
_OPTIMIZERS = {
    _id(cls): cls
    for cls in _list(vars(torch.optim).values())
    if isinstance(cls, type) and issubclass(cls, _Optimizer) and cls is not _Optimizer
}
# What `call_answer` returned: kept until the process ends, so that nothing the answer
# made is freed (and no finaliser of its runs) in a thread of the grader's.
_KEPT: list = []


def tampered(what: str, obj: Any, expected: str) -> ObservationError:
    return ObservationError(
        f"{what} is a {class_name(obj)} where {expected} was expected: "
        "the structure the checks read was tampered with",
        "tampered",
    )


def class_name(obj: Any) -> str:
    """The qualified name of the object's class, known by the class's identity; a class the
    answer defined is named by its `__qualname__`, marked as the answer's."""
    return type_name(_obj_type(obj))


def type_name(cls: Any) -> str:
    known = _NAMES.get(_id(cls))
    if known is not None:
        return known
    qualname = _type_qualname(cls)
    return f"{qualname if _obj_type(qualname) is _str else '?'} (defined by your code)"


def type_lineage(obj: Any) -> list[str]:
    """Names of the object's class and every base, most specific first. A class whose
    metaclass is not one of Python's or torch's own is a tampered structure."""
    cls = _obj_type(obj)
    if _id(_obj_type(cls)) not in _METACLASSES:
        raise tampered("the class of a value the checks read", cls, "a plain class")
    mro = _type_mro(cls)
    if _obj_type(mro) is not _tuple:
        return [type_name(cls)]
    return [type_name(c) for c in mro]


class Missing(ObservationError):
    """The variable a check looks at does not exist."""

    reason = "missing"


def lookup(scope: dict[str, Any], name: str) -> Any:
    for key, value in _plain_items(scope, "the answer's global variables"):
        if key == name:
            return value
    raise Missing(f"no variable named `{name}` exists after your code ran")


def _plain_items(d: Any, what: str) -> list[tuple[str, Any]]:
    """The items of an exact dict (or an exact OrderedDict: torch's `Sequential.pop` and
    `del` rebuild its `_modules` as one) whose keys are all exact strings, by C-level
    iteration in the order torch's own code iterates it."""
    if _obj_type(d) is dict:
        items = _list(_dict_items(d))
    elif _obj_type(d) is _OrderedDict:
        items = _list(_od_items(d))
    else:
        raise tampered(what, d, "a plain dict")
    for key, _ in items:
        if _obj_type(key) is not _str:
            raise tampered(f"a key of {what}", key, "a plain str")
    return items


def _field(items: list[tuple[str, Any]], name: str) -> Any:
    for key, value in items:
        if key == name:
            return value
    return None


def _fields_of(module: Any, what: str) -> list[tuple[str, Any]]:
    cls = _obj_type(module)
    if _obj_type(cls) is not type:
        raise tampered(what, module, "a torch.nn.Module")
    if not _is_subclass(_Module, cls):
        raise ObservationError(
            f"`{what}` is a {class_name(module)}, not a torch.nn.Module", "wrong-kind"
        )
    return _plain_items(_module_dict(module), f"the attributes of `{what}`")


def require_module(obj: Any, what: str) -> Any:
    _fields_of(obj, what)
    return obj


def _children(module: Any, what: str) -> list[tuple[str, Any]]:
    children = _field(_fields_of(module, what), "_modules")
    if children is None:
        return []
    out = []
    for name, child in _plain_items(children, f"the submodules of {what}"):
        if child is not None:
            require_module(child, f"{what}.{name}")
            out.append((name, child))
    return out


def submodule(root: Any, path: str, what: str) -> Any:
    """The module at a dotted path ("fc", "classifier.1"), read without `__getattr__`."""
    module = require_module(root, what)
    walked = what
    for part in path.split(".") if path else []:
        found = _field(_children(module, walked), part)
        if found is None:
            raise ObservationError(f"`{walked}` has no submodule named `{part}`", "missing")
        module = found
        walked = f"{walked}.{part}"
    return module


def named_modules(root: Any) -> Iterator[tuple[str, Any]]:
    """Every module under root with its dotted path, each module once (root is ""). A
    module that holds one of its own ancestors is refused: torch's `train()`, `to()` and
    `state_dict()` recurse through it without end, so the model cannot be trained."""
    require_module(root, "the model")
    seen: set[int] = set()
    path: dict[int, str] = {}  # the modules from root to the one being walked
    stack: list[tuple[str, Any, bool]] = [("", root, False)]
    while stack:
        prefix, module, leaving = stack.pop()
        if leaving:
            path.pop(_id(module), None)
            continue
        if _id(module) in path:
            held = f"`{path[_id(module)]}`" if path[_id(module)] else "the model itself"
            raise ObservationError(
                f"`{prefix}` is {held}, which holds it: a model that contains itself cannot "
                "be trained, moved or saved (torch's train(), to() and state_dict() recurse "
                "without end)",
                "unusable",
            )
        if _id(module) in seen:
            continue
        seen.add(_id(module))
        path[_id(module)] = prefix
        yield prefix, module
        stack.append((prefix, module, True))
        for name, child in reversed(_children(module, f"`{prefix}`" if prefix else "the model")):
            stack.append((f"{prefix}.{name}" if prefix else name, child, False))


def _tensors_of(module: Any, field: str, prefix: str, allowed: tuple) -> list[tuple[str, Any]]:
    held = _field(_fields_of(module, prefix or "the model"), field)
    if held is None:
        return []
    out = []
    where = f"`{prefix}`" if prefix else "the model"
    for name, tensor in _plain_items(held, f"the {field.strip('_')} of {where}"):
        if tensor is None:
            continue
        kind = _obj_type(tensor)
        if kind is not allowed[0] and kind is not allowed[-1]:
            raise tampered(f"{name} in {where}", tensor, "a plain torch tensor")
        out.append((f"{prefix}.{name}" if prefix else name, tensor))
        _trainable_memory(out[-1][0], tensor)
    return out


def _trainable_memory(name: str, tensor: Any) -> None:
    """A state tensor training can write: not made under `torch.inference_mode()` (torch
    refuses to update it in place or save it for backward outside that mode), and no two of
    its elements in one place in memory (an `expand`ed weight, which torch refuses to update
    in place). Either is a model that cannot be fine-tuned, refused as `unusable`."""
    with _no_torch_function():
        if _is_inference(tensor):
            raise ObservationError(
                f"`{name}` was made under torch.inference_mode(): torch refuses to update it "
                "or to save it for backward outside that mode, so the model cannot be trained",
                "unusable",
            )
        if _internal_overlap(tensor) == 1:
            raise ObservationError(
                f"elements of `{name}` share their memory (a view such as expand()): torch "
                "refuses to update it in place, so no optimizer step can train it",
                "unusable",
            )


def named_parameters(root: Any) -> list[tuple[str, Any]]:
    """Like `Module.named_parameters()`: shared parameters appear once, under their first name."""
    seen: set[int] = set()
    out: list[tuple[str, Any]] = []
    for prefix, module in named_modules(root):
        for name, param in _tensors_of(module, "_parameters", prefix, (_Parameter,)):
            if _id(param) not in seen:
                seen.add(_id(param))
                out.append((name, param))
    return out


def named_state(root: Any) -> list[tuple[str, Any]]:
    """Parameters and persistent buffers by name, as a state dict would hold them."""
    out = list(named_parameters(root))
    for prefix, module in named_modules(root):
        transient = _field(_fields_of(module, prefix or "the model"), "_non_persistent_buffers_set")
        skip: list[str] = []
        if transient is not None:
            if _obj_type(transient) is not set:
                raise tampered("a module's non-persistent buffer set", transient, "a plain set")
            skip = _list(transient)
            for name in skip:
                if _obj_type(name) is not _str:
                    raise tampered("a non-persistent buffer's name", name, "a str")
        for name, buf in _tensors_of(module, "_buffers", prefix, (_Tensor, _Parameter)):
            if name.rpartition(".")[2] not in skip:
                out.append((name, buf))
    return out


def named_buffers(root: Any) -> list[tuple[str, Any]]:
    """The persistent buffers by name: `named_state` without the parameters."""
    params = {name for name, _ in named_parameters(root)}
    return [(name, t) for name, t in named_state(root) if name not in params]


def _plain_tensor(tensor: Any) -> Any:
    if _obj_type(tensor) is not _Tensor and _obj_type(tensor) is not _Parameter:
        raise tampered("a value the checks read", tensor, "a plain torch tensor")
    return tensor


def requires_grad(tensor: Any) -> bool:
    with _no_torch_function():
        return _requires_grad(_plain_tensor(tensor)) is True


def shape_of(tensor: Any) -> list[int]:
    with _no_torch_function():
        return [_int(n) for n in _shape(_plain_tensor(tensor))]


def dtype_name(tensor: Any) -> str:
    with _no_torch_function():
        dtype = _dtype(_plain_tensor(tensor))
    return _DTYPE_NAMES.get(dtype) or _str(dtype).removeprefix("torch.")


def numel(tensor: Any) -> int:
    with _no_torch_function():
        return _int(_numel(_plain_tensor(tensor)))


def write_count(tensor: Any) -> int:
    """How many times the tensor's memory was written in place (its version counter, which
    every in-place operator bumps and nothing else sets)."""
    with _no_torch_function():
        return _int(_version(_plain_tensor(tensor)))


def same_object(a: Any, b: Any) -> bool:
    return _id(a) == _id(b)


class _Memory:
    """What numpy reads a tensor's memory through: an array interface of our own making."""

    __slots__ = ("__array_interface__",)

    def __init__(self, interface: dict) -> None:
        self.__array_interface__ = interface


def to_numpy(tensor: Any) -> np.ndarray:
    """A host copy of the tensor's values (float tensors as float32, others as they are),
    read from its memory: no operator of torch's runs on a CPU tensor."""
    with _no_torch_function():
        t = _plain_tensor(tensor)
        if _layout(t) is not _strided or _is_sparse(t) or _is_quantized(t) or _is_meta(t):
            raise ObservationError("a tensor the checks read is not a plain dense tensor")
        if _is_conj(t) or _is_neg(t):
            raise ObservationError(
                "a tensor the checks read is a lazily negated or conjugated view"
            )
        dtype = _dtype(t)
        if dtype not in _READABLE:
            raise ObservationError(f"a tensor the checks read has the unsupported dtype {dtype}")
        if _device_type(_device(t)) != "cpu":
            # A CUDA tensor is copied by torch (whose integrity the harness checks).
            t = _to(_detach(t), "cpu")
        typestr, convert = _READABLE[dtype]
        shape = _tuple(_int(n) for n in _shape(t))
        size = _ITEMSIZE[typestr]
        strides = _tuple(_int(s) * size for s in _stride(t))
        count = _int(_numel(t))
        if count == 0:
            values = _np_empty(shape, dtype=typestr)
        else:
            interface = {
                "version": 3,
                "shape": shape,
                "typestr": typestr,
                "data": (_int(_data_ptr(t)), True),
                "strides": strides,
            }
            values = _np_array(_Memory(interface), copy=True, order="C")
    if convert == "bfloat16":
        return (values.astype(_uint32) << 16).view(_float32)
    if convert is not None:
        return values.astype(convert)
    return values


snapshot = to_numpy  # a copy that owns its memory, whatever the tensor does later


def scalar(tensor: Any) -> float:
    """The value of a one-element tensor, read from its memory."""
    values = to_numpy(tensor)
    if values.size != 1:
        raise ObservationError(f"expected a single value, found a tensor of shape {values.shape}")
    return _float(values.reshape(-1)[0])


def digest(values: np.ndarray) -> str:
    return _sha256(values.data if values.flags.c_contiguous else values.tobytes()).hexdigest()


def summary(values: np.ndarray) -> list[float]:
    """Sum, absolute sum and sum of squares in float64: compared with a tolerance. Only
    numpy's C functions (ufuncs) run: its Python-level wrappers are the answer's to patch."""
    v = values.reshape(-1)
    return [
        _float(_np_reduce(v, dtype=_float64)),
        _float(_np_reduce(_np_abs(v), dtype=_float64)),
        _float(_np_reduce(_np_multiply(v, v, dtype=_float64))),
    ]


_GOLDEN = np.uint32(0x9E3779B1)  # Fibonacci hashing: positions to scattered weights


def _position_weights(n: int) -> np.ndarray:
    """A weight in [-0.5, 0.5) for each of n positions, the same on every run (float32)."""
    scattered = _np_multiply(_np_arange(n, dtype=_uint32), _GOLDEN)  # wraps modulo 2**32
    return _np_multiply(scattered.view(_int32), 2.0**-32, dtype=_float32)


def fingerprint(values: np.ndarray) -> list[float]:
    """`summary` and a sum weighted by position: elements moved to other places (a tensor
    shuffled, which keeps every sum) change it."""
    v = values.reshape(-1)
    weighted = _np_reduce(_np_multiply(v, _position_weights(v.size), dtype=_float64))
    return [*summary(values), _float(weighted)]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two host copies (`to_numpy`) hold the same values bit for bit (NaN included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.size == 0:
        return True
    bits = _np_uint8
    return not _np_any(_np_not_equal(a.reshape(-1).view(bits), b.reshape(-1).view(bits)))


def any_nonzero(values: np.ndarray) -> bool:
    """Whether a host copy (`to_numpy`) holds any element other than zero (NaN counts)."""
    return values.size > 0 and _bool(_np_any(_np_not_equal(values.reshape(-1), 0)))


def squared_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The sum of squared differences of two host copies of one shape, in float64."""
    d = _np_subtract(a.reshape(-1), b.reshape(-1), dtype=_float64)
    return _float(_np_reduce(_np_multiply(d, d)))


def param_ids(root: Any) -> dict[int, str]:
    return {_id(p): name for name, p in named_parameters(root)}


def set_training(root: Any, mode: bool) -> dict[int, bool]:
    """Set every module's `training` flag directly; returns the previous flags to restore."""
    before: dict[int, bool] = {}
    for prefix, module in named_modules(root):
        flag = _field(_fields_of(module, prefix or "the model"), "training")
        if _obj_type(flag) is not _bool:
            raise tampered(f"the training flag of `{prefix or 'the model'}`", flag, "a plain bool")
        before[_id(module)] = flag
        _module_dict(module)["training"] = mode
    return before


def restore_training(root: Any, before: dict[int, bool]) -> None:
    for _, module in named_modules(root):
        if _id(module) in before:
            _module_dict(module)["training"] = before[_id(module)]


def seeded_input(shape: list[int], seed: int) -> Any:
    gen = _Generator()
    _generator_seed(gen, seed)
    return _torch_randn(*shape, generator=gen)


class Group:
    """One param group of an optimizer, as plain data: the tensors it holds and its
    hyper-parameters (floats, bools, None, tuples of floats), and those given as tensors."""

    def __init__(self, params: list, hyper: dict, tensors: list | None = None) -> None:
        self.params = params
        self.hyper = hyper
        self.tensors = tensors or []  # (name, tensor): a 0-d learning rate, ...


def optimizer_of(optimizer: Any, what: str) -> tuple[str, list[Group]]:
    """The optimizer's class (one of torch.optim's, by identity) and its param groups."""
    cls = _OPTIMIZERS.get(_id(_obj_type(optimizer)))
    if cls is None or cls is not _obj_type(optimizer):
        raise ObservationError(
            f"`{what}` should be a torch.optim.Optimizer of torch's own (such as "
            f"torch.optim.SGD), found {class_name(optimizer)}"
        )
    groups = _field(
        _plain_items(_optimizer_dict(optimizer), f"the attributes of `{what}`"), "param_groups"
    )
    if _obj_type(groups) is not _list:
        raise tampered(f"`{what}.param_groups`", groups, "a plain list")
    out = []
    for group in _list(groups):
        items = _plain_items(group, f"a param group of `{what}`")
        params = _field(items, "params")
        if _obj_type(params) is not _list:
            raise tampered(f"a param group's params in `{what}`", params, "a plain list")
        held = _list(params)
        for p in held:
            _plain_tensor(p)
        hyper, tensors = {}, []
        for key, value in items:
            if key != "params":
                hyper[key] = _hyper_value(value)
                if _obj_type(value) is _Tensor:
                    tensors.append((key, value))
        out.append(Group(held, hyper, tensors))
    return type_name(cls), out


_UNREADABLE = object()


def _hyper_value(value: Any) -> Any:
    kind = _obj_type(value)
    if value is None or kind is _bool:
        return value
    if kind is _int or kind is _float:
        return _float(value)
    if kind is _tuple or kind is _list:
        items = _list(value)
        if _len(items) <= 8 and all(_obj_type(v) is _int or _obj_type(v) is _float for v in items):
            return [_float(v) for v in items]
        return _UNREADABLE
    if kind is _Tensor:  # a 0-d tensor learning rate
        values = to_numpy(value)
        return _float(values.reshape(-1)[0]) if values.size == 1 else _UNREADABLE
    return _UNREADABLE


def readable(value: Any) -> bool:
    return value is not _UNREADABLE


# The trampoline a call into the answer's code starts from: compiled into a namespace of
# its own, so the frames the answer's code can walk up to lead to C functions and to the
# box its result goes in, nowhere else.
_TRAMPOLINE = """
def run(fn, args, grad, box, release, base_exception, exact_type, exact_str, to_str, gc_off, set_grad):
    try:
        set_grad(grad)
        box.append((True, fn(*args)))
    except base_exception as exc:
        try:
            message = to_str(exc)
        except base_exception:
            message = "?"
        box.append((False, exc, message if exact_type(message) is exact_str else "?"))
    finally:
        gc_off()
        release()
"""
_trampoline_space: dict = {"__builtins__": {}}
exec(compile(_TRAMPOLINE, "<call>", "exec"), _trampoline_space)
_trampoline = _trampoline_space.pop("run")
del _trampoline_space


class AnswerRaised(Exception):
    """The answer's code raised: `kind` is its exception's class name, `text` its message."""

    def __init__(self, kind: str, text: str, assertion: bool = False) -> None:
        super().__init__(f"{kind}: {text}" if text else kind)
        self.kind, self.text, self.assertion = kind, text, assertion


def call_answer(fn: Any, *args: Any, grad: bool = False) -> Any:
    """fn(*args) in a thread of its own, for code of the answer's (a module's forward).
    Returns its result or raises `AnswerRaised`; raises `ObservationError` when it left a
    thread running. The result, and everything it holds, is kept until the process ends."""
    lock = _new_lock()
    lock.acquire()
    box: list = []
    _KEPT.append(box)
    before = _thread_count()
    os_before = os_thread_count(*OS_PRIMITIVES)
    _start_thread(
        _trampoline,
        (
            fn,
            args,
            grad is True,
            box,
            lock.release,
            BaseException,
            _obj_type,
            _str,
            _str,
            _gc_disable,
            _set_grad_enabled,
        ),
    )
    lock.acquire()
    _gc_disable()
    if not _settled(before) or not _os_settled(os_before):
        raise ObservationError("your code started a thread while it was being graded", "tampered")
    if _len(box) != 1 or _obj_type(box[0]) is not _tuple:
        raise ObservationError("your code's call did not return")
    entry = box[0]
    if _len(entry) == 2 and entry[0] is True:
        return entry[1]
    if _len(entry) == 3 and entry[0] is False:
        text = entry[2] if _obj_type(entry[2]) is _str else "?"
        kind = _type_qualname(_obj_type(entry[1]))
        raise AnswerRaised(
            kind if _obj_type(kind) is _str else "?", text, _obj_type(entry[1]) is AssertionError
        )
    raise ObservationError("your code's call did not return")


def os_thread_count(open_, read, close, to_int) -> int:
    """The process's threads as the kernel counts them (a Python thread whose state is
    being cleared is gone from `_thread._count()` but not from here): -1 if unreadable.
    It looks up no global or builtin, for the harness's main thread."""
    try:
        fd = open_("/proc/self/status", 0)
    except OSError:
        return -1
    try:
        data = read(fd, 8192)
    finally:
        close(fd)
    start = data.find(b"\nThreads:")
    end = data.find(b"\n", start + 1)
    return to_int(data[start + 9 : end]) if start >= 0 and end > start else -1


OS_PRIMITIVES = (_os.open, _os.read, _os.close, _int)


def _settled(before: int) -> bool:
    """Whether the thread count is back to `before`, within a bounded wait: the thread a
    call ran in ends just after it hands back its result."""
    for _ in range(2000):
        if _thread_count() <= before:
            return True
        _sleep(0.0005)
    return False


def _os_settled(before: int) -> bool:
    for _ in range(4000):
        if os_thread_count(*OS_PRIMITIVES) <= before:
            return True
        _sleep(0.0005)
    return False


_FORWARD_HOOK_FIELDS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs")
_HOOK_FIELDS = (
    *_FORWARD_HOOK_FIELDS, "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
    "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)  # fmt: skip
# Every global hook table of torch's modules: forward and backward hooks, and those that
# run when a module, parameter or buffer is registered on any module.
_global_hooks = {
    name: value
    for name, value in vars(torch.nn.modules.module).items()
    if name.startswith("_global_") and type(value) is _OrderedDict
}


def no_hooks(root: Any, effect: str, fields: tuple[str, ...] = _HOOK_FIELDS) -> None:
    """No hook on `root` or any module inside it, nor a global module hook, nor (where the
    backward hooks are among `fields`) a hook on a parameter's gradient: a hook is code that
    runs whenever the model is used or trained (`effect`: what it could do), which no reading
    of the model's state can see. Refused as `tampered`."""
    for name, hooks in _global_hooks.items():
        if (not name.startswith("_global_backward") or "_backward_hooks" in fields) and _len(hooks):
            raise ObservationError(f"a global module hook is registered: {effect}", "tampered")
    for prefix, module in named_modules(root):
        where = f"`{prefix}`" if prefix else "the model"
        module_fields = _fields_of(module, where)
        if _among(_LazyModule, _type_mro(_obj_type(module))):
            raise ObservationError(
                f"{where} is a lazy layer ({type_name(_obj_type(module))}): its parameters have "
                "no shape until its first forward, so nothing can read or train them yet; give "
                "it its input size (`nn.Linear(in_features, out_features)`)",
                "unusable",
            )
        for name in fields:
            hooks = _field(module_fields, name)
            if hooks is not None and (_obj_type(hooks) is not _OrderedDict or _len(hooks)):
                raise ObservationError(f"a hook is registered on {where}: {effect}", "tampered")
        if _field(module_fields, "_compiled_call_impl") is not None:
            raise ObservationError(
                f"the call of {where} was replaced on the instance (`_compiled_call_impl`): "
                f"{effect}",
                "tampered",
            )
        registered = _registered_names(module_fields)
        for name, value in module_fields:
            if _obj_type(name) is _str and name in registered:
                raise ObservationError(
                    f"`{name}` of {where} is set on the instance beside its registered "
                    f"{registered[name]} of that name: the forward uses the instance's value "
                    f"where the checks read the registered one; {effect}",
                    "tampered",
                )
            if _among(_Module, _type_mro(_obj_type(value))):
                raise ObservationError(
                    f"`{name}` of {where} is a layer set outside its registered modules: "
                    f"the forward uses it where the checks read another one; {effect}",
                    "tampered",
                )
            if _among(_TensorBase, _type_mro(_obj_type(value))):
                raise ObservationError(
                    f"`{name}` of {where} is a tensor set outside its registered parameters "
                    f"and buffers: the forward can use it where the checks read the "
                    f"registered ones; {effect}",
                    "tampered",
                )
        if "_backward_hooks" in fields:
            for name, param in _tensors_of(module, "_parameters", prefix, (_Parameter,)):
                _no_tensor_hooks(name, param, effect)
            for name, tensor in _tensors_of(module, "_buffers", prefix, (_Tensor, _Parameter)):
                _no_tensor_attributes(name, tensor, effect)
            _no_shadowed_methods(module, module_fields, where, effect)
    if "_backward_hooks" in fields:
        _no_shared_storage(root, effect)


_REGISTRIES = (("_parameters", "parameter"), ("_buffers", "buffer"), ("_modules", "layer"))


def _registered_names(fields: list[tuple[str, Any]]) -> dict[str, str]:
    """The names a module registers (parameters, buffers, layers): what each one is. The
    registries themselves are read by exact type where their contents are read."""
    names: dict[str, str] = {}
    for registry, what in _REGISTRIES:
        held = _field(fields, registry)
        if _obj_type(held) is _dict or _obj_type(held) is _OrderedDict:
            for key, _ in _plain_items(held, registry):
                names[key] = what
    return names


def replace_item(d: Any, key: str, value: Any) -> None:
    """d[key] = value for an exact dict or OrderedDict (as `_plain_items` read it)."""
    if _obj_type(d) is _OrderedDict:
        _od_setitem(d, key, value)
    elif _obj_type(d) is dict:
        _dict_setitem(d, key, value)
    else:
        raise tampered("a dict of submodules", d, "a plain dict")


def storage_key(tensor: Any) -> int:
    """Where the tensor's storage starts (0 for one without memory): two tensors with the
    same key share memory, whatever views they are."""
    with _no_torch_function():
        return _storage_ptr(_untyped_storage(_plain_tensor(tensor)))


def is_view(tensor: Any) -> bool:
    with _no_torch_function():
        return _base_of(_plain_tensor(tensor)) is not None


def _no_shared_storage(root: Any, effect: str) -> None:
    """No trainable parameter sharing memory with another tensor of the model: training it
    would rewrite a frozen weight (or a buffer) that the checks read as untouched."""
    owners: dict[int, str] = {}
    trainable: list[tuple[str, int]] = []
    params = {name for name, _ in named_parameters(root)}
    for name, tensor in named_state(root):
        key = storage_key(tensor)
        if key == 0:
            continue
        if name in params and requires_grad(tensor):
            trainable.append((name, key))
        owners.setdefault(key, name)
        if owners[key] != name:
            other = owners[key]
            shared = next((n for n, k in trainable if k == key), None)
            if shared is not None:
                partner = other if shared == name else name
                raise ObservationError(
                    f"`{shared}` shares its memory with `{partner}`: training it rewrites "
                    f"`{partner}` too; {effect}",
                    "tampered",
                )


_PLAIN_VALUES = (bool, int, float, str, bytes, type(None))


def _among(cls: Any, classes: tuple) -> bool:
    """Whether `cls` is one of `classes`, by identity: `in` would compare with `==`, which
    runs the metaclass's `__eq__` of an answer's class."""
    return any(cls is c for c in classes)


def _no_tensor_attributes(name: str, tensor: Any, effect: str) -> None:
    """No code set on a tensor's instance: an attribute that is not a plain value shadows
    torch's method of that name (`to`, `add_`), which torch's own code calls when the model
    is moved or trained. (A plain value, `p.train = False`, is a mistake the checks tell.)"""
    held = _tensor_attributes(tensor)
    if _obj_type(held) is not _dict:
        raise tampered(f"the attributes of `{name}`", held, "a plain dict")
    code = [
        k
        for k, v in _list(_dict_items(held))
        if _obj_type(k) is not _str or not _among(_obj_type(v), _PLAIN_VALUES)
    ]
    if code:
        shown = ", ".join(f"`{k[:40]}`" for k in code[:3] if _obj_type(k) is _str) or "attributes"
        raise ObservationError(
            f"`{name}` has attributes of its own ({shown}), which shadow torch's methods of "
            f"those names: {effect}",
            "tampered",
        )


def _no_shadowed_methods(
    module: Any, fields: list[tuple[str, Any]], where: str, effect: str
) -> None:
    """No method of the module's classes (`train`, `requires_grad_`, `parameters`, ...)
    shadowed by an attribute of the instance: code that runs when the model is used."""
    methods = set()
    for cls in _type_mro(_obj_type(module)):
        for name, value in _list(_proxy_items(_class_dict(cls))):
            if _obj_type(value) is _FunctionType and _obj_type(name) is _str:
                methods.add(name)
    for name, _ in fields:
        if name in methods:
            raise ObservationError(
                f"`{name}` of {where} was replaced on the instance: {effect}", "tampered"
            )


_subclasses = type.__dict__["__subclasses__"]
# What a class may hold and still run no code of its own when its instances are used.
_INERT = frozenset({"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
                    "__annotations__", "__firstlineno__", "__static_attributes__"})  # fmt: skip


def module_classes() -> frozenset[int]:
    """The identities of every class that exists now: called before the answer runs, it
    tells the classes of torch, torchvision and the task's setup from those the answer
    defines (a few milliseconds: some ten thousand classes)."""
    found: set[int] = set()
    stack: list = [object]
    while stack:
        cls = stack.pop()
        if _id(cls) in found:
            continue
        found.add(_id(cls))
        stack.extend(_list(_subclasses(cls)))
    return frozenset(found)


def no_answer_classes(root: Any, before: frozenset[int], effect: str) -> None:
    """No module inside `root` of a class the answer defined (one not in `before`) that holds
    code of its own: its methods run whenever the model is used (`effect`), which no reading
    of the model's state can see. A class that only renames one of torch's is allowed.
    Refused as `tampered`."""
    for prefix, module in named_modules(root):
        for cls in _type_mro(_obj_type(module)):
            if _id(cls) in before:
                continue
            names = [k for k, _ in _list(_proxy_items(_class_dict(cls)))]
            if any(_obj_type(k) is not _str or k not in _INERT for k in names):
                where = f"`{prefix}`" if prefix else "the model"
                raise ObservationError(
                    f"{where} is a {type_name(cls)}, a class with code of its own: {effect}; "
                    "use torch's layers as they are",
                    "tampered",
                )


def _no_tensor_hooks(name: str, param: Any, effect: str) -> None:
    """No hook on a parameter's gradient (`register_hook`, `register_post_accumulate_grad_hook`):
    read through TensorBase's C-level getters, each an exact OrderedDict and empty, or None;
    nor an attribute on its instance."""
    _no_tensor_attributes(name, param, effect)
    with _no_torch_function():
        held = (_tensor_backward_hooks(param), _tensor_post_accumulate_hooks(param))
    for hooks in held:
        if hooks is not None and (_obj_type(hooks) is not _OrderedDict or _len(hooks)):
            raise ObservationError(
                f"a hook is registered on the gradient of `{name}`: {effect}", "tampered"
            )


def _plain_forward(root: Any) -> None:
    """A forward the model's classes define, without hooks: a `forward` set on an instance
    or a hook (the module's or a global one) would change what the model computes."""
    no_hooks(root, "it changes its forward", _FORWARD_HOOK_FIELDS)
    for prefix, module in named_modules(root):
        where = f"`{prefix}`" if prefix else "the model"
        if _field(_fields_of(module, where), "forward") is not None:
            raise ObservationError(
                f"the forward of {where} was replaced on the instance", "tampered"
            )


def forward(module: Any, inputs: Any) -> Any:
    """The module's output on inputs, in eval mode without gradients, by the answer's own
    `forward`; the training flags are restored afterwards. The output must be a plain tensor."""
    _plain_forward(module)
    flags = set_training(module, False)
    try:
        out = call_answer(_module_call, module, inputs)
    finally:
        restore_training(module, flags)
    if _obj_type(out) is not _Tensor:
        raise ObservationError(f"the model's forward returned a {class_name(out)}, not a tensor")
    return out


def cross_entropy(logits: Any, labels: Any) -> float:
    """Mean cross-entropy by torch's C function (no Python wrapper the answer could patch)."""
    with _no_torch_function():
        return scalar(
            _cross_entropy_loss(_plain_tensor(logits), _plain_tensor(labels), None, 1, -100, 0.0)
        )


def with_first_sample(inputs: Any, seed: int) -> Any:
    """A seeded batch of the shape of `inputs` whose first sample is that of `inputs`."""
    with _no_torch_function():
        t = _plain_tensor(inputs)
        batch = _to(seeded_input([_int(n) for n in _shape(t)], seed), _device(t))
        _copy_(_narrow(batch, 0, 0, 1), _narrow(t, 0, 0, 1))
        return batch


def class_labels(rows: int, classes: int, like: Any) -> Any:
    """Labels 0, 1, ... (modulo classes) for rows samples, on the device of `like`."""
    with _no_torch_function():
        labels = _from_numpy(_np_arange(rows, dtype=_int64) % classes)
        return _to(labels, _device(_plain_tensor(like)))


def descend(param: Any, grad: Any, lr: float) -> None:
    """One plain SGD step in place: param -= lr * grad, by torch's C functions."""
    with _no_torch_function():
        _add_(_detach(_plain_tensor(param)), _plain_tensor(grad), alpha=-lr)


def overwrite(tensor: Any, value: Any) -> None:
    """Put a value copied earlier (`copy_of`) back into the tensor, in place."""
    with _no_torch_function():
        _copy_(_detach(_plain_tensor(tensor)), value)


def copy_of(tensor: Any) -> Any:
    """A detached copy, for values taken before the answer runs (the setup's, trusted)."""
    with _no_torch_function():
        return _clone(_detach(tensor))


def concat(tensors: list) -> Any:
    return _cat(tensors)


def shape(tensor: Any) -> tuple[int, ...]:
    return _tuple(shape_of(tensor))


grad_of = _grad
