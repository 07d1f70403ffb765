"""Submissions: read, regrade, grade in the worker, store the one result (services/intake.py
accepts them).

The database row is the source of truth; a queue message carries only the id. Each
grading try gets a fresh `attempt_token`; only the try holding the current token may
finish the submission, so a redelivered or stale message cannot overwrite a newer
result. A running try heartbeats; while its heartbeat is fresh another message for the
same submission is a duplicate and does nothing, and once it stops (the worker died) the
reaper queues the submission again. An internal error is retried and, if it persists,
recorded without charging the student's attempt.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from core.settings import Settings
from db.models import AttemptCounter, Submission, TaskVersion, WebhookDelivery, aware, now
from graders.result import GradeResult, printable_data
from graders.spec import ChoiceTask, CodeTask
from sandbox.base import SandboxBackend
from services import catalog
from services.answers import Answer
from services.errors import NotFound
from services.grading import grade, internal_error
from services.keys import Principal

MAX_STUDENT_ID = 200
ID_PATTERN = re.compile(r"[0-9a-f]{32}")
MAX_RESULT_BYTES = 256 * 1024  # one stored result, as JSON
MAX_STORED_OUTPUT_CHARS = 64 * 1024  # the student's stdout and stderr, each, as stored
MAX_STORED_TEXT_CHARS = 8 * 1024  # an error, a check's message, a feedback line or a note


def attempts_left(session: Session, row: Submission) -> int | None:
    """Attempts the row's student has left at its task, in its course."""
    version_id = session.scalar(
        select(TaskVersion.id)
        .where(TaskVersion.task_key == row.task_key, TaskVersion.status == "ready")
        .order_by(TaskVersion.number.desc())
    )
    spec = catalog.spec_by_id(session, version_id) if version_id else None
    if spec is None or spec.max_attempts is None:
        return None
    counter = session.get(AttemptCounter, (row.task_id, row.course or "", row.student_id))
    return max(0, spec.max_attempts - (counter.used if counter else 0))


def get(session: Session, who: Principal, submission_id: str) -> Submission:
    row = session.get(Submission, submission_id) if ID_PATTERN.fullmatch(submission_id) else None
    if row is None or not can_see(who, row):
        raise NotFound(f"no submission {submission_id}")
    return row


def status_of(session: Session, submission_id: str) -> str | None:
    """The submission's status alone (for a long poll whose caller `get` already admitted)."""
    return session.scalar(select(Submission.status).where(Submission.id == submission_id))


def can_see(who: Principal, row: Submission) -> bool:
    if who.role == "admin":
        return True
    if who.role == "student":
        return row.student_id == who.student_id and row.course == who.course
    return row.course == who.course


def list_for(
    session: Session, who: Principal, task_id: str | None, student_id: str | None, limit: int
) -> list[Submission]:
    query = select(Submission).order_by(Submission.created_at.desc()).limit(limit)
    if who.role == "student":
        student_id = who.student_id
    if who.role != "admin":
        query = query.where(Submission.course == who.course)
    if task_id:
        query = query.where(Submission.task_id == task_id)
    if student_id:
        query = query.where(Submission.student_id == student_id)
    return list(session.scalars(query))


def public(row: Submission, attempts_left_: int | None = None) -> dict[str, Any]:
    """The submission as its readers see it. Results are stored printable; the stored
    result's texts are made printable again here, so that a row whatever wrote it (an
    older version, a hand repair) is always served."""
    out: dict[str, Any] = {
        "id": row.id, "task_id": row.task_id, "student_id": row.student_id, "status": row.status,
        "created_at": aware(row.created_at).isoformat(),
        "finished_at": aware(row.finished_at).isoformat() if row.finished_at else None,
    }  # fmt: skip
    if attempts_left_ is not None:
        out["attempts_left"] = attempts_left_
    if row.status == "completed" and row.result is not None:
        out |= {
            "outcome": row.outcome,
            "score": row.score,
            "max_score": row.max_score,
            "charged": row.charged,
            "result": printable_data(row.result),
        }
    return out


