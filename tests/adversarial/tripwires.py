"""Tripwire answers: a correct answer, then every object the observers read (or one kind
of them) replaced by a look-alike whose every special method writes a line to the
answer's stdout when it runs outside a call the grader makes into the answer's code on
purpose (a forward, an instructor's assertions). The harness reads the answer's stdout
after observing, so a line there is proof that an observer ran the answer's code.
"""

from __future__ import annotations

TRIPWIRE_MARK = "TRIPWIRE"

# Defines `trip(obj, label)`, which returns a hostile look-alike of obj (a subclass with a
# recording metaclass, whose special methods record and then behave as the original's),
# and `arm()`, after which the records are written.
LIBRARY = r"""
import os as _os, sys as _sys, builtins as _builtins, torch as _torch
_armed = [False]
_write, _getframe = _os.write, _sys._getframe


def _note(what):
    if not _armed[0]:
        return
    frame = _getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == "<call>":  # a call into the answer's code on purpose
            return
        frame = frame.f_back
    _write(1, ("\nTRIPWIRE " + what + "\n").encode())


def arm():
    _armed[0] = True


_SPECIAL = (
    "__bool__", "__len__", "__eq__", "__ne__", "__lt__", "__le__", "__hash__", "__iter__",
    "__reversed__", "__getitem__", "__setitem__", "__delitem__", "__contains__", "__index__",
    "__int__", "__float__", "__repr__", "__str__", "__format__", "__add__", "__mul__",
    "__getattr__", "__copy__", "__deepcopy__", "__reduce_ex__", "__array__",
    "keys", "items", "values", "get", "copy", "__or__",
)


class TripMeta(type):
    def __instancecheck__(cls, obj):
        _note("metaclass __instancecheck__")
        return type.__instancecheck__(cls, obj)

    def __subclasscheck__(cls, sub):
        _note("metaclass __subclasscheck__")
        return type.__subclasscheck__(cls, sub)

    def __eq__(cls, other):
        _note("metaclass __eq__")
        return type.__eq__(cls, other)

    def __hash__(cls):
        _note("metaclass __hash__")
        return type.__hash__(cls)

    def __getattribute__(cls, name):
        if name not in ("__torch_function__", "__dict__", "__mro__", "__class__"):
            _note("metaclass attribute " + name)
        return type.__getattribute__(cls, name)


def _recording(base, label):
    space = {"__module__": base.__module__, "__qualname__": base.__qualname__}
    for name in _SPECIAL:
        original = getattr(base, name, None)
        if original is None:
            continue
        def method(self, *args, _name=name, _original=original, **kwargs):
            _note(label + "." + _name)
            return _original(self, *args, **kwargs)
        space[name] = method
    if issubclass(base, _torch.Tensor):
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            _note(label + ".__torch_function__ " + getattr(func, "__name__", "?"))
            return _torch._C._disabled_torch_function_impl(func, types, args, kwargs or {})
        space["__torch_function__"] = classmethod(__torch_function__)
        del space["__module__"]
        return _torch._C._TensorMeta(base.__name__, (base,), space)
    def __del__(self):
        _note(label + ".__del__")
    space["__del__"] = __del__
    return TripMeta(base.__name__, (base,), space)


_classes = {}


def trip(obj, label):
    base = type(obj)
    if base not in _classes:
        _classes[base] = _recording(base, label)
    cls = _classes[base]
    if isinstance(obj, _torch.nn.Parameter):
        return _torch.Tensor._make_subclass(cls, obj.data, obj.requires_grad)
    if isinstance(obj, _torch.Tensor):
        return _torch.Tensor._make_subclass(cls, obj.data, False)
    if isinstance(obj, (dict, list, set, tuple, str, int, float)):
        return cls(obj)
    obj.__class__ = cls
    return obj


class TripStr(str):
    def __eq__(self, other):
        _note("str key __eq__")
        return str.__eq__(self, other)

    def __hash__(self):
        _note("str key __hash__")
        return str.__hash__(self)
"""

