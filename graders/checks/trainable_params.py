"""`trainable_params`'s judge: the trainable set against the reference's (the check:
contract/checks/trainable_params.py).
"""

from __future__ import annotations

from pydantic import Field

from contract.checks.base import MAX_NAMES, plural, preview
from contract.checks.trainable_params import TYPE, Params
from graders.checks.base import FactsBase, Observed, Verdict

__all__ = ["TYPE", "REASONS", "Facts", "judge"]  # what the judge reads

REASONS: dict[str, str] = {
    "no-parameters": "the module holds no parameters at all",
    "parameters-missing": "a parameter of the reference's module is not in the answer's "
    "(a layer removed or replaced)",
    "parameters-added": "the answer's module holds parameters the reference's has not "
    "(a layer added or replaced)",
    "still-trainable": "some parameters the reference freezes still require gradients",
    "none-frozen": "no parameter is frozen where the reference freezes some (and the module "
    "is not in evaluation mode, unlike eval-mode-unfrozen)",
    "eval-mode-unfrozen": "no parameter is frozen where the reference freezes some, and the "
    "module is in evaluation mode (`eval()`, `train(False)`) where the reference's is in "
    "training mode",
    "partly-frozen": "some of the parameters the reference freezes are frozen, others still "
    "require gradients",
    "new-layer-trainable": "a parameter the reference freezes is trainable and of another size: "
    "a layer made anew (after freezing), which requires gradients by default",
    "trainable-frozen": "some parameters the reference trains are frozen",
    "extra-frozen": "the frozen parameters are a strict superset of the reference's frozen set",
}


class ParamFact(FactsBase):
    numel: int = Field(ge=0)
    requires_grad: bool


class Facts(FactsBase):
    parameters: dict[str, ParamFact] = Field(max_length=MAX_NAMES)
    training: bool | None = Field(
        None, description="The module's own training flag; None: not a plain bool."
    )

    def trainable(self) -> list[str]:
        return [n for n, p in self.parameters.items() if p.requires_grad]

    def count(self, names: list[str]) -> int:
        return sum(self.parameters[n].numel for n in names)


def _describe(names: list[str]) -> str:
    return f"{plural(len(names), 'trainable tensor')}" + (f" ({preview(names)})" if names else "")


def _reasons(have: Facts, want: Facts) -> list[str]:
    """What differs, over the parameters both modules hold (by name)."""
    reasons = []
    if set(want.parameters) - set(have.parameters):
        reasons.append("parameters-missing")
    if set(have.parameters) - set(want.parameters):
        reasons.append("parameters-added")
    common = [n for n in want.parameters if n in have.parameters]
    want_frozen = {n for n in common if not want.parameters[n].requires_grad}
    have_frozen = {n for n in common if not have.parameters[n].requires_grad}
    still = want_frozen - have_frozen
    renewed = {n for n in still if have.parameters[n].numel != want.parameters[n].numel}
    if renewed:
        reasons.append("new-layer-trainable")
    if still:
        reasons.append("still-trainable")
        if not have_frozen:
            evaluating = have.training is False and want.training is True
            reasons.append("eval-mode-unfrozen" if evaluating else "none-frozen")
        elif want_frozen & have_frozen and still - renewed:
            reasons.append("partly-frozen")
    if have_frozen - want_frozen:
        reasons.append("trainable-frozen")
        if want_frozen <= have_frozen:
            reasons.append("extra-frozen")
    return reasons


def _as_reference(have: Facts, want: Facts) -> bool:
    """Each parameter both hold requires grad as the reference's does; one only the answer
    holds (a layer added, or renamed by nesting) or only the reference holds (removed) is
    judged by the reference's rule where it has one (all frozen, or all trainable): what a
    layer is, is the other checks' business, whether it is frozen is this one's."""
    common = [n for n in want.parameters if n in have.parameters]
    if any(have.parameters[n].requires_grad != want.parameters[n].requires_grad for n in common):
        return False
    added = [n for n in have.parameters if n not in want.parameters]
    rules = {p.requires_grad for p in want.parameters.values()}
    if len(rules) == 1:
        rule = rules.pop()
        return all(have.parameters[n].requires_grad == rule for n in added)
    return not added and len(common) == len(want.parameters)


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    if not have.parameters:
        return Verdict.fail(f"`{params.variable}` has no parameters at all", "no-parameters")
    want_trainable, have_trainable = want.trainable(), have.trainable()
    if _as_reference(have, want):
        frozen = len(have.parameters) - len(have_trainable)
        other = set(have.parameters) != set(want.parameters)
        return Verdict(
            True,
            f"{_describe(have_trainable)} ({have.count(have_trainable):,} parameters), "
            f"{plural(frozen, 'frozen tensor')}"
            + (
                " (the layers differ from the reference's: the other checks judge them)"
                if other
                else ""
            ),
        )
    message = (
        f"expected {_describe(want_trainable)}, found {len(have_trainable)}"
        + (f" ({preview(have_trainable)})" if have_trainable else "")
        + f"; {have.count(have_trainable):,} trainable parameters, expected {want.count(want_trainable):,}"
    )
    missing = [n for n in want_trainable if n not in have_trainable]
    if missing and have_trainable:
        message += f"; should be trainable but is not: {preview(missing)}"
    return Verdict.fail(message, *_reasons(have, want))