def requeue(session: Session, row: Submission) -> None:
    """Make the row gradeable again (regrade, reaper): a new try with a new token."""
    row.status, row.attempt_token, row.enqueued_at = "queued", None, now()
    row.started_at = row.deadline_at = row.heartbeat_at = row.claimed_by = None


def regrade(session: Session, who: Principal, row: Submission) -> None:
    catalog.require_staff(who, row.course)
    requeue(session, row)
    row.tries = 0


def regrade_version(session: Session, who: Principal, version: TaskVersion) -> list[Submission]:
    """Queue every submission graded by `version` again; each goes back on its own queue."""
    catalog.require_staff(who, version.task.course)
    rows = list(session.scalars(select(Submission).where(Submission.task_version_id == version.id)))
    for row in rows:
        requeue(session, row)
        row.tries = 0
    return rows


# --- the worker's side --------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    submission_id: str
    token: str
    spec: CodeTask | ChoiceTask
    version: TaskVersion
    answer: Answer


def heartbeat_interval_s(settings: Settings) -> float:
    """Several heartbeats fit in the grace, so one late write never makes a live try look dead."""
    return max(0.2, min(5.0, settings.stuck_grace_s / 4))


def _held_by_live_try(row: Submission, settings: Settings, at: datetime) -> bool:
    limit = at - timedelta(seconds=settings.stuck_grace_s)
    beat, deadline = aware(row.heartbeat_at or row.started_at), aware(row.deadline_at)
    return (
        row.status == "running"
        and beat is not None
        and beat >= limit
        and (deadline is None or deadline >= limit)
    )


def claim(session: Session, submission_id: str, settings: Settings) -> Claim | None:
    """Mark the submission running under a fresh token; None when there is nothing to do
    (completed, unknown, or held by a try that is still alive: this message is a duplicate)."""
    row = session.get(Submission, submission_id, with_for_update=True)
    if row is None or row.status == "completed" or _held_by_live_try(row, settings, now()):
        return None
    version = session.get(TaskVersion, row.task_version_id)
    spec = catalog.spec_of(version)
    row.status, row.attempt_token, row.tries = "running", secrets.token_hex(16), row.tries + 1
    row.started_at = row.heartbeat_at = now()
    row.claimed_by = f"{socket.gethostname()}:{os.getpid()}"[:200]
    budget = spec.limits.time_limit_s + 120 if isinstance(spec, CodeTask) else 10
    row.deadline_at = row.started_at + timedelta(seconds=budget)
    blanks = {int(k): v for k, v in row.blanks.items()} if row.blanks else None
    return Claim(
        row.id,
        row.attempt_token,
        spec,
        version,
        Answer(code=row.code, blanks=blanks, choice=row.choice),
    )


def heartbeat(session: Session, claim_: Claim) -> bool:
    """Say this try is alive; False when it is no longer the current one."""
    done = session.execute(
        update(Submission)
        .where(
            Submission.id == claim_.submission_id,
            Submission.attempt_token == claim_.token,
            Submission.status == "running",
        )
        .values(heartbeat_at=now())
    )
    return done.rowcount == 1


def run_claim(claim_: Claim, backend: SandboxBackend | None, settings: Settings) -> GradeResult:
    """Grade outside any transaction (it takes seconds)."""
    spec = claim_.spec
    if isinstance(spec, ChoiceTask):
        return grade(spec, claim_.answer, backend=None, expected=None, settings=settings)
    expected = catalog.expected_of(claim_.version)
    if backend is None or expected is None:
        return internal_error(spec, "no sandbox or no expected facts on this worker", backend)
    return grade(spec, claim_.answer, backend=backend, expected=expected, settings=settings)


