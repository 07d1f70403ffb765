"""The result of grading one answer: the object every surface (CLI, API, webhook) returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RESULT_SCHEMA_VERSION = 1

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

    name: str
    passed: bool
    points: float
    max_points: float
    message: str


class GradeResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = RESULT_SCHEMA_VERSION
    task_id: str
    task_version: str = Field(description="Digest of the spec version that graded the answer.")
    outcome: Outcome
    score: float
    max_score: float
    checks: list[CheckResult] = Field(default_factory=list)
    feedback: list[str] = Field(
        default_factory=list, description="Common-mistake feedback the answer's behaviour matched."
    )
    error: str | None = Field(None, description="Compile or runtime error, trimmed to the answer.")
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    backend: str = Field("", description="Sandbox backend that ran the answer.")
    isolated: bool = Field(True, description="False when a weaker, development backend ran it.")
    notes: list[str] = Field(default_factory=list, description="How the run went, for the record.")

    @property
    def retryable(self) -> bool:
        return self.outcome in RETRYABLE_OUTCOMES
