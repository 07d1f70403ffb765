"""What the worker does, each a function of an id (worker/tasks.py only calls these): grade
a submission (claim, heartbeat, finish), self-test a spec version, deliver a webhook, reap
stuck work.

The database row is the source of truth; a queue message carries only the id. Each
grading try claims the row with a fresh `attempt_token`; only the try holding the current
token may finish it, so a redelivered or stale message cannot overwrite a newer result. A
running try heartbeats. A message that finds the row held by a try whose heartbeat is
still fresh comes back when that heartbeat would be stale (it is published again with a
countdown), and takes the row over if the try has died by then; so a grading process
killed mid-job is recovered by its own message, redelivered, with no reaper. The reaper
(`reap_when_due`, on a timer in every worker's main process, one turn per interval across
them all) queues again what no message will: rows whose every message was lost. An
internal error is retried and, if it persists, recorded without charging the student's
attempt.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.settings import Settings
from db.models import (
    AttemptCounter,
    DeliveryStatus,
    Submission,
    SubmissionStatus,
    TaskVersion,
    VersionStatus,
    WebhookDelivery,
    aware,
    now,
)
from db.session import serialize
from graders.facts import dump_facts
from graders.judge import Expected
from graders.result import GradeResult, printable
from graders.spec import ChoiceTask, CodeTask
from sandbox.errors import SandboxError
from services import catalog, queue, webhooks
from services.answers import Answer
from services.grading import grade, internal_error
from services.sandboxes import sweep_sandboxes, worker_backend
from services.validation import validate
from usecases import lti_grades
from usecases.submissions import requeue
from usecases.unit_of_work import Context

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 256 * 1024  # one stored result, as JSON
MAX_STORED_OUTPUT_CHARS = 64 * 1024  # the student's stdout and stderr, each, as stored
MAX_STORED_TEXT_CHARS = 8 * 1024  # an error, a check's message, a feedback line or a note
RETRY_COUNTDOWN_S = 2
REAPER_LOCK = 0x72656170  # two reapers never run at once (a reap slower than its interval)
VALIDATION_ALLOWANCE_S = 900  # a self-test runs many sandboxes; under load it takes minutes


# --- grading a submission ------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    submission_id: str
    token: str
    spec: CodeTask | ChoiceTask
    version: TaskVersion
    answer: Answer


def grade_submission(ctx: Context, submission_id: str) -> str:
    """Claim, grade (outside any transaction: it takes seconds) and finish the submission.
    A row held by a live try sends this message back for later (see `claim`)."""
    claimed = claim(ctx, submission_id, come_back=True)
    if claimed is None:
        return "nothing to do"
    with _heartbeat(ctx, claimed, heartbeat_interval_s(ctx.settings)):
        result = _grade(claimed, ctx.settings)
    status = finish(ctx, claimed, result)
    log.info("submission %s: %s (%s)", submission_id, status, result.outcome)
    return status


def heartbeat_interval_s(settings: Settings) -> float:
    """Several heartbeats fit in the grace, so one late write never makes a live try look dead."""
    return max(0.2, min(5.0, settings.stuck_grace_s / 4))


def _held_by_live_try(row: Submission, settings: Settings, at: datetime) -> bool:
    limit = at - timedelta(seconds=settings.stuck_grace_s)
    beat, deadline = aware(row.heartbeat_at or row.started_at), aware(row.deadline_at)
    return (
        row.status == SubmissionStatus.RUNNING
        and beat is not None
        and beat >= limit
        and (deadline is None or deadline >= limit)
    )


def _stale_in_s(row: Submission, settings: Settings, at: datetime) -> float:
    """Seconds until a live try's row may be taken over, should the try stop heartbeating now."""
    beat, deadline = aware(row.heartbeat_at or row.started_at), aware(row.deadline_at)
    held_until = min(beat, deadline) if deadline is not None else beat
    return max(0.0, (held_until - at).total_seconds() + settings.stuck_grace_s)