# Each kind replaces one sort of structure the observers read (after the correct answer).
KINDS: dict[str, str] = {
    "scope-key": "globals()[TripStr('model_')] = 1\n",
    "module-dicts": (
        "for m in model.modules():\n"
        "    d = object.__getattribute__(m, '__dict__')\n"
        "    d['_modules'] = trip(d['_modules'], 'modules dict')\n"
    ),
    "parameter-dicts": (
        "for m in model.modules():\n"
        "    d = object.__getattribute__(m, '__dict__')\n"
        "    d['_parameters'] = trip(d['_parameters'], 'parameters dict')\n"
    ),
    "buffer-dicts": (
        "for m in model.modules():\n"
        "    d = object.__getattribute__(m, '__dict__')\n"
        "    d['_buffers'] = trip(d['_buffers'], 'buffers dict')\n"
        "    d['_non_persistent_buffers_set'] = trip(d['_non_persistent_buffers_set'], 'set')\n"
    ),
    "parameters": (
        "for m in model.modules():\n"
        "    for k, p in list(m._parameters.items()):\n"
        "        if p is not None:\n"
        "            m._parameters[k] = trip(p, 'parameter')\n"
        "optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.01)\n"
    ),
    "buffers": (
        "for m in model.modules():\n"
        "    for k, b in list(m._buffers.items()):\n"
        "        if b is not None:\n"
        "            m._buffers[k] = trip(b, 'buffer')\n"
    ),
    "module-classes": "for m in list(model.modules()):\n    trip(m, type(m).__name__)\n",
    "training-flags": (
        "for m in model.modules():\n"
        "    object.__getattribute__(m, '__dict__')['training'] = trip(0, 'flag')\n"
    ),
    "optimizer-class": "trip(optimizer, 'optimizer')\n",
    "param-groups": (
        "d = object.__getattribute__(optimizer, '__dict__')\n"
        "d['param_groups'] = trip(d['param_groups'], 'param_groups')\n"
    ),
    "group-dicts": (
        "groups = object.__getattribute__(optimizer, '__dict__')['param_groups']\n"
        "groups[:] = [trip(g, 'param group') for g in groups]\n"
    ),
    "group-lists": (
        "for g in optimizer.param_groups:\n    g['params'] = trip(g['params'], 'params list')\n"
    ),
    "hyper-values": (
        "for g in optimizer.param_groups:\n"
        "    g['lr'] = trip(g['lr'], 'lr')\n    g['momentum'] = trip(0.0, 'momentum')\n"
    ),
    "builtins": (
        "import builtins\n"
        "for name in ('len', 'isinstance', 'type', 'list', 'dict', 'sorted', 'str', 'int', "
        "'float', 'bool', 'id', 'iter', 'next', 'getattr', 'hasattr', 'any', 'all', 'repr', "
        "'tuple', 'set', 'enumerate', 'zip', 'range', 'min', 'max', 'sum', 'print'):\n"
        "    original = getattr(builtins, name)\n"
        "    def wrapper(*args, _o=original, _n=name, **kwargs):\n"
        "        _note('builtin ' + _n)\n"
        "        return _o(*args, **kwargs)\n"
        "    setattr(builtins, name, wrapper)\n"
    ),
}

# Which checks of the every-check spec read each kind of structure, and so must fail.
FAILS: dict[str, set[str]] = {
    "scope-key": {"frozen", "backbone", "weights", "arch", "shape", "opt-type", "opt-params", "opt-lr", "is-module"},
    "module-dicts": {"frozen", "backbone", "weights", "arch", "shape", "opt-params", "opt-lr"},
    "parameter-dicts": {"frozen", "backbone", "weights", "arch", "opt-params", "opt-lr"},
    "buffer-dicts": {"weights"},
    "parameters": {"frozen", "backbone", "weights", "arch", "opt-type", "opt-params", "opt-lr"},
    "buffers": {"weights"},
    "module-classes": {"frozen", "backbone", "weights", "arch", "shape", "opt-params", "opt-lr", "is-module"},
    "training-flags": {"shape"},
    "optimizer-class": {"opt-type", "opt-params", "opt-lr"},
    "param-groups": {"opt-type", "opt-params", "opt-lr"},
    "group-dicts": {"opt-type", "opt-params", "opt-lr"},
    "group-lists": {"opt-type", "opt-params", "opt-lr"},
    "hyper-values": {"opt-lr"},
    "builtins": set(),
}  # fmt: skip

CORRECT = (
    "for param in model.parameters():\n"
    "    param.requires_grad = False\n"
    "model.fc = nn.Linear(model.fc.in_features, 10)\n"
    "optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.01)\n"
)


def tripwire_answer(*kinds: str, correct: str = CORRECT) -> str:
    """The correct answer, then the given kinds of replacement, then the tripwires armed."""
    body = "".join(KINDS[k] for k in kinds)
    return correct + LIBRARY + body + "print('ARMED')\narm()\n"
