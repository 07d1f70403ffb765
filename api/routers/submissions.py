"""/v1/submissions: submit an answer, read its status and result, regrade, see webhook deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from api.deps import ContextDep, PrincipalDep, api_key_of
from api.responses import PrintableJSONResponse
from api.schemas import SubmissionIn
from usecases import submissions, views
from usecases.submitting import MAX_IDEMPOTENCY_KEY, Posted

router = APIRouter(prefix="/v1/submissions", tags=["submissions"])


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
        200: {"description": "The submission first sent with this `Idempotency-Key`."},
    },
)
async def submit(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
    idempotency_key: Annotated[
        str | None, Header(description=f"At most {MAX_IDEMPOTENCY_KEY} characters.")
    ] = None,
) -> PrintableJSONResponse:
    """Accept an answer for grading: 202 with its id and the attempts left (200 with the
    first submission when the `Idempotency-Key` was seen before).

    The hot path of the API: the key is checked, the body parsed, the attempt counted and
    the row stored with the submissions posted at the same moment, in one transaction
    (usecases/group_commit.py); each is judged on its own.
    """
    posted = Posted(api_key_of(authorization, x_api_key), await request.body(), idempotency_key)
    accepted = await request.app.state.group_commit.submit(posted)
    return PrintableJSONResponse(
        views.submission(accepted.row, accepted.attempts_left),
        status_code=202 if accepted.created else 200,
    )


@router.get("/{submission_id}")
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


@router.post("/{submission_id}/regrade", status_code=202)
def regrade(submission_id: str, who: PrincipalDep, ctx: ContextDep) -> dict:
    return submissions.regrade(ctx, who, submission_id)


@router.get("/{submission_id}/webhooks")
def deliveries(submission_id: str, who: PrincipalDep, ctx: ContextDep) -> list[dict]:
    return submissions.deliveries(ctx, who, submission_id)
