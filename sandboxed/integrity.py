"""Whether the answer changed torch itself, for every thread of the sandbox's process.

An answer can change what torch computes without handing the observers any object: a
Python kernel registered for an `aten` operator, a patched `torch.Tensor`, `nn.Module`
or optimizer method, a rebound function of `torch`, `torch.nn.functional` or `torch._C`,
a changed default dtype. (Function and dispatch modes are per thread: the observers' own
threads start without any.) The harness takes a `snapshot()` after the setup and before
the answer, and compares one taken after it; any difference fails the checks.

Reads only: every dictionary walked is an exact dict whose keys are checked to be exact
strings before anything is compared, and values are compared by identity.
"""

from __future__ import annotations

import builtins
import sys

__builtins__ = dict(builtins.__dict__)  # a rebound builtin of the answer's does not reach us

from typing import Any  # noqa: E402

import torch  # noqa: E402

# Operators the grader's own torch computations go through (a CUDA tensor's copy to the
# host, the loss on a batch, the seeded inputs, the modes' bookkeeping).
WATCHED_OPS = (
    "aten::_to_copy",
    "aten::copy_",
    "aten::detach",
    "aten::alias",
    "aten::clone",
    "aten::cat",
    "aten::randn",
    "aten::normal_",
    "aten::empty.memory_format",
    "aten::empty_strided",
    "aten::cross_entropy_loss",
    "aten::log_softmax.int",
    "aten::_log_softmax",
    "aten::nll_loss_nd",
    "aten::nll_loss",
    "aten::nll_loss_forward",
    "aten::mean",
    "aten::_local_scalar_dense",
    "aten::item",
    # one step of torch.optim's optimizers, probed by the `optimizer` check (plain CPU
    # implementations: SGD, the Adam family, RMSprop, Adagrad, Adadelta, ASGD, Rprop, ...)
    "aten::add.Tensor",
    "aten::add_.Tensor",
    "aten::neg",
    "aten::mul.Tensor",
    "aten::mul_.Tensor",
    "aten::div.Tensor",
    "aten::div_.Tensor",
    "aten::addcdiv_",
    "aten::addcmul",
    "aten::addcmul_",
    "aten::lerp_.Scalar",
    "aten::sqrt",
    "aten::sqrt_",
    "aten::rsqrt_",
    "aten::pow_.Scalar",
    "aten::abs",
    "aten::sign",
    "aten::clamp_",
    "aten::maximum.out",
    "aten::eq.Scalar",
    "aten::gt.Scalar",
    "aten::lt.Scalar",
    "aten::index_put_",
    "aten::mm",
    "aten::mean.dim",
    "aten::linalg_vector_norm",
    "aten::zeros",
    "aten::zeros_like",
    "aten::ones",
    "aten::full_like",
    "aten::new_zeros",
    "aten::lift_fresh",
)

_dump_table = torch._C._dispatch_dump_table
_function_modes = torch._C._len_torch_function_stack
_dispatch_modes = torch._C._len_torch_dispatch_stack
_default_dtype = torch.get_default_dtype
_class_dict = type.__dict__["__dict__"].__get__
_module_dict = type(torch).__dict__["__dict__"].__get__
_type = builtins.type
_str = builtins.str
_dict = builtins.dict
_id = builtins.id


def _warm_up_optimizers() -> None:
    """An optimizer's first instance wraps its class's `step` (torch's profiling hook): done
    here for every class, so that the snapshot holds the wrapped methods."""
    import torch.optim

    for cls in vars(torch.optim).values():
        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
            try:
                cls([torch.zeros(1, requires_grad=True)], lr=0.1)
            except Exception:  # noqa: S112  (an optimizer that needs more than this)
                continue


def _namespaces() -> list[tuple[str, Any]]:
    import torch.nn.functional
    import torch.optim
    import torch.utils.data

    _warm_up_optimizers()

    spaces: list[tuple[str, Any]] = [
        ("torch", _module_dict(torch)),
        ("torch._C", _module_dict(torch._C)),
        ("torch._C._nn", _module_dict(torch._C._nn)),
        ("torch.nn.functional", _module_dict(torch.nn.functional)),
        ("torch.autograd", _module_dict(torch.autograd)),
        ("torch.optim", _module_dict(torch.optim)),
        ("torch.nn.modules.module", _module_dict(torch.nn.modules.module)),
    ]
    classes = [torch.Tensor, torch.nn.Parameter, torch.nn.Module, torch.optim.Optimizer]
    classes += [torch.utils.data.DataLoader]
    classes += [
        c
        for c in vars(torch.optim).values()
        if isinstance(c, type) and issubclass(c, torch.optim.Optimizer)
    ]
    for cls in classes:
        spaces.append((f"{cls.__module__}.{cls.__qualname__}", _class_dict(cls)))
        spaces.append((cls.__module__, _module_dict(sys.modules[cls.__module__])))
    return list(dict(spaces).items())