def claim(ctx: Context, submission_id: str, *, come_back: bool = False) -> Claim | None:
    """Mark the submission running under a fresh token; None when there is nothing to do
    now (completed, unknown, or held by a try whose heartbeat is fresh). With `come_back`,
    a message for a held row is sent again to arrive just after the heartbeat would be
    stale: if the try died (its process killed mid-job), that message takes the row over;
    if it lives, the message comes back again, until the row is completed."""
    settings = ctx.settings
    with ctx.unit_of_work() as work:
        row = work.session.get(Submission, submission_id, with_for_update=True)
        if row is None or row.status == SubmissionStatus.COMPLETED:
            return None
        at = now()
        if _held_by_live_try(row, settings, at):
            if come_back:
                countdown = _stale_in_s(row, settings, at) + heartbeat_interval_s(settings)
                work.enqueue(queue.grading(row.id, row.queue, countdown=round(countdown, 3)))
                log.info(
                    "submission %s is held by %s; this message comes back in %.1f s",
                    row.id, row.claimed_by, countdown,
                )  # fmt: skip
            return None
        version = work.session.get(TaskVersion, row.task_version_id)
        spec = catalog.spec_of(version)
        row.status, row.attempt_token = SubmissionStatus.RUNNING, secrets.token_hex(16)
        row.tries += 1
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


def heartbeat(ctx: Context, claimed: Claim) -> bool:
    """Say this try is alive; False when it is no longer the current one."""
    with ctx.unit_of_work() as work:
        done = work.session.execute(
            update(Submission)
            .where(
                Submission.id == claimed.submission_id,
                Submission.attempt_token == claimed.token,
                Submission.status == SubmissionStatus.RUNNING,
            )
            .values(heartbeat_at=now())
        )
        return done.rowcount == 1


