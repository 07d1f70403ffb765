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
- `type`: the class."""

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