_NAMESPACES = _namespaces()

# Packages whose classes make the models the checks read and the answer trains: a method
# of theirs replaced (`ResNet._forward_impl`, `BasicBlock.forward`, `Linear.reset_parameters`),
# added to a class so that it shadows an inherited one, or a function's code swapped, runs
# whenever the model is used, and no reading of the model's state can see it.
MODEL_PACKAGES = ("torch.nn.modules", "torch.nn.parameter", "torchvision.models", "torchvision.ops")
# Names Python adds to a class as it runs (a warning's registry, annotations read the first
# time, the ABC cache): not changes of code.
_LAZY = frozenset({"__warningregistry__", "__annotations__", "_abc_impl", "__abstractmethods__"})
_FUNCTION_TYPE = type(_namespaces)


def _model_namespaces() -> list[tuple[str, Any]]:
    """The modules of MODEL_PACKAGES imported now (torchvision's models imported first, when
    it is installed) and every class each defines."""
    try:
        import torchvision.models  # noqa: F401
        import torchvision.ops  # noqa: F401
    except ImportError:  # a sandbox image without torchvision: torch's own modules still count
        pass
    spaces: list[tuple[str, Any]] = []
    for name, module in list(sys.modules.items()):
        if _type(module) is not _type(sys) or not name.startswith(MODEL_PACKAGES):
            continue
        space = _module_dict(module)
        spaces.append((name, space))
        for value in list(space.values()):
            if isinstance(value, type) and value.__module__ == name:
                spaces.append((f"{name}.{value.__qualname__}", _class_dict(value)))
    return spaces


def _identities(space: Any) -> dict[str, int] | None:
    items = list(space.items()) if _type(space) is not _dict else list(_dict.items(space))
    out: dict[str, int] = {}
    for key, value in items:
        if _type(key) is not _str:
            return None
        out[key] = _id(value)
    return out


def _functions(spaces: list[tuple[str, Any]]) -> list[tuple[str, Any, int, int, int]]:
    """Every Python function the namespaces hold (a property's parts, a static or class
    method's function included), with the identities of its code and defaults."""
    found = []
    for label, space in spaces:
        for name, value in list(space.items()):
            if _type(value) is staticmethod or _type(value) is classmethod:
                value = value.__func__
            parts = (value.fget, value.fset, value.fdel) if _type(value) is property else (value,)
            for part in parts:
                if _type(part) is _FUNCTION_TYPE:
                    found.append(
                        (f"{label}.{name}", part, _id(part.__code__), _id(part.__defaults__),
                         _id(part.__kwdefaults__))
                    )  # fmt: skip
    return found


def snapshot() -> tuple:
    """The identities of what torch's namespaces and the model classes hold (and the model
    classes' functions' code), the watched operators' dispatch tables, the default dtype and
    the mode stacks of the calling thread."""
    spaces = _NAMESPACES + [s for s in _model_namespaces() if s[0] not in dict(_NAMESPACES)]
    python = {label: _identities(space) for label, space in spaces}
    tables = tuple(_dump_table(op) for op in WATCHED_OPS)
    watched = (spaces, _functions(spaces))
    return python, tables, _default_dtype(), _function_modes(), _dispatch_modes(), watched


def torch_functions(before: tuple) -> frozenset[int]:
    """The identities of the functions `snapshot` watched: the audit hook refuses changes to
    their code and defaults."""
    return frozenset(_id(entry[1]) for entry in before[5][1])


