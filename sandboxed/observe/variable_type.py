"""`variable_type`'s observer: the variable's class lineage (the check:
contract/checks/variable_type.py).
"""

from __future__ import annotations

from contract.checks.variable_type import TYPE, Params

__all__ = ["TYPE", "observe"]  # what the harness reads


def observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    try:
        value = ti.lookup(ctx.scope, params.variable)
    except ti.Missing:
        return {"exists": False}
    return {"exists": True, "lineage": ti.type_lineage(value)}
