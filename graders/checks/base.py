"""What every check module shares: the spec base model, the verdict and observed facts.

A check module holds both halves of one check type: `observe` (and optionally `prepare`)
run inside the sandbox with the student's scope; `judge` runs on the host and sees only
parsed facts. This file imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Python identifiers and dotted module paths ("fc", "classifier.1", "layer4.1.conv2").
VARIABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MODULE_PATH_PATTERN = r"^([A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64}){0,15})?$"
MAX_NAMES = 4096
# The key of the checks' shared state under which `prepare` lists the namespaces it
# installed where the answer can reach them (instrumentation): held unchanged by the harness.
PROTECTED = "protected"


class CheckBase(BaseModel):
    """Fields every check in a spec has, whatever its type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=NAME_PATTERN,
        description="Unique id of the check within the task, used by mistake triggers.",
    )
    points: float = Field(1.0, gt=0, le=1000, description="Points awarded when the check passes.")
    feedback: str = Field(
        "",
        max_length=2000,
        description="Shown to the student, after the check's own message, when it fails.",
    )
    hidden: bool = Field(
        False, description="Hide this check's parameters from the public view of the task."
    )


class FactsBase(BaseModel):
    """Facts are untrusted data: unknown fields are an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Observed:
    """One check's parsed facts and the tensors it exported (numpy, read by safetensors)."""

    facts: Any
    tensors: Mapping[str, np.ndarray] = field(default_factory=dict)


# What a judge found, as codes a task's mistake triggers name ("learning-rate:above"):
# every check type's module declares its own in `REASONS` (code -> what it means); these
# belong to every type. A verdict's reasons name what was measured, never how the answer
# was spelt, so a mistake is told exactly when the answer made it.
COMMON_REASONS: dict[str, str] = {
    "missing": "a variable or layer the check reads does not exist",
    "wrong-kind": "a variable or layer is another kind of object (a function, not a model)",
    "tampered": "what the check reads was replaced or changed by the answer (or torch was)",
    "unobservable": "the check could not read what it looks at (the message says why)",
    "not-observed": "the run ended before this check was observed",
}
REASON_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    message: str
    reasons: frozenset[str] = frozenset()

    @classmethod
    def fail(cls, message: str, *reasons: str) -> Verdict:
        return cls(False, message, frozenset(reasons))


class ObservationError(Exception):
    """Raised by an observer when the scope does not hold what the check looks at.

    Its message is shown to the student, so it says what was expected and what was found;
    its `reason` (one of COMMON_REASONS or the module's REASONS) is what triggers name.
    """

    reason = "unobservable"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


def preview(names: list[str] | tuple[str, ...] | set[str], limit: int = 4) -> str:
    """Up to `limit` names in a stable order, then how many more: "a, b, c, ... (+59 more)"."""
    ordered = sorted(names) if isinstance(names, set) else list(names)
    shown = ", ".join(ordered[:limit])
    extra = len(ordered) - limit
    return f"{shown}, ... (+{extra} more)" if extra > 0 else shown


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
