"""/v1/submissions: submit an answer, read its status and result, regrade, see webhook deliveries."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, SessionDep, SettingsDep, StaffDep
from api.schemas import SubmissionIn
from core.settings import Settings
from db.models import Submission
from db.session import session_scope
from services import queue, submissions, webhooks
from services.errors import Unavailable
from services.keys import Principal

router = APIRouter(prefix="/v1/submissions", tags=["submissions"])


@router.post("", status_code=202)
def submit(
    body: SubmissionIn,
    response: Response,
    who: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict:
    """Accept an answer for grading; 202 with its id and the attempts left."""
    depth = submissions.queue_depth(session).get("queued", 0)
    if depth >= settings.max_queue_length:
        raise Unavailable(f"{depth} submissions are waiting; try again shortly", retry_after_s=10)
    new = submissions.NewSubmission(
        body.task_id, body.student_id, body.code, body.blanks, body.choice, body.callback_url
    )
    row, created = submissions.create(session, who, new, idempotency_key, settings)
    session.commit()
    if created:
        queue.grade(settings, row.id, row.queue)
    else:
        response.status_code = 200
    return submissions.public(row, submissions.attempts_left(session, row))


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
    while row.status != "completed" and time.monotonic() < deadline:
        # Most jobs finish within a second or two: look often then, rarely after.
        await asyncio.sleep(0.05 if time.monotonic() - started < 2 else 0.2)
        row = await run_in_threadpool(_fresh, settings, who, submission_id)
    return submissions.public(row)


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
