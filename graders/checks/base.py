"""What every judge module shares: the verdict, the parsed facts and their base model, the
reasons common to every check type.

It runs on the host only (the sandbox never imports `graders`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict


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
    "unusable": "the model cannot be trained or read as it is: it contains itself, a weight "
    "was made under torch.inference_mode() or shares memory between its own elements, or a "
    "lazy layer has no parameters yet",
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
