"""`training_loop`: what one training epoch did, observed while it ran.

Before the student's code, `prepare` snapshots the data loader's batches, the model's
buffers and the optimizer's parameters, measures the loss on the batches, and instruments
three things: the data loader's iterator (each batch handed out), autograd's backward
(whether the optimizer's gradients were clean when it started, whether it raised, whether
it left the optimizer's parameters without gradients) and the optimizer's step hook
(whether there were gradients to apply). An iteration is a batch followed by a backward and
a step; a batch that feeds backward and step again (after a complete backward-then-step)
makes one more iteration of that batch. Batches taken without a step (a peek, an evaluation
pass) are not iterations, and not faults. The instrumentation sees which batches were
handed out, not which tensors fed a forward: a batch kept from a peek and trained on in
place of the loop's own is not told apart. Aspects, one per check:

- `final_weights`, the decisive one: the model's state after the epoch equals one correct
  epoch from the same start over the same batches, within a tolerance;
- `batches`: each batch of the epoch fed one backward and one step;
- `order`: in each iteration, backward ran on clean gradients, then step applied them;
- `loss_decrease`: the loss on the epoch's batches fell by at least `min_decrease_ratio` of
  what one correct epoch achieves. It is measured before and after the epoch alike (train
  mode, without gradients, with the buffers as they were before the epoch, which are then
  put back), so that only updates of the weights can lower it, not running statistics.

Every aspect's facts also carry `losses`: the value each `backward()` of the epoch started
from (up to `MAX_BATCHES` of them), read only from a loss of torch's own tensor type, with
torch function handling and Python dispatch off (no code of the answer's runs), for the
learner's page to draw beside a correct run's. No judge reads them: shown, never scored.

The three diagnostic aspects explain a failure; they never take points from a loop whose
weights are right. Every aspect's facts carry the final-weights comparison's inputs (the
state's summaries and the compared heads' values, up to `MAX_SHARED_VALUES`), and a
diagnostic aspect passes whenever that comparison, as the task's `final_weights` check
makes it, holds.

A failing verdict's reasons (`REASONS`) name what the facts show, one code per finding:
what the event log shows for `batches` and `order` (every iteration's finding, the message
naming the first), how the loss moved for `loss_decrease`, and for `final_weights` that the
weights differ and what else the facts show about them (the optimizer's settings, how far
its parameters moved, whether the running statistics moved).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.checks.base import MODULE_PATH_PATTERN, VARIABLE_PATTERN, CheckBase

TYPE = "training_loop"
MAX_EVENTS = 20_000
MAX_BATCHES = 1_000  # batches of the setup's data loader; losses recorded, one a backward()
# The prefix of a compared head's values as they were before the answer ran, exported beside
# its values after the epoch by the aspects that read the event log: how the weights moved.
START = "start:"
# The prefix of a buffer's values after the epoch, exported by final_weights for each buffer
# the epoch moved (up to `MAX_SHARED_VALUES` in all): running statistics are compared element
# by element, so that no rearrangement of them keeps its sums.
BUFFER = "buffer:"


class Params(CheckBase):
    type: Literal["training_loop"]
    aspect: Literal["batches", "order", "loss_decrease", "final_weights"]
    model: str = Field("model", pattern=VARIABLE_PATTERN)
    optimizer: str = Field("optimizer", pattern=VARIABLE_PATTERN)
    dataloader: str = Field("dataloader", pattern=VARIABLE_PATTERN)
    head: str = Field(
        "",
        pattern=MODULE_PATH_PATTERN,
        description="final_weights: module whose values are compared element-wise.",
    )
    min_decrease_ratio: float = Field(0.5, ge=0, le=1)
    rtol: float = Field(1e-4, ge=0, le=1, description="final_weights: relative tolerance.")
    atol: float = Field(1e-5, ge=0, le=1, description="final_weights: absolute tolerance.")
