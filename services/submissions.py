"""Submissions: accept (attempt limits, idempotency), grade in the worker, store the one result.

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
import math
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.settings import Settings
from db.models import AttemptCounter, Submission, TaskVersion, WebhookDelivery, aware, now
from graders.errors import AnswerError
from graders.result import GradeResult
from graders.spec import ChoiceTask, CodeTask
from sandbox.base import SandboxBackend
from services import catalog
from services.answers import Answer, check_code, fill_blanks
from services.errors import Conflict, Forbidden, InvalidInput, NotFound, TooLarge
from services.grading import grade, internal_error
from services.keys import Principal
from services.webhooks import check_callback_url

MAX_STUDENT_ID = 200
ID_PATTERN = re.compile(r"[0-9a-f]{32}")
MAX_RESULT_BYTES = 256 * 1024  # one stored result, as JSON
MAX_STORED_OUTPUT_CHARS = 64 * 1024  # the student's stdout and stderr, each, as stored
MAX_STORED_TEXT_CHARS = 8 * 1024  # an error, a check's message, a feedback line or a note


@dataclass(frozen=True)
class NewSubmission:
    task_id: str
    student_id: str
    code: str | None = None
    blanks: dict[int, str] | None = None
    choice: str | None = None
    callback_url: str | None = None


def _validate_answer(spec: CodeTask | ChoiceTask, new: NewSubmission, settings: Settings) -> None:
    given = [v is not None for v in (new.code, new.blanks, new.choice)]
    if sum(given) != 1:
        raise InvalidInput("send exactly one of code, blanks or choice")
    if isinstance(spec, ChoiceTask):
        if new.choice is None:
            raise InvalidInput(f"task {spec.id} is multiple choice: send `choice`")
        return
    if new.choice is not None:
        raise InvalidInput(f"task {spec.id} is graded on code: send `code` or `blanks`")
    try:
        if new.code is not None:
            if len(new.code.encode("utf-8", errors="surrogatepass")) > settings.max_code_bytes:
                raise TooLarge(f"the code is larger than {settings.max_code_bytes:,} bytes")
            check_code(new.code, settings.max_code_bytes)
        else:
            check_code(fill_blanks(spec, new.blanks), settings.max_code_bytes)
    except AnswerError as exc:
        raise InvalidInput(str(exc)) from None


@dataclass(frozen=True)
class Accepted:
    row: Submission
    created: bool  # False: the idempotency key's first submission, returned again
    attempts_left: int | None


def create(
    session: Session,
    who: Principal,
    new: NewSubmission,
    idempotency_key: str | None,
    settings: Settings,
) -> Accepted:
    """Accept a submission: count the attempt and store the row, in the caller's transaction.

    Four statements on the way of a new submission (task lookup, attempt count, insert, and
    the idempotency lookup when a key is sent); the spec comes from the catalog's cache.
    """
    if idempotency_key is not None:
        existing = session.scalar(
            select(Submission).where(
                Submission.client_key_id == who.key_id,
                Submission.idempotency_key == idempotency_key,
            )
        )
        if existing is not None:
            return Accepted(existing, False, attempts_left(session, existing))
    if not new.student_id or len(new.student_id) > MAX_STUDENT_ID:
        raise InvalidInput(f"student_id must be 1 to {MAX_STUDENT_ID} characters")
    if who.role == "student" and new.student_id != who.student_id:
        raise Forbidden("a student may only submit as themselves")
    if who.role == "instructor":
        raise Forbidden("instructors do not submit answers; use an lms or student key")
    task = catalog.submittable(session, new.task_id, who)
    spec = task.spec
    _validate_answer(spec, new, settings)
    if new.callback_url is not None:
        check_callback_url(new.callback_url, settings)
    course = task.course or who.course or ""
    used = count_attempt(session, task.task_id, course, new.student_id, spec.max_attempts)
    if used is None:
        raise Conflict(
            f"no attempts left: {new.student_id} has used all {spec.max_attempts} attempts at {task.task_id}"
        )
    row = Submission(
        task_id=task.task_id, task_version_id=task.version_id, course=course or None,
        student_id=new.student_id, client_key_id=who.key_id, idempotency_key=idempotency_key,
        code=new.code, blanks={str(k): v for k, v in new.blanks.items()} if new.blanks else None,
        choice=new.choice, callback_url=new.callback_url, queue=queue_for(spec, settings),
    )  # fmt: skip
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # the same idempotency key sent concurrently: answer with that row
        session.rollback()  # the attempt counted above goes with it
        return create(session, who, new, idempotency_key, settings)
    left = None if spec.max_attempts is None else max(0, spec.max_attempts - used)
    return Accepted(row, True, left)


def count_attempt(
    session: Session, task_id: str, course: str, student_id: str, limit: int | None
) -> int | None:
    """Count one attempt in a single statement; the attempts used after it, or None (and
    nothing counted) when all `limit` are used. The upsert locks the counter's row, so
    concurrent submissions of one student are counted one after the other."""
    if limit is not None and limit <= 0:
        return None
    table = AttemptCounter.__table__
    insert_ = (
        postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    )
    statement = insert_(table).values(task_id=task_id, course=course, student_id=student_id, used=1)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.task_id, table.c.course, table.c.student_id],
        set_={"used": table.c.used + 1},
        where=table.c.used < limit if limit is not None else None,
    ).returning(table.c.used)
    return session.execute(statement).scalar()


def queue_for(spec: CodeTask | ChoiceTask, settings: Settings) -> str:
    if isinstance(spec, CodeTask) and (
        spec.limits.gpu == "required" or (spec.limits.gpu == "optional" and settings.gpu == "on")
    ):
        return "gpu"
    return "cpu"


def attempts_left(session: Session, row: Submission) -> int | None:
    """Attempts the row's student has left at its task, in its course."""
    version_id = session.scalar(
        select(TaskVersion.id)
        .where(TaskVersion.task_id == row.task_id, TaskVersion.status == "ready")
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
            "result": row.result,
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


class QueueGauge:
    """How many submissions wait, for the API's 503 above `max_queue_length`.

    Counting them on every POST would scan the queue exactly when it is long. The gauge
    counts at most once a second while the queue is under half the limit (adding what this
    process accepted since), and on every request above that, so the limit itself holds
    exactly; other API processes' acceptances within that second fall in the margin.
    """

    FRESH_S = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counted_at = -math.inf
        self._queued = 0

    def queued(self, session: Session, limit: int) -> int:
        with self._lock:
            estimate = self._queued
            fresh = time.monotonic() - self._counted_at < self.FRESH_S
        if fresh and estimate < limit // 2:
            return estimate
        waiting = select(Submission.id).where(Submission.status == "queued").limit(limit)
        counted = session.scalar(select(func.count()).select_from(waiting.subquery())) or 0
        with self._lock:
            self._queued, self._counted_at = counted, time.monotonic()
        return counted

    def accepted(self) -> None:
        with self._lock:
            self._queued += 1


_gauges: dict[str, QueueGauge] = {}


def queue_gauge(database_url: str) -> QueueGauge:
    return _gauges.setdefault(database_url, QueueGauge())


def queue_depth(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Submission.status, func.count()).group_by(Submission.status)
    ).all()
    return {status: count for status, count in rows}
