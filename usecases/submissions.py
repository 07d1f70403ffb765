"""Submissions once stored: read one (or wait for its result), list them, see its webhook
deliveries, grade it again.

A caller reads the submissions `access.readable` admits; any other is answered as
missing, so that nobody learns which ids exist in another course.
"""

from __future__ import annotations

import re
import time
from typing import Any

import anyio
from anyio.to_thread import run_sync
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Submission, SubmissionStatus, now
from services import catalog, queue, webhooks
from services.errors import NotFound
from services.keys import Principal
from usecases import access, views
from usecases.unit_of_work import Context

ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def visible_submission(session: Session, who: Principal, submission_id: str) -> Submission:
    row = session.get(Submission, submission_id) if ID_PATTERN.fullmatch(submission_id) else None
    if row is None or not access.may_read(who, row.course, row.student_id):
        raise NotFound(f"no submission {submission_id}")
    return row


def _row(ctx: Context, who: Principal, submission_id: str) -> Submission:
    with ctx.unit_of_work() as work:
        return visible_submission(work.session, who, submission_id)


def _status(ctx: Context, submission_id: str) -> str | None:
    with ctx.unit_of_work() as work:
        return work.session.scalar(select(Submission.status).where(Submission.id == submission_id))


def read(
    ctx: Context, who: Principal, submission_id: str, with_answer: bool = False
) -> dict[str, Any]:
    """The submission's view; `with_answer`: with what it sent (`answer`, views.answer)."""
    if not with_answer:
        return views.submission(_row(ctx, who, submission_id))
    with ctx.unit_of_work() as work:
        row = visible_submission(work.session, who, submission_id)
        spec = catalog.spec_by_id(work.session, row.task_version_id)
        return views.submission(row) | {"answer": views.answer(row, spec)}


async def wait(ctx: Context, who: Principal, submission_id: str, wait_s: float) -> dict[str, Any]:
    """The submission, as soon as it completes or after `wait_s` (at most the deployment's
    long-poll limit). Waiting holds neither a thread nor a database connection: each look
    is a short transaction of its own, between asynchronous sleeps."""
    row = await run_sync(_row, ctx, who, submission_id)
    started = time.monotonic()
    deadline = started + min(wait_s, ctx.settings.long_poll_max_s)
    status = row.status
    while status != SubmissionStatus.COMPLETED and time.monotonic() < deadline:
        # Most jobs finish within a second or two: look often then, rarely after. A look
        # reads the status alone; the row (its result) is read once, when it is complete.
        await anyio.sleep(0.05 if time.monotonic() - started < 2 else 0.2)
        status = await run_sync(_status, ctx, submission_id)
    if status != row.status:
        row = await run_sync(_row, ctx, who, submission_id)
    return views.submission(row)


def list_submissions(
    ctx: Context, who: Principal, task_id: str | None, student_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """The newest first, of those the caller may read (a student: only their own)."""
    scope = access.readable(who)
    query = select(Submission).order_by(Submission.created_at.desc()).limit(limit)
    if not scope.every_course:
        query = query.where(Submission.course == scope.course)
    student_id = scope.student_id or student_id
    if task_id:
        query = query.where(Submission.task_id == task_id)
    if student_id:
        query = query.where(Submission.student_id == student_id)
    with ctx.unit_of_work() as work:
        return [views.submission(row) for row in work.session.scalars(query)]


def deliveries(ctx: Context, who: Principal, submission_id: str) -> list[dict[str, Any]]:
    """The webhook deliveries of a submission the caller may read, and their state."""
    with ctx.unit_of_work() as work:
        row = visible_submission(work.session, who, submission_id)
        return [views.delivery(d) for d in webhooks.deliveries_of(work.session, row.id)]


def regrade(ctx: Context, who: Principal, submission_id: str) -> dict[str, Any]:
    """Grade the submission again (its course's staff): a new try, its tries counted anew."""
    access.require(access.may_act_as_staff(who))
    with ctx.unit_of_work() as work:
        row = visible_submission(work.session, who, submission_id)
        access.require(access.may_regrade(who, row.course))
        requeue(row)
        row.tries = 0
        work.enqueue(queue.grading(row.id, row.queue))
    return views.submission(row)


def requeue(row: Submission) -> None:
    """Make the row gradeable again (regrade, reaper, a retry): a new try with a new token."""
    row.status, row.attempt_token, row.enqueued_at = SubmissionStatus.QUEUED, None, now()
    row.started_at = row.deadline_at = row.heartbeat_at = row.claimed_by = None
