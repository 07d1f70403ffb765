"""`architecture`'s observer: the module's class, its submodules' paths, classes and
settings, its parameters' shapes (the check: contract/checks/architecture.py).

`find_module` and `settings_of` are shared with `frozen_backbone` and `output_shape`; they
read as `introspect` does, through its C-level readers.
"""

from __future__ import annotations

from typing import Any

from contract.checks.architecture import TYPE, Params, Setting, short_name

__all__ = ["TYPE", "observe"]  # what the harness reads

# Why a model with hooks is not judged by its layers: what a hook would do.
HOOKS = "it runs whenever the model is used or trained, and can change its layers or weights"
MAX_SETTINGS = 64
MAX_SETTING_ITEMS = 16


def find_module(ti: Any, root: Any, path: str, what: str) -> Any:
    """The module at a dotted path under root, or None where there is none (read without
    `__getattr__`, as `ti.submodule` reads)."""
    module = ti.require_module(root, what)
    walked = what
    for part in path.split(".") if path else []:
        found = None
        for name, child in ti._children(module, walked):
            if name == part:
                found = child
        if found is None:
            return None
        module = found
        walked = f"{walked}.{part}"
    return module


def settings_of(ti: Any, module: Any, what: str) -> dict[str, Setting]:
    """A module's hyper-parameters: its public instance attributes (not `training`, nor
    `inplace`, which changes where a layer writes its output, not what it computes) as
    plain values; any other object is recorded by its class's name."""
    out: dict[str, Setting] = {}
    for key, value in ti._fields_of(module, what):
        if key.startswith("_") or key in ("training", "inplace"):
            continue
        if len(out) == MAX_SETTINGS:
            break
        out[key[:100]] = _setting(ti, value)
    return out


def _plain(value: Any) -> bool:
    kind = type(value)
    return value is None or kind is bool or kind is int or kind is float or kind is str


def _setting(ti: Any, value: Any) -> Setting:
    kind = type(value)
    if kind is str:
        return value[:200]
    if _plain(value):
        return value
    if kind is tuple or kind is list:
        items = list(value)  # an exact tuple or list: iterated by C
        if len(items) <= MAX_SETTING_ITEMS and all(_plain(v) for v in items):
            return [v[:200] if type(v) is str else v for v in items]
    return f"<{short_name(ti.class_name(value))}>"


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    model = ti.require_module(ti.lookup(ctx.scope, params.variable), params.variable)
    ti.no_hooks(model, HOOKS)
    root = find_module(ti, model, params.module, params.variable)
    if root is None:
        return {"exists": False}
    where = params.variable + (f".{params.module}" if params.module else "")
    modules = list(ti.named_modules(root))
    return {
        "class_name": ti.class_name(root),
        "modules": {path: ti.class_name(m) for path, m in modules if path},
        "settings": {
            path: settings_of(ti, m, f"`{where}.{path}`" if path else f"`{where}`")
            for path, m in modules
        },
        "parameters": {name: ti.shape_of(p) for name, p in ti.named_parameters(root)},
    }
