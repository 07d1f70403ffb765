"""Public request bodies. Responses are plain dicts built by the services' public views."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SubmissionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(min_length=1, max_length=64)
    student_id: str = Field(min_length=1, max_length=200)
    code: str | None = Field(None, description="The answer's Python code.")
    blanks: dict[int, str] | None = Field(
        None, description="Blank number to option letter or code."
    )
    choice: str | None = Field(
        None, max_length=16, description="Option letter, for a multiple-choice task."
    )
    callback_url: str | None = Field(
        None, max_length=2000, description="Receives the signed result."
    )
