"""/v1/submissions: submit an answer, read its status and result, regrade, see webhook deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from api import errors
from api.deps import ContextDep, KeyDep, PrincipalDep
from api.responses import PrintableJSONResponse
from api.schemas import SubmissionIn
from usecases import submissions, views
from usecases.submitting import MAX_IDEMPOTENCY_KEY, Posted

router = APIRouter(
    prefix="/v1/submissions", tags=["submissions"], responses=errors.documented(401, 422, 503)
)


SUBMISSION_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SubmissionIn.model_json_schema()}},
    }
}


@router.post(
    "",
    status_code=202,
    openapi_extra=SUBMISSION_BODY,
    responses={
        202: {"description": "Accepted: the new submission, queued for grading."},
        200: {
            "description": "The submission first sent with this `Idempotency-Key` and body.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **errors.documented(
            (403, "The key may not submit (an instructor's), or not as this student."),
            (404, "No such task, or one the key's course cannot see."),
            (
                409,
                "The student's attempts are used up, the task is archived or not ready, or "
                "the `Idempotency-Key` was already used with another body (task, student, "
                "answer or callback).",
            ),
            (
                413,
                "The body is over `GRADER_MAX_REQUEST_BYTES` or the code over "
                "`GRADER_MAX_CODE_BYTES`.",
            ),
        ),
    },
)
async def submit(
    request: Request,
    key: KeyDep,
    idempotency_key: Annotated[
        str | None, Header(description=f"At most {MAX_IDEMPOTENCY_KEY} characters.")
    ] = None,
) -> PrintableJSONResponse:
    """Accept an answer for grading: 202 with its id and the attempts left (200 with the
    first submission when the `Idempotency-Key` was seen before with the same body; 409
    when it was seen with another).

    The hot path of the API: the key is checked, the body parsed, the attempt counted and
    the row stored with the submissions posted at the same moment, in one transaction
    (usecases/group_commit.py); each is judged on its own.
    """
    posted = Posted(key, await request.body(), idempotency_key)
    accepted = await request.app.state.group_commit.submit(posted)
    return PrintableJSONResponse(
        views.submission(accepted.row, accepted.attempts_left),
        status_code=202 if accepted.created else 200,
    )


@router.get("/{submission_id}", responses=errors.documented(404))
async def get_submission(
    submission_id: str, who: PrincipalDep, ctx: ContextDep,
    wait_s: Annotated[float, Query(ge=0, description="Wait up to this long for the result.")] = 0,
) -> dict:  # fmt: skip
    """The submission; with `wait_s`, returns as soon as it completes (a long poll)."""
    return await submissions.wait(ctx, who, submission_id, wait_s)


@router.get("")
def list_submissions(
    who: PrincipalDep, ctx: ContextDep, task_id: str | None = None, student_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict]:  # fmt: skip
    return submissions.list_submissions(ctx, who, task_id, student_id, limit)


@router.post("/{submission_id}/regrade", status_code=202, responses=errors.documented(403, 404))
def regrade(submission_id: str, who: PrincipalDep, ctx: ContextDep) -> dict:
    return submissions.regrade(ctx, who, submission_id)


@router.get("/{submission_id}/webhooks", responses=errors.documented(404))
def deliveries(submission_id: str, who: PrincipalDep, ctx: ContextDep) -> list[dict]:
    return submissions.deliveries(ctx, who, submission_id)
