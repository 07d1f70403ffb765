"""The result of grading one answer: the object every surface (CLI, API, webhook) returns.

Its texts carry what an answer printed or named; each is made printable (valid UTF-8,
no control characters) when the result is built, so any result can be stored and served.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from contract.checks.training_loop import MAX_BATCHES

RESULT_SCHEMA_VERSION = 1

# Lone surrogates (no UTF-8 encoding exists for them; JSON's "\udc80" escape makes one) and
# control characters other than tab, newline and carriage return.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str) -> str:
    """`text` with each lone surrogate and control character written as a `\\uXXXX` escape:
    always valid UTF-8 (storable, servable), and it still shows what the answer wrote."""
    return _UNPRINTABLE.sub(_escape, text)


def printable_data(value: Any, *, unique_keys: bool = False) -> Any:
    """JSON-like data with every string (keys too) made `printable`. With `unique_keys`, two
    keys of one mapping that escaping would make equal raise ValueError instead of merging."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = printable(key) if isinstance(key, str) else key
            if unique_keys and name in out:
                raise ValueError(f"two keys read {name[:100]!r} once made printable")
            out[name] = printable_data(item, unique_keys=unique_keys)
        return out
    if isinstance(value, list | tuple):
        items = []
        for item in value:  # a loop, not a comprehension: one frame per level of nesting
            items.append(printable_data(item, unique_keys=unique_keys))
        return items
    return value


Text = Annotated[str, AfterValidator(printable)]

Outcome = Literal[
    "passed",
    "failed",
    "compile_error",
    "runtime_error",
    "time_limit",
    "memory_limit",
    "output_limit",
    "internal_error",
]
# Outcomes that are our fault: retried, never charged to a student's attempts.
RETRYABLE_OUTCOMES: frozenset[str] = frozenset({"internal_error"})


class CheckResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text
    passed: bool
    points: float
    max_points: float
    message: Text
    reasons: list[Text] = Field(
        default_factory=list,
        description="What a failed check found, as codes of its type (mistake triggers name them).",
    )


def _finite(values: list[float | None]) -> list[float | None]:
    return [v if v is not None and math.isfinite(v) else None for v in values]


Curve = Annotated[list[float | None], Field(max_length=MAX_BATCHES), AfterValidator(_finite)]


class LossCurve(BaseModel):
    """The loss per iteration of a training loop, for display: no score is made from it."""

    model_config = ConfigDict(extra="forbid")

    answer: Curve = Field(
        description="The loss each backward() of the answer's epoch started from, in order; "
        "null where it could not be read or was not finite."
    )
    reference: Curve = Field(
        default_factory=list,
        description="The same for a correct run (the reference solution at validation); "
        "empty when the task version holds none.",
    )


class GradeResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = RESULT_SCHEMA_VERSION
    task_id: Text
    task_version: Text = Field(description="Digest of the spec version that graded the answer.")
    outcome: Outcome
    score: float
    max_score: float
    checks: list[CheckResult] = Field(default_factory=list)
    feedback: list[Text] = Field(
        default_factory=list, description="Common-mistake feedback the answer's behaviour matched."
    )
    mistakes: list[Text] = Field(
        default_factory=list,
        description="The ids of the task's mistakes that `feedback` tells, in the same order.",
    )
    error: Text | None = Field(None, description="Compile or runtime error, trimmed to the answer.")
    stdout: Text = ""
    stderr: Text = ""
    duration_s: float = 0.0
    backend: Text = Field("", description="Sandbox backend that ran the answer.")
    isolated: bool = Field(True, description="False when a weaker, development backend ran it.")
    notes: list[Text] = Field(default_factory=list, description="How the run went, for the record.")
    loss_curve: LossCurve | None = Field(
        None, description="A training task's loss per iteration, beside a correct run's."
    )

    @property
    def retryable(self) -> bool:
        return self.outcome in RETRYABLE_OUTCOMES
