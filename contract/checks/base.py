"""What every check type's parameters share, and what both halves of a check use: the
spec base model, the name and path patterns, the observers' error, the text helpers.

Standard library and pydantic only: the host validates specs with it, the sandbox
parses the job's checks with it.
"""

from __future__ import annotations

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


class ObservationError(Exception):
    """Raised by an observer when the scope does not hold what the check looks at.

    Its message is shown to the student, so it says what was expected and what was found;
    its `reason` (one of the host's `COMMON_REASONS` or the check type's `REASONS`, in
    graders/checks/) is what triggers name.
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
