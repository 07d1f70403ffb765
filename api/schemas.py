"""Public request bodies and the error body. Other responses are plain dicts built by the use
cases' public views (usecases/views.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from usecases.admission import NewSubmission


def _no_null_byte(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a null byte")
    return value


Text = Annotated[str, AfterValidator(_no_null_byte)]


class SubmissionIn(BaseModel):
    """Null bytes are refused in every field: no answer needs one and PostgreSQL cannot store them."""

    model_config = ConfigDict(extra="forbid")

    task_id: Text = Field(min_length=1, max_length=64)
    student_id: Text = Field(min_length=1, max_length=200)
    code: Text | None = Field(None, description="The answer's Python code.")
    blanks: dict[int, Text] | None = Field(
        None, description="Blank number to option letter or code."
    )
    choice: Text | None = Field(
        None, max_length=16, description="Option letter, for a multiple-choice task."
    )
    callback_url: Text | None = Field(
        None, max_length=2000, description="Receives the signed result."
    )


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student_id: Text = Field(
        min_length=1, max_length=200, description="The learner, as the LMS names them."
    )
    task_ids: list[Annotated[Text, Field(min_length=1, max_length=64)]] | None = Field(
        None,
        max_length=200,
        description="The tasks of the learner's set; default: every task of the course.",
    )
    expires_in_s: int | None = Field(
        None, ge=1, description="How long the link may be opened; default `GRADER_LINK_TTL_S`."
    )


class LinkOut(BaseModel):
    url: str = Field(description="Opened once, it starts the learner's session in the pages.")
    expires_at: str = Field(description="When the link stops working (ISO 8601, UTC).")


class ErrorDetail(BaseModel):
    code: str = Field(
        description="What went wrong, for programs: `unauthorized`, `forbidden`, `not_found`, "
        "`method_not_allowed`, `request_timeout`, `conflict`, `too_large`, `invalid_input`, "
        "`unavailable`."
    )
    message: str = Field(description="What was expected and what was found, for people.")


class ErrorBody(BaseModel):
    """Every error the API answers (4xx, and 503) has this body."""

    error: ErrorDetail


def parse_submission(raw: bytes) -> NewSubmission:
    """A POST /v1/submissions body, checked as FastAPI checks a declared one (the group
    commit reads it only once the key has authenticated)."""
    try:
        body = SubmissionIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None
    return NewSubmission(
        body.task_id, body.student_id, body.code, body.blanks, body.choice, body.callback_url
    )