def changes(before: tuple) -> list[str]:
    """What differs from `before`, in words (empty when torch is as it was)."""
    python, tables, dtype, _, _, (spaces, functions) = before
    found: list[str] = []
    for label, space in spaces:
        now = _identities(space)
        was = python[label]
        if now is None:
            found.append(f"{label} holds a name that is not a string")
            continue
        for name, ident in was.items():
            if now.get(name) != ident:
                found.append(f"{label}.{name}")
        if _type(space) is not _dict:  # a class: a name added there shadows an inherited one
            found += [f"{label}.{name}" for name in now if name not in was and name not in _LAZY]
    for label, fn, code, defaults, kwdefaults in functions:
        if (
            _id(fn.__code__) != code
            or _id(fn.__defaults__) != defaults
            or _id(fn.__kwdefaults__) != kwdefaults
        ):
            found.append(f"the code of {label}")
    for op, table in zip(WATCHED_OPS, tables, strict=True):
        if _dump_table(op) != table:
            found.append(f"the kernels registered for {op}")
    if _default_dtype() is not dtype:
        found.append("the default dtype")
    if _function_modes() or _dispatch_modes():
        found.append("a torch function or dispatch mode")
    return found


# The grader's own code and state, as the observers will use them: every function's code,
# defaults and closure, every class's and module's dictionary, every container a module
# holds. An answer reaches these objects (`object.__subclasses__()` finds every class,
# and a method's `__globals__` its module); what it changes there is found here.
# What the grader fills itself: the calls into the answer kept alive, this state's own list,
# and the registry of warnings a module's code has issued (numpy's overflow warning over an
# answer's infinite weights is one), made before the snapshot so that none is added after.
_UNWATCHED = frozenset({"_KEPT", "_GRADER_STATE", "__warningregistry__"})


# Modules whose Python code the observers run (numpy's wrappers, a dtype's name) or whose
# attributes they look up as they run: what an answer rebinds or replaces there is found as
# in the grader's own modules, except that names added since (lazy imports) are allowed.
LIBRARIES = (
    "numpy", "math", "contextlib", "collections", "functools", "hashlib", "fnmatch", "re",
    "operator", "typing", "itertools", "copy", "types", "enum", "abc", "pydantic",
    "pydantic_core", "safetensors", "json", "_collections_abc", "posixpath",
)  # fmt: skip


def library_modules() -> list:
    return [
        module
        for name, module in list(sys.modules.items())
        if _type(module) is _type(sys) and name.split(".")[0] in LIBRARIES
    ]


def grader_snapshot(modules: list, libraries: list = ()) -> list[tuple]:
    """Entries for the grader's modules (every name, function, class and container) and for
    the libraries (the names their modules held and their functions' code and defaults; not
    their caches, closures or classes, which they change themselves as they run)."""
    import pydantic

    entries: list[tuple] = []
    classes: list[tuple[str, type, bool]] = [("pydantic.BaseModel", pydantic.BaseModel, False)]

    def function(label: str, fn: Any, library: bool) -> None:
        cells = fn.__closure__
        contents = []
        for cell in cells or ():
            if library:
                contents.append(None)
                continue
            try:
                contents.append(_id(cell.cell_contents))
            except ValueError:  # an empty cell (a name bound later)
                contents.append(None)
        entries.append(
            ("function", label, fn, _id(fn.__code__), _id(fn.__defaults__),
             _id(fn.__kwdefaults__), cells, tuple(contents))
        )  # fmt: skip

    def members(label: str, space: Any, owner: str, library: bool) -> None:
        for name, value in list(space.items()):
            if _type(value) is staticmethod or _type(value) is classmethod:
                value = value.__func__
            if _type(value) is property:
                for part in (value.fget, value.fset, value.fdel):
                    if _type(part) is _FUNCTION:
                        function(f"{label}.{name}", part, library)
            elif _type(value) is _FUNCTION and value.__module__ in (owner, None):
                function(f"{label}.{name}", value, library)
            elif isinstance(value, type) and value.__module__ == owner and not library:
                classes.append((f"{label}.{name}", value, library))
            elif (
                not library
                and any(_type(value) is c for c in (_dict, list, set, tuple))
                and name not in _UNWATCHED
            ):
                entries.append(("items", f"{label}.{name}", value, _contents(value)))

    for module, library in [(m, False) for m in modules] + [(m, True) for m in libraries]:
        space = _module_dict(module)
        if not library:
            space.setdefault("__warningregistry__", {})
        entries.append(("names" if library else "items", module.__name__, space, _contents(space)))
        members(module.__name__, space, space.get("__name__"), library)
    done: set[int] = set()
    while classes:
        label, cls, library = classes.pop()
        if _id(cls) in done:
            continue
        done.add(_id(cls))
        space = _class_dict(cls)
        entries.append(("names" if library else "items", label, space, _contents(space)))
        members(label, space, cls.__module__, library)
    return entries