@contextmanager
def _heartbeat(ctx: Context, claimed: Claim, interval_s: float) -> Iterator[None]:
    """Refresh the claim's heartbeat while grading, so nobody takes a live try for a dead one."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                if not heartbeat(ctx, claimed):
                    return  # superseded: the reaper or a regrade queued it again
            except SQLAlchemyError as exc:
                log.warning("heartbeat of submission %s failed: %s", claimed.submission_id, exc)

    thread = threading.Thread(target=beat, name=f"heartbeat-{claimed.submission_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval_s)


def _grade(claimed: Claim, settings: Settings) -> GradeResult:
    """Our failures (no engine, the sandbox broke, no expected facts) become a retryable
    internal error."""
    spec = claimed.spec
    if isinstance(spec, ChoiceTask):
        return grade(spec, claimed.answer, backend=None, expected=None, settings=settings)
    try:
        backend = worker_backend(settings)
    except SandboxError as exc:
        log.warning("no sandbox backend for submission %s: %s", claimed.submission_id, exc)
        return internal_error(
            spec, f"the sandbox is unavailable; this is not your fault ({exc})", None
        )
    expected = catalog.expected_of(claimed.version)
    if expected is None:
        return internal_error(spec, "no sandbox or no expected facts on this worker", backend)
    return grade(
        spec, claimed.answer, backend=backend, expected=expected, settings=settings,
        shared_setup=claimed.version.shared_setup,
    )  # fmt: skip


def finish(ctx: Context, claimed: Claim, result: GradeResult) -> str:
    """Store the result if this try is still the current one, and queue its webhooks.
    Returns what happened: `stored`, `retry` (internal error, tries left: the submission is
    queued again) or `stale`."""
    settings = ctx.settings
    with ctx.unit_of_work() as work:
        session = work.session
        row = session.get(Submission, claimed.submission_id, with_for_update=True)
        if (
            row is None
            or row.status != SubmissionStatus.RUNNING
            or row.attempt_token != claimed.token
        ):
            return "stale"
        if result.retryable and row.tries < settings.grading_max_retries:
            requeue(row)
            work.enqueue(queue.grading(row.id, row.queue, countdown=RETRY_COUNTDOWN_S))
            return "retry"
        row.status, row.finished_at, row.attempt_token = SubmissionStatus.COMPLETED, now(), None
        row.outcome, row.score, row.max_score = result.outcome, result.score, result.max_score
        row.result = bounded(result)
        if result.retryable and row.charged:
            row.charged = False  # our failure: give the attempt back
            counter = session.get(
                AttemptCounter,
                (row.task_id, row.course or "", row.student_id),
                with_for_update=True,
            )
            if counter is not None and counter.used > 0:
                counter.used -= 1
        if row.callback_url:
            session.add(
                WebhookDelivery(submission_id=row.id, url=row.callback_url, next_attempt_at=now())
            )
        pending = session.scalars(
            select(WebhookDelivery.id).where(
                WebhookDelivery.submission_id == row.id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
            )
        )
        work.enqueue(*(queue.delivery(delivery_id) for delivery_id in pending))
        work.enqueue(*lti_grades.passbacks_for(session, row))  # scores to LTI line items
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
    if len(json.dumps(data)) > MAX_RESULT_BYTES:
        data["loss_curve"] = None  # display only: it goes before any check does
    while len(json.dumps(data)) > MAX_RESULT_BYTES and data["checks"]:
        data["checks"] = data["checks"][: len(data["checks"]) // 2]
        data["notes"][-1] = "parts of this result (texts, some checks) were too long to store"
    return data


# --- self-tests, webhooks, the reaper ------------------------------------------------


def validate_version(ctx: Context, version_id: str) -> str:
    """Self-test a validating version: `ready` with its expected facts, or `invalid`; with
    the report either way. Runs outside any transaction (it takes minutes)."""
    with ctx.unit_of_work() as work:
        version = work.session.get(TaskVersion, version_id)
        if version is None or version.status != VersionStatus.VALIDATING:
            return "nothing to do"
        spec, shared_setup = catalog.spec_of(version), version.shared_setup
    report = validate(
        spec, backend=worker_backend(ctx.settings), settings=ctx.settings, shared_setup=shared_setup
    )
    with ctx.unit_of_work() as work:
        _record_self_test(work.session, version_id, report.ok, report.text(), report.expected)
    return "ready" if report.ok else "invalid"


def _record_self_test(
    session: Session, version_id: str, ok: bool, report: str, expected: Expected | None
) -> None:
    version = session.get(TaskVersion, version_id, with_for_update=True)
    if version is None or version.status != VersionStatus.VALIDATING:
        return
    version.status = VersionStatus.READY if ok else VersionStatus.INVALID
    version.report = printable(report)  # it quotes what the runs printed
    if ok and expected is not None:
        version.expected_manifest, version.expected_tensors = dump_facts(expected.facts)
        version.baseline_passing = sorted(expected.baseline_passing)


def deliver_webhook(ctx: Context, delivery_id: str) -> str:
    """Try one delivery; a failed try queues the next after its backoff."""
    with ctx.unit_of_work() as work:
        delay = webhooks.attempt(work.session, delivery_id, ctx.settings)
        if delay is not None:
            work.enqueue(queue.delivery(delivery_id, countdown=delay))
    return "retrying" if delay is not None else "done"


def reap_when_due(ctx: Context, owner: str) -> dict[str, int] | None:
    """Reap if no process has taken this interval's turn (every worker's main process calls
    this on a timer, so the reaper lives as long as any worker does); record the run, for
    `/readyz` and `/metrics`. None when another process has the turn."""
    turn_s = 0.9 * ctx.settings.reaper_interval_s  # its holder's next tick finds it free
    if not queue.take_reaper_turn(ctx.settings, owner, turn_s):
        return None
    return run_reaper(ctx, owner)


def run_reaper(ctx: Context, owner: str) -> dict[str, int]:
    """One reap, recorded as the reaper's latest run."""
    summary = reap(ctx)
    queue.record_reap(ctx.settings, owner, summary)
    return summary


