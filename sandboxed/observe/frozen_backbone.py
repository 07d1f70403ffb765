"""`frozen_backbone`'s observer: the backbone's layers and tensors, the head's classes and
tensor shapes, read without running the answer's code (the check:
contract/checks/frozen_backbone.py).
"""

from __future__ import annotations

from contract.checks.base import ObservationError
from contract.checks.frozen_backbone import TYPE, Params
from sandboxed.observe.architecture import find_module, settings_of
from sandboxed.observe.trainable_params import CLASSES, HOOKS

__all__ = ["TYPE", "prepare", "observe"]  # what the harness reads


def _key(params: Params, what: str) -> tuple:
    return (TYPE, what, params.variable, params.head)


def prepare(ctx, params: Params) -> None:
    """Remember the setup's head (trusted, before the answer), to tell a new head from it,
    and the module classes that exist before the answer."""
    ti = ctx.ti
    ctx.shared.setdefault(CLASSES, ti.module_classes())
    if _key(params, "given") not in ctx.shared:
        try:
            model = ti.lookup(ctx.scope, params.variable)
            given = find_module(ti, model, params.head, params.variable)
        except ObservationError:
            given = None
        ctx.shared[_key(params, "given")] = given


def observe(ctx, params: Params) -> dict:
    """The facts, read once for every aspect of the same model and head."""
    if _key(params, "facts") not in ctx.shared:
        ctx.shared[_key(params, "facts")] = _observe(ctx, params)
    return ctx.shared[_key(params, "facts")]


def _observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    model = ti.require_module(ti.lookup(ctx.scope, params.variable), params.variable)
    head = find_module(ti, model, params.head, params.variable)
    ti.no_hooks(model, HOOKS)
    ti.no_answer_classes(model, ctx.shared[CLASSES], HOOKS)
    inside = params.head + "."
    layers = {}
    for path, module in ti.named_modules(model):
        if path != params.head and not path.startswith(inside):
            what = f"`{params.variable}.{path}`" if path else f"`{params.variable}`"
            layers[path] = {
                "class_name": ti.class_name(module),
                "settings": settings_of(ti, module, what),
            }
    parameters = {name for name, _ in ti.named_parameters(model)}
    tensors = {}
    for name, t in ti.named_state(model):
        if not name.startswith(inside):
            tensors[name] = {
                "kind": "parameter" if name in parameters else "buffer",
                "shape": ti.shape_of(t),
                "dtype": ti.dtype_name(t),
                "requires_grad": ti.requires_grad(t),
                "digest": ti.digest(ti.to_numpy(t)),
            }
    facts: dict = {"head": None, "layers": layers, "tensors": tensors}
    if head is not None:
        given = ctx.shared.get(_key(params, "given"))
        facts["head"] = {
            "class_name": ti.class_name(head),
            "given": given is not None and ti.same_object(given, head),
            "modules": [ti.class_name(m) for _, m in ti.named_modules(head)],
            "tensors": [
                {"name": n, "shape": ti.shape_of(p), "requires_grad": ti.requires_grad(p)}
                for n, p in ti.named_parameters(head)
            ],
        }
    return facts
