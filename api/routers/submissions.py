"""/v1/submissions: submit an answer, read its status and result, regrade, see webhook deliveries."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, SessionDep, SettingsDep, StaffDep, api_key_of
from api.intake import MAX_IDEMPOTENCY_KEY, Posted
from api.responses import PrintableJSONResponse
from api.schemas import SubmissionIn
from core.settings import Settings
from db.models import Submission
from db.session import session_scope
from services import queue, submissions, webhooks
from services.keys import Principal

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
    (api/intake.py); each is judged on its own.
    """
    posted = Posted(api_key_of(authorization, x_api_key), await request.body(), idempotency_key)
    accepted = await request.app.state.intake.accept(posted)
    return PrintableJSONResponse(
        submissions.public(accepted.row, accepted.attempts_left),
        status_code=202 if accepted.created else 200,
    )


@router.get("/{submission_id}")
async def get_submission(
    submission_id: str, who: PrincipalDep, session: SessionDep, settings: SettingsDep,
    wait_s: Annotated[float, Query(ge=0, description="Wait up to this long for the result.")] = 0,
) -> dict:  # fmt: skip
    """The submission; with `wait_s`, returns as soon as it completes (a long poll).

    Waiting holds neither a worker thread nor a database connection: each look is a short
    session of its own, between asynchronous sleeps.
    """
    row = await run_in_threadpool(submissions.get, session, who, submission_id)
    await run_in_threadpool(session.close)
    started = time.monotonic()
    deadline = started + min(wait_s, settings.long_poll_max_s)
    status = row.status
    while status != "completed" and time.monotonic() < deadline:
        # Most jobs finish within a second or two: look often then, rarely after. A look
        # reads the status alone; the row (its result) is read once, when it is complete.
        await asyncio.sleep(0.05 if time.monotonic() - started < 2 else 0.2)
        status = await run_in_threadpool(_status, settings, submission_id)
    if status != row.status:
        row = await run_in_threadpool(_fresh, settings, who, submission_id)
    return submissions.public(row)


def _status(settings: Settings, submission_id: str) -> str | None:
    with session_scope(settings.effective_database_url) as session:
        return submissions.status_of(session, submission_id)


def _fresh(settings: Settings, who: Principal, submission_id: str) -> Submission:
    with session_scope(settings.effective_database_url) as session:
        return submissions.get(session, who, submission_id)


@router.get("")
def list_submissions(
    who: PrincipalDep, session: SessionDep, task_id: str | None = None, student_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict]:  # fmt: skip
    return [
        submissions.public(r)
        for r in submissions.list_for(session, who, task_id, student_id, limit)
    ]


@router.post("/{submission_id}/regrade", status_code=202)
def regrade(submission_id: str, who: StaffDep, session: SessionDep, settings: SettingsDep) -> dict:
    row = submissions.get(session, who, submission_id)
    submissions.regrade(session, who, row)
    session.commit()
    queue.grade(settings, row.id, row.queue)
    return submissions.public(row)


@router.get("/{submission_id}/webhooks")
def deliveries(submission_id: str, who: PrincipalDep, session: SessionDep) -> list[dict]:
    row = submissions.get(session, who, submission_id)
    return [webhooks.public(d) for d in webhooks.deliveries_of(session, row.id)]