def finish(session: Session, claim_: Claim, result: GradeResult, settings: Settings) -> str:
    """Store the result if this try is still the current one. Returns what happened:
    `stored`, `retry` (internal error, tries left: the row is queued again) or `stale`."""
    row = session.get(Submission, claim_.submission_id, with_for_update=True)
    if row is None or row.status != "running" or row.attempt_token != claim_.token:
        return "stale"
    if result.retryable and row.tries < settings.grading_max_retries:
        requeue(session, row)
        return "retry"
    row.status, row.finished_at, row.attempt_token = "completed", now(), None
    row.outcome, row.score, row.max_score = result.outcome, result.score, result.max_score
    row.result = bounded(result)
    if result.retryable and row.charged:
        row.charged = False  # our failure: give the attempt back
        counter = session.get(
            AttemptCounter, (row.task_id, row.course or "", row.student_id), with_for_update=True
        )
        if counter is not None and counter.used > 0:
            counter.used -= 1
    if row.callback_url:
        session.add(
            WebhookDelivery(submission_id=row.id, url=row.callback_url, next_attempt_at=now())
        )
    return "stored"


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit:,} more characters not stored]"


def bounded(result: GradeResult) -> dict[str, Any]:
    """The result as stored and served: long texts clipped, so one row stays under
    MAX_RESULT_BYTES whatever the answer printed or the checks said."""
    data = result.model_dump(mode="json")
    if len(json.dumps(data)) <= MAX_RESULT_BYTES:
        return data
    data["stdout"] = _clip(data["stdout"], MAX_STORED_OUTPUT_CHARS)
    data["stderr"] = _clip(data["stderr"], MAX_STORED_OUTPUT_CHARS)
    data["error"] = _clip(data["error"], MAX_STORED_TEXT_CHARS)
    for check in data["checks"]:
        check["message"] = _clip(check["message"], MAX_STORED_TEXT_CHARS)
    for key in ("feedback", "notes"):
        data[key] = [_clip(line, MAX_STORED_TEXT_CHARS) for line in data[key][:20]]
    data["notes"].append("parts of this result were too long to store and were shortened")
    while len(json.dumps(data)) > MAX_RESULT_BYTES and data["checks"]:
        data["checks"] = data["checks"][: len(data["checks"]) // 2]
        data["notes"][-1] = "parts of this result (texts, some checks) were too long to store"
    return data


def stuck(
    session: Session,
    settings: Settings,
    broker_waiting: dict[str, int] | None,
    at: datetime | None = None,
) -> list[str]:
    """Submissions the reaper must queue again: running under a try that stopped heartbeating
    or ran past its deadline, and queued ones whose message is gone.

    A queued row older than the grace counts as lost only when its broker queue holds fewer
    messages than the database has queued rows for it (the oldest go first); with the broker
    unknown (`None`) every such row does. A long backlog is therefore not sent twice.
    """
    at = at or now()
    limit = at - timedelta(seconds=settings.stuck_grace_s)
    running = select(Submission.id).where(
        Submission.status == "running",
        or_(
            Submission.deadline_at < limit,
            func.coalesce(Submission.heartbeat_at, Submission.started_at) < limit,
        ),
    )
    ids = list(session.scalars(running))
    queued = dict(
        session.execute(
            select(Submission.queue, func.count())
            .where(Submission.status == "queued")
            .group_by(Submission.queue)
        ).all()
    )
    for name, count in queued.items():
        lost = count if broker_waiting is None else count - broker_waiting.get(name, 0)
        if lost <= 0:
            continue
        ids += session.scalars(
            select(Submission.id)
            .where(
                Submission.status == "queued",
                Submission.queue == name,
                Submission.enqueued_at < limit,
            )
            .order_by(Submission.enqueued_at)
            .limit(lost)
        )
    requeued = []
    for sid in ids:  # look again under the row lock: a try may have claimed or beaten since
        row = session.get(Submission, sid, with_for_update=True)
        if row is None or row.status == "completed" or _held_by_live_try(row, settings, at):
            continue
        requeue(session, row)
        requeued.append(sid)
    return requeued


def queue_depth(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Submission.status, func.count()).group_by(Submission.status)
    ).all()
    return {status: count for status, count in rows}
