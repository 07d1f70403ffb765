"""`architecture`'s judge: the answer's structure against the reference's (the check:
contract/checks/architecture.py).
"""

from __future__ import annotations

from pydantic import Field

from contract.checks.architecture import TYPE, Params, Setting, short_name
from contract.checks.base import MAX_NAMES, preview
from graders.checks.base import FactsBase, Observed, Verdict

__all__ = ["TYPE", "REASONS", "Facts", "judge"]  # what the judge reads

REASONS: dict[str, str] = {
    "unexpected-module": "a module is at the path where the reference's model has none "
    "(such as an `fc` added to a MobileNetV2)",
    "other-class": "the module at the path is of another class than the reference's",
    "layers-removed": "submodules of the reference's are not in the answer's module",
    "layers-added": "the answer's module holds submodules the reference's has not",
    "layers-replaced": "a submodule at the same path is of another class",
    "settings-changed": "a layer's hyper-parameters (its plain instance attributes) differ",
    "shapes-changed": "parameters of the same names have other shapes",
    "parameters-missing": "parameters of the reference's module are not in the answer's",
    "parameters-added": "the answer's module holds parameters the reference's has not",
}


class Facts(FactsBase):
    exists: bool = Field(True, description="False: there is no module at the path.")
    class_name: str = Field("", max_length=300)
    modules: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_NAMES, description="Module path to class name."
    )
    settings: dict[str, dict[str, Setting]] = Field(
        default_factory=dict,
        max_length=MAX_NAMES,
        description="Module path ('' the module itself) to its hyper-parameters.",
    )
    parameters: dict[str, list[int]] = Field(
        default_factory=dict, max_length=MAX_NAMES, description="Parameter name to shape."
    )


def setting_change(have: dict[str, Setting], want: dict[str, Setting]) -> str | None:
    """The first hyper-parameter that differs, in words ("stride is [1, 1], expected [2, 2]")."""
    for key in sorted(set(want) | set(have)):
        if key not in have:
            return f"has no `{key}` (expected {want[key]!r})"
        if key not in want:
            return f"has an attribute `{key}` = {have[key]!r} that the reference's has not"
        if have[key] != want[key] or type(have[key]) is not type(want[key]):
            return f"has {key}={have[key]!r}, expected {key}={want[key]!r}"
    return None


def _reasons(
    have: Facts, want: Facts, missing: set[str], extra: set[str], retyped: list[str]
) -> list[str]:
    """Every kind of difference found, not only the first the message names."""
    reasons = []
    if missing:
        reasons.append("layers-removed")
    if extra:
        reasons.append("layers-added")
    if retyped:
        reasons.append("layers-replaced")
    if any(
        setting_change(have.settings[p], want.settings[p])
        for p in set(want.settings) & set(have.settings)
        if p not in retyped
    ):
        reasons.append("settings-changed")
    if any(
        have.parameters[n] != want.parameters[n] for n in want.parameters if n in have.parameters
    ):
        reasons.append("shapes-changed")
    if set(want.parameters) - set(have.parameters):
        reasons.append("parameters-missing")
    if set(have.parameters) - set(want.parameters):
        reasons.append("parameters-added")
    return reasons


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    where = params.variable + (f".{params.module}" if params.module else "")
    if not want.exists:
        if not have.exists:
            return Verdict(True, f"`{where}` does not exist, as expected")
        return Verdict.fail(
            f"`{where}` exists (a {short_name(have.class_name)}), a module the expected model does not have",
            "unexpected-module",
        )
    if not have.exists:
        return Verdict.fail(
            f"`{where}` does not exist; expected a {short_name(want.class_name)} there", "missing"
        )
    if have.class_name != want.class_name:
        return Verdict.fail(
            f"`{where}` is a {have.class_name}, expected a {want.class_name}", "other-class"
        )
    missing = set(want.modules) - set(have.modules)
    extra = set(have.modules) - set(want.modules)
    retyped = [
        p
        for p in sorted(set(want.modules) & set(have.modules))
        if have.modules[p] != want.modules[p]
    ]
    problems = []
    if missing:
        problems.append(f"missing layers {preview(missing)}")
    if extra:
        problems.append(f"unexpected layers {preview(extra)}")
    if retyped:
        p = retyped[0]
        problems.append(f"`{p}` is a {have.modules[p]}, expected a {want.modules[p]}")
    for path in sorted(set(want.settings) & set(have.settings)):
        if path in retyped:
            continue
        change = setting_change(have.settings[path], want.settings[path])
        if change:
            problems.append(f"`{where}.{path}`" if path else f"`{where}`")
            problems[-1] += f" {change}"
            break
    reshaped = [
        n
        for n in sorted(want.parameters)
        if n in have.parameters and have.parameters[n] != want.parameters[n]
    ]
    if reshaped:
        n = reshaped[0]
        problems.append(f"{n} has shape {have.parameters[n]}, expected {want.parameters[n]}")
    if problems:
        return Verdict.fail("; ".join(problems), *_reasons(have, want, missing, extra, retyped))
    return Verdict(True, f"{want.class_name} with the expected {len(want.modules)} layers")
