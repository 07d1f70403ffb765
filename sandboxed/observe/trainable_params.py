"""`trainable_params`'s observer: each parameter's `requires_grad` and size, and the
module's `training` flag (the check: contract/checks/trainable_params.py).
"""

from __future__ import annotations

from contract.checks.trainable_params import TYPE, Params

__all__ = ["TYPE", "prepare", "observe"]  # what the harness reads

# Why a model with hooks is not judged by its flags: what a hook would do.
HOOKS = "it runs whenever the model is used, and can set requires_grad back (or change the weights)"


CLASSES = "module classes before the answer"  # the key in the checks' shared state


def prepare(ctx, params: Params) -> None:
    """Remember the module classes that exist before the answer (torch's, torchvision's and
    the setup's): a module of a class the answer defined runs its code when it is trained."""
    ctx.shared.setdefault(CLASSES, ctx.ti.module_classes())


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    model = ti.lookup(ctx.scope, params.variable)
    root = ti.submodule(model, params.module, params.variable)
    ti.no_hooks(model, HOOKS)
    ti.no_answer_classes(model, ctx.shared[CLASSES], HOOKS)
    parameters = {
        name: {"numel": ti.numel(p), "requires_grad": ti.requires_grad(p)}
        for name, p in ti.named_parameters(root)
    }
    # The flag as the module's instance dictionary holds it (read by `introspect`'s readers,
    # never through the module's attributes); anything but an exact bool is not recorded.
    where = params.variable + (f".{params.module}" if params.module else "")
    flag = ti._field(ti._fields_of(root, f"`{where}`"), "training")
    return {"parameters": parameters, "training": flag if type(flag) is bool else None}
