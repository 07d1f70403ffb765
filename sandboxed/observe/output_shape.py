"""`output_shape`'s observer: a module's output shape on a seeded input, and the features
that reach `features_at` (the check: contract/checks/output_shape.py).
"""

from __future__ import annotations

import builtins

# A private copy of the builtins: what the answer's forward rebinds does not reach the
# code that reads its results.
__builtins__ = dict(builtins.__dict__)

from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from contract.checks.base import ObservationError  # noqa: E402
from contract.checks.output_shape import TYPE, Params  # noqa: E402
from sandboxed.observe.architecture import find_module  # noqa: E402

__all__ = ["TYPE", "EXECUTES_ANSWER", "observe"]  # what the harness reads

EXECUTES_ANSWER = True  # it calls the module's forward, which the answer may have written
MAX_FEATURE_ELEMENTS = 1_000_000

# The probe's forward, compiled into a namespace of its own: the answer's forward can reach
# the probe (it is where the submodule was), and from it only the list it appends to and
# the submodule it wraps.
_PROBE = """
def forward(self, *args, **kwargs):
    record(args)
    return call(inner, *args, **kwargs)
"""


def _probe(ti: Any, target: Any, box: list) -> Any:
    """A module of the grader's that records its input in box and calls target with it."""
    space: dict = {"__builtins__": {}, "record": box.append, "call": ti._module_call}
    space["inner"] = target
    exec(compile(_PROBE, "<probe>", "exec"), space)
    probe = type("FeatureProbe", (ti._Module,), {"forward": space["forward"]})()
    probe._modules["inner"] = target  # so that eval mode and the hook checks reach it
    return probe


def _holder(ti: Any, model: Any, path: str, what: str) -> tuple[Any, str, Any] | None:
    """(the dict of submodules that holds the module at path, its key there, the module)."""
    parent_path, _, name = path.rpartition(".")
    parent = find_module(ti, model, parent_path, what)
    target = None if parent is None else find_module(ti, parent, name, what)
    if target is None:
        return None
    # find_module read the parent's submodules: an exact dict, keyed by exact strings.
    return ti._field(ti._fields_of(parent, what), "_modules"), name, target


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    where = params.variable + (f".{params.module}" if params.module else "")
    model = ti.lookup(ctx.scope, params.variable)
    module = ti.submodule(model, params.module, params.variable)
    x = ti.seeded_input(params.input_shape, ctx.seed)
    holder, box, features = None, [], None
    if params.features_at:
        holder = _holder(ti, model, params.features_at, params.variable)
        features = {"found": holder is not None}
    if holder is not None:
        children, name, target = holder
        dict.__setitem__(children, name, _probe(ti, target, box))
    try:
        try:
            out = ti.forward(module, x)
        finally:
            if holder is not None:
                dict.__setitem__(children, name, target)
    except ti.AnswerRaised as exc:  # the student's module failing on the input is a fact
        return {
            "error": f"`{where}` raised {exc.kind} on an input of shape {params.input_shape}: {exc.text}"[
                :2000
            ]
        }
    facts: dict = {"shape": ti.shape_of(out)}
    if features is not None:
        if holder is not None:
            features |= _read_features(ctx, params, box)
        facts["features"] = features
    return facts


def _read_features(ctx, params: Params, box: list) -> dict:
    """How often the hook ran, and the first input it saw (exported as a tensor)."""
    ti = ctx.ti
    calls = len(box)
    first = box[0] if calls else None
    if type(first) is not tuple or len(first) == 0:
        return {"calls": calls}
    try:
        shape = ti.shape_of(first[0])
    except ObservationError:  # not a plain tensor
        return {"calls": calls}
    if ti.numel(first[0]) > MAX_FEATURE_ELEMENTS:
        raise ObservationError(
            f"the input reaching `{params.variable}.{params.features_at}` has more than "
            f"{MAX_FEATURE_ELEMENTS:,} elements: compare the features at a smaller module"
        )
    ctx.add_tensor("features", ti.to_numpy(first[0]).astype(np.float32))
    return {"calls": calls, "shape": shape}
