"""`python`'s observer: the instructor's assertions, run over a copy of the answer's scope
(the check: contract/checks/python.py).
"""

from __future__ import annotations

from contract.checks.python import TYPE, Params

__all__ = ["TYPE", "EXECUTES_ANSWER", "observe"]  # what the harness reads

EXECUTES_ANSWER = True  # the assertions touch the answer's objects, whose methods are its code


def observe(ctx, params: Params) -> dict:
    code = compile(params.code, f"<check {params.name}>", "exec")
    namespace = dict(ctx.scope)
    try:
        ctx.ti.call_answer(exec, code, namespace, grad=True)
    except ctx.ti.AnswerRaised as exc:
        if exc.assertion:
            return {"passed": False, "message": exc.text[:2000] or "an assertion failed"}
        return {"passed": False, "message": f"{exc.kind}: {exc.text}"[:2000], "raised": True}
    return {"passed": True}
