"""`pretrained_weights`'s observer: a digest, shape and dtype of every state tensor (the
check: contract/checks/pretrained_weights.py).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from contract.checks.pretrained_weights import TYPE, Params
from sandboxed.observe.trainable_params import CLASSES

__all__ = ["TYPE", "prepare", "observe"]  # what the harness reads

# Why a model with hooks is not judged by its weights: what a hook would do.
HOOKS = "it runs whenever the model is used or trained, and can change its weights"


def prepare(ctx, params: Params) -> None:
    """Remember the module classes that exist before the answer: a layer of a class the
    answer defined computes with the pre-trained weights what its own code says."""
    ctx.shared.setdefault(CLASSES, ctx.ti.module_classes())


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    model = ti.require_module(ti.lookup(ctx.scope, params.variable), params.variable)
    ti.no_hooks(model, HOOKS)
    ti.no_answer_classes(model, ctx.shared[CLASSES], HOOKS)
    root = ti.submodule(model, params.module, params.variable)
    parameters = {name for name, _ in ti.named_parameters(root)}
    state = {}
    for name, tensor in ti.named_state(root):
        if any(fnmatchcase(name, pattern) for pattern in params.exclude):
            continue
        state[name] = {
            "kind": "parameter" if name in parameters else "buffer",
            "shape": ti.shape_of(tensor),
            "dtype": ti.dtype_name(tensor),
            "digest": ti.digest(ti.to_numpy(tensor)),
        }
    return {"state": state}
