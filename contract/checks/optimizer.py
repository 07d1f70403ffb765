"""`optimizer`: what the optimizer's steps do to each parameter, and how it is built.

The observer reads the optimizer (a class of torch's own, its param groups) and probes it
without calling it: a new optimizer of the same class, with each group's settings, over
float64 copies of the tensors it holds (a tensor held twice is held twice), steps from
gradients seeded by each parameter's name, given only to the parameters that require
grad in the answer's model. It probes twice over: from the parameters' values (`step`:
one step, or the check's `steps`, each from gradients of its own; SGD's first step with
momentum is plain SGD's, so momentum passes unless a task asks for more steps: SGD with
momentum is still stochastic gradient descent at that learning rate), and one step from
zero (`zero`), where weight decay and the like vanish and the step depends on the
gradient and the learning rate alone. Aspects, one per check:

- `update` (decisive): every parameter changes as the reference's steps change it;
- `params`: the step changes exactly the parameters the reference's does, and the
  optimizer holds nothing the reference's does not (a frozen parameter it holds never
  changes, but the optimizer is then not one over the trainable parameters), each once;
- `lr`: each parameter's step from zero equals the reference's: its sign and size, a
  parameter held twice (an optimizer of another class: its `lr` setting, by value); a step
  whose size differs although the `lr` setting is the reference's is another setting's
  doing (nesterov), which `update` tells;
- `type`: the class.

The probe steps a new optimizer, not the answer's, so the observer also reads what the
answer attached to its own that a new one of the class (made by the observer before the
answer ran, with each implementation setting, stepped, saved and loaded, copied) does not
have: an attribute of its own (a `step` that shadows the class's), a hook in any of its
hook tables, a global optimizer hook, state (or a state table of another kind, or with a
factory of its own). Hooks the setup installed, and the grader's own instrumentation (the
training loop's), are not the answer's; nor is the state of the optimizer the setup left,
which the answer's own steps fill. Any finding fails every aspect (`tampered`). A setting
outside the range it has a meaning in (momentum in [0, 1), dampening in [0, 1), weight
decay at least 0), which torch checks only when the optimizer is built and the first step
may not show, fails `update` (`out-of-range`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.checks.base import VARIABLE_PATTERN, CheckBase

TYPE = "optimizer"

# Settings that choose an implementation, not the update: the probe runs the plain one.
IMPLEMENTATION = ("foreach", "fused", "differentiable", "capturable")

# The most steps a spec's `steps` may ask of the `step` probe (warm-up steps each class as often).
MAX_STEPS = 5


class Params(CheckBase):
    type: Literal["optimizer"]
    aspect: Literal["type", "params", "lr", "update"]
    variable: str = Field("optimizer", pattern=VARIABLE_PATTERN)
    model: str = Field(
        "model", pattern=VARIABLE_PATTERN, description="Variable whose parameter names are used."
    )
    rel_tol: float = Field(
        1e-6, ge=0, le=1, description="Relative tolerance on each parameter's change."
    )
    steps: int = Field(
        1,
        ge=1,
        le=MAX_STEPS,
        description="Steps of the update probe, each from gradients of its own. SGD's first "
        "step with momentum is plain SGD's: 2 or more tells momentum (and its dampening) "
        "apart, for a task that asks for plain SGD.",
    )
