"""Tamper-resistant readers of torch objects, for observers running in the sandbox.

Every accessor is captured when this module is imported, which the harness does before
any student code runs. A student who later patches `torch.Tensor.requires_grad`,
`nn.Module.parameters`, `Tensor.detach` or builtins changes what their own code sees,
not what the observers read: the C-level descriptors and functions captured here are
the originals, and modules are walked through their instance dictionaries directly.
"""

from __future__ import annotations

import builtins
import hashlib

# A private copy of the builtins: a student who rebinds `builtins.isinstance` or
# `builtins.sorted` does not reach the functions defined below.
__builtins__ = dict(builtins.__dict__)
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graders.checks.base import ObservationError

_TensorBase = torch._C.TensorBase
_requires_grad = _TensorBase.requires_grad.__get__
_grad = _TensorBase.grad.__get__
_shape = _TensorBase.shape.__get__
_dtype = _TensorBase.dtype.__get__
_detach = _TensorBase.detach
_cpu = _TensorBase.cpu
_contiguous = _TensorBase.contiguous
_to = _TensorBase.to
_numpy = _TensorBase.numpy
_numel = _TensorBase.numel
_is_floating_point = _TensorBase.is_floating_point
_any = _TensorBase.any
_item = _TensorBase.item
_clone = _TensorBase.clone
_obj_getattr = object.__getattribute__
_obj_type = builtins.type
_dict_items = dict.items
_dict_get = dict.get
_isinstance = builtins.isinstance
_id = builtins.id
_sorted = builtins.sorted
_no_grad = torch.no_grad
_Module = torch.nn.Module
_module_call = torch.nn.Module.__call__
_Tensor = torch.Tensor
_Optimizer = torch.optim.Optimizer
_cross_entropy = F.cross_entropy
_cat = torch.cat
_shape = _TensorBase.shape.__get__
_torch_randn = torch.randn
_Generator = torch.Generator
_sha256 = hashlib.sha256
_float64 = np.float64
_np_reduce = np.add.reduce
_np_abs = np.abs
_np_einsum = np.einsum
_np_ascontiguousarray = np.ascontiguousarray
_np_array = np.array


def lookup(scope: dict[str, Any], name: str) -> Any:
    if name not in scope:
        raise ObservationError(f"no variable named `{name}` exists after your code ran")
    return _dict_get(scope, name)


def qualified_type_name(obj: Any) -> str:
    cls = _obj_type(obj)
    return f"{_obj_getattr(cls, '__module__')}.{_obj_getattr(cls, '__qualname__')}"


def type_lineage(obj: Any) -> list[str]:
    """Qualified names of the object's class and every base, most specific first."""
    return [
        f"{_obj_getattr(c, '__module__')}.{_obj_getattr(c, '__qualname__')}"
        for c in _obj_getattr(_obj_type(obj), "__mro__")
    ]


def require_module(obj: Any, what: str) -> Any:
    if not _isinstance(obj, _Module):
        raise ObservationError(
            f"`{what}` should be a torch.nn.Module, found {qualified_type_name(obj)}"
        )
    return obj


def _instance_dict(module: Any) -> dict[str, Any]:
    return _obj_getattr(module, "__dict__")


def submodule(root: Any, path: str, what: str) -> Any:
    """The module at a dotted path ("fc", "classifier.1"), read without `__getattr__`."""
    module = require_module(root, what)
    walked = what
    for part in path.split(".") if path else []:
        children = _dict_get(_instance_dict(module), "_modules") or {}
        if part not in children or _dict_get(children, part) is None:
            raise ObservationError(f"`{walked}` has no submodule named `{part}`")
        module = _dict_get(children, part)
        walked = f"{walked}.{part}"
    return module


def named_modules(root: Any) -> Iterator[tuple[str, Any]]:
    """Every module under root with its dotted path, each module once (root is "")."""
    seen: set[int] = set()
    stack = [("", root)]
    while stack:
        prefix, module = stack.pop()
        if _id(module) in seen:
            continue
        seen.add(_id(module))
        yield prefix, module
        children = _dict_get(_instance_dict(module), "_modules") or {}
        for name, child in reversed(list(_dict_items(children))):
            if child is not None:
                stack.append((f"{prefix}.{name}" if prefix else name, child))


