"""`pretrained_weights`'s observer: a digest, shape and dtype of every state tensor (the
check: contract/checks/pretrained_weights.py).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from contract.checks.pretrained_weights import TYPE, Params

__all__ = ["TYPE", "observe"]  # what the harness reads

# Why a model with hooks is not judged by its weights: what a hook would do.
HOOKS = "it runs whenever the model is used or trained, and can change its weights"


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    model = ti.require_module(ti.lookup(ctx.scope, params.variable), params.variable)
    ti.no_hooks(model, HOOKS)
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