def namespace_entries(namespaces: list) -> list[tuple]:
    """Entries, as `grader_snapshot`'s, for namespaces a check installed in the answer's
    reach: each dictionary's contents (a nested one's too) and each function's code."""
    entries: list[tuple] = []
    for space in namespaces:
        if _type(space) is not _dict:
            continue
        entries.append(("items", "the instrumentation", space, _contents(space)))
        for name, value in list(space.items()):
            if _type(value) is _dict:
                entries.append(("items", f"the instrumentation's {name}", value, _contents(value)))
            elif _type(value) is _FUNCTION:
                entries.append(
                    ("function", f"the instrumentation's {name}", value, _id(value.__code__),
                     _id(value.__defaults__), _id(value.__kwdefaults__), value.__closure__,
                     tuple(_id(c.cell_contents) for c in value.__closure__ or ()))
                )  # fmt: skip
    return entries


def grader_functions(entries: list[tuple]) -> frozenset[int]:
    """The identities of the grader's functions, those of its namespaces compiled apart
    included: the audit hook refuses changes to their code and defaults."""
    found = {_id(entry[2]) for entry in entries if entry[0] == "function"}
    for entry in entries:
        if entry[0] == "items" and _type(entry[2]) is _dict:
            found |= {_id(v) for v in list(entry[2].values()) if _type(v) is _FUNCTION}
    return frozenset(found)


def _contents(container: Any) -> tuple:
    if _type(container) is _dict or _type(container) is _MAPPINGPROXY:
        return tuple((key, _id(value)) for key, value in list(container.items()))
    return tuple(_id(value) for value in list(container))


def grader_changes(entries: list, prims: tuple) -> list[str]:
    """What differs from `grader_snapshot`'s entries. Called by the harness's main thread
    after the answer: it looks up no global or builtin (everything comes in `prims`), and
    touches only exact types, by C-level iteration, and compares keys and values by identity."""
    exact_type, exact_str, exact_dict, proxy, items_of, to_list, identity, length = prims
    found: list = []
    for entry in entries:
        kind, label = entry[0], entry[1]
        if kind == "function":
            fn, code, defaults, kwdefaults, cells, contents = entry[2:]
            if (
                identity(fn.__code__) != code
                or identity(fn.__defaults__) != defaults
                or identity(fn.__kwdefaults__) != kwdefaults
                or fn.__closure__ is not cells
            ):
                found.append(label)
                continue
            i = 0
            for cell in cells or ():
                if contents[i] is not None and identity(cell.cell_contents) != contents[i]:
                    found.append(label)
                    break
                i += 1  # noqa: SIM113  (no builtin is looked up here)
            continue
        container, was = entry[2], entry[3]
        kind_now = exact_type(container)
        if kind == "names":
            # What the library held then must still be there, the same objects; names
            # added since (a lazily imported submodule) are allowed. Looked up in a dict of
            # our own, filled by C-level iteration: no key of the answer's is compared.
            now = {}
            items = to_list(items_of(container) if kind_now is exact_dict else container.items())
            for key, value in items:
                if exact_type(key) is not exact_str:
                    found.append(f"{label} (a name that is not a string)")
                    break
                now[key] = identity(value)
            else:
                for key, ident in was:
                    if now.get(key) != ident:
                        found.append(f"{label}.{key}")
                        break
            continue
        if kind_now is exact_dict or kind_now is proxy:
            now = to_list(items_of(container) if kind_now is exact_dict else container.items())
            if length(now) != length(was):
                found.append(label)
                continue
            i = 0
            for key, value in now:
                if key is not was[i][0] or identity(value) != was[i][1]:
                    found.append(f"{label}.{was[i][0]}")
                    break
                i += 1  # noqa: SIM113  (no builtin is looked up here)
            continue
        now = to_list(container)
        if length(now) != length(was):
            found.append(label)
            continue
        i = 0
        for value in now:
            if identity(value) != was[i]:
                found.append(label)
                break
            i += 1  # noqa: SIM113  (no builtin is looked up here)
    return found


_FUNCTION = type(grader_changes)
_MAPPINGPROXY = type(type.__dict__)
GRADER_PRIMITIVES = (type, str, dict, _MAPPINGPROXY, dict.items, list, id, len)