def reap(ctx: Context) -> dict[str, int]:
    """Re-enqueue submissions stuck in queued or running, versions stuck validating, webhook
    deliveries and LTI grade passbacks whose message was lost; remove orphaned sandbox containers. Reaps take turns
    (a database lock), so two never send the same lost rows again."""
    settings = ctx.settings
    with ctx.unit_of_work() as work:
        serialize(work.session, REAPER_LOCK)
        waiting = ctx.broker.depth()  # read under the lock: after the previous reap's sends
        ids = stuck(work.session, settings, waiting)
        for sid in ids:  # ahead of the backlog: each has waited its turn already
            row = work.session.get(Submission, sid)
            work.enqueue(queue.grading(sid, row.queue, front=True))
        validating = _overdue_self_tests(work.session, settings.stuck_grace_s, waiting)
        work.enqueue(*(queue.self_test(vid) for vid in validating))
        deliveries = webhooks.overdue(work.session, settings)
        work.enqueue(*(queue.delivery(delivery_id) for delivery_id in deliveries))
        passbacks = lti_grades.overdue(work.session, settings)
        work.enqueue(*(queue.passback(passback_id) for passback_id in passbacks))
    return {
        "submissions": len(ids),
        "versions": len(validating),
        "webhooks": len(deliveries),
        "lti_passbacks": len(passbacks),
        "containers": sweep_sandboxes(settings),
    }


def stuck(
    session: Session,
    settings: Settings,
    broker_waiting: dict[str, int] | None,
    at: datetime | None = None,
) -> list[str]:
    """Queue again the submissions running under a try that stopped heartbeating or ran
    past its deadline, and the queued ones whose message is gone; their ids.

    A queued row older than the grace counts as lost only when its broker queue holds fewer
    messages than the database has queued rows for it (the oldest go first); with the broker
    unknown (`None`) every such row does. A long backlog is therefore not sent twice.
    """
    at = at or now()
    limit = at - timedelta(seconds=settings.stuck_grace_s)
    running = select(Submission.id).where(
        Submission.status == SubmissionStatus.RUNNING,
        or_(
            Submission.deadline_at < limit,
            func.coalesce(Submission.heartbeat_at, Submission.started_at) < limit,
        ),
    )
    ids = list(session.scalars(running))
    queued = dict(
        session.execute(
            select(Submission.queue, func.count())
            .where(Submission.status == SubmissionStatus.QUEUED)
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
                Submission.status == SubmissionStatus.QUEUED,
                Submission.queue == name,
                Submission.enqueued_at < limit,
            )
            .order_by(Submission.enqueued_at)
            .limit(lost)
        )
    requeued = []
    for sid in ids:  # look again under the row lock: a try may have claimed or beaten since
        row = session.get(Submission, sid, with_for_update=True)
        if (
            row is None
            or row.status == SubmissionStatus.COMPLETED
            or _held_by_live_try(row, settings, at)
            or (row.status == SubmissionStatus.QUEUED and aware(row.enqueued_at) >= limit)
        ):
            continue
        requeue(row)
        requeued.append(sid)
    return requeued


def _overdue_self_tests(
    session: Session, grace_s: float, broker_waiting: dict[str, int] | None
) -> list[str]:
    """Versions still validating long after their self-test was sent, whose message is gone:
    as many of the oldest as the validating versions outnumber the self-tests waiting in
    the broker (all of them when it is unknown; a long backlog is not sent twice); marked
    as sent again, so that a slow self-test is not run twice."""
    limit = now() - timedelta(seconds=VALIDATION_ALLOWANCE_S + grace_s)
    validating = session.scalar(
        select(func.count()).where(TaskVersion.status == VersionStatus.VALIDATING)
    )
    waiting = 0 if broker_waiting is None else broker_waiting.get(queue.SELF_TESTS, 0)
    lost = validating - waiting
    if lost <= 0:
        return []
    sent_at = func.coalesce(TaskVersion.enqueued_at, TaskVersion.created_at)
    versions = session.scalars(
        select(TaskVersion)
        .where(TaskVersion.status == VersionStatus.VALIDATING, sent_at < limit)
        .order_by(sent_at)
        .limit(lost)
        .with_for_update(skip_locked=True)
    ).all()
    for version in versions:
        version.enqueued_at = now()
    return [v.id for v in versions]