def named_parameters(root: Any) -> list[tuple[str, Any]]:
    """Like `Module.named_parameters()`: shared parameters appear once, under their first name."""
    seen: set[int] = set()
    out: list[tuple[str, Any]] = []
    for prefix, module in named_modules(root):
        params = _dict_get(_instance_dict(module), "_parameters") or {}
        for name, param in _dict_items(params):
            if param is None or _id(param) in seen:
                continue
            seen.add(_id(param))
            out.append((f"{prefix}.{name}" if prefix else name, param))
    return out


def named_state(root: Any) -> list[tuple[str, Any]]:
    """Parameters and persistent buffers by name, as a state dict would hold them."""
    out = list(named_parameters(root))
    for prefix, module in named_modules(root):
        d = _instance_dict(module)
        buffers = _dict_get(d, "_buffers") or {}
        transient = _dict_get(d, "_non_persistent_buffers_set") or set()
        for name, buf in _dict_items(buffers):
            if buf is not None and name not in transient:
                out.append((f"{prefix}.{name}" if prefix else name, buf))
    return out


def requires_grad(tensor: Any) -> bool:
    return bool(_requires_grad(tensor))


def grad_of(tensor: Any) -> Any:
    return _grad(tensor)


def shape_of(tensor: Any) -> list[int]:
    return [int(n) for n in _shape(tensor)]


def dtype_name(tensor: Any) -> str:
    return str(_dtype(tensor)).removeprefix("torch.")


def numel(tensor: Any) -> int:
    return int(_numel(tensor))


def is_all_zero(tensor: Any) -> bool:
    with _no_grad():
        return not bool(_item(_any(tensor)))


def to_numpy(tensor: Any) -> np.ndarray:
    """A host copy of the tensor's values (float tensors as float32, others as they are)."""
    with _no_grad():
        t = _contiguous(_cpu(_detach(tensor)))
        if _is_floating_point(t):
            t = _to(t, torch.float32)
        return _np_ascontiguousarray(_numpy(t))


def snapshot(tensor: Any) -> np.ndarray:
    """A copy of the tensor's values that owns its memory: `to_numpy` of a CPU float32
    tensor shares the tensor's storage, so what runs later could still change it."""
    return _np_array(to_numpy(tensor), copy=True)


def digest(values: np.ndarray) -> str:
    return _sha256(values.data if values.flags.c_contiguous else values.tobytes()).hexdigest()


def summary(values: np.ndarray) -> list[float]:
    """Sum, absolute sum and sum of squares in float64: compared with a tolerance."""
    v = values.reshape(-1)  # accumulated in float64 without a float64 copy of the tensor
    return [
        float(_np_reduce(v, dtype=_float64)),
        float(_np_reduce(_np_abs(v), dtype=_float64)),
        float(_np_einsum("i,i->", v, v, dtype=_float64)),
    ]


def param_ids(root: Any) -> dict[int, str]:
    return {_id(p): name for name, p in named_parameters(root)}


def set_training(root: Any, mode: bool) -> dict[int, bool]:
    """Set every module's `training` flag directly; returns the previous flags to restore."""
    before: dict[int, bool] = {}
    for _, module in named_modules(root):
        d = _instance_dict(module)
        before[_id(module)] = bool(_dict_get(d, "training", True))
        d["training"] = mode
    return before


def restore_training(root: Any, before: dict[int, bool]) -> None:
    for _, module in named_modules(root):
        if _id(module) in before:
            _instance_dict(module)["training"] = before[_id(module)]


def seeded_input(shape: list[int], seed: int) -> Any:
    gen = _Generator().manual_seed(seed)
    return _torch_randn(*shape, generator=gen)


def optimizer_groups(optimizer: Any) -> list[dict[str, Any]]:
    if not _isinstance(optimizer, _Optimizer):
        raise ObservationError(
            f"`optimizer` should be a torch.optim.Optimizer, found {qualified_type_name(optimizer)}"
        )
    groups = _dict_get(_instance_dict(optimizer), "param_groups")
    if not _isinstance(groups, list):
        raise ObservationError("the optimizer's param_groups is not a list")
    return groups


no_grad = _no_grad
call_module = _module_call
cross_entropy = _cross_entropy
concat = _cat
shape = lambda tensor: tuple(_shape(tensor))  # noqa: E731
clone = _clone
detach = _detach
is_tensor = lambda obj: _isinstance(obj, _Tensor)  # noqa: E731
is_module = lambda obj: _isinstance(obj, _Module)  # noqa: E731
