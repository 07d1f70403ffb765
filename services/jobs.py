"""What the worker does, as plain functions of an id: grade a submission, self-test a spec
version, deliver a webhook, reap stuck work. Celery tasks in worker/tasks.py only call these."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from core.settings import Settings
from db.models import Submission, TaskVersion, WebhookDelivery
from db.session import session_scope
from graders.result import GradeResult
from sandbox.base import SandboxBackend
from sandbox.checkpoints import ensure_checkpoints
from sandbox.errors import SandboxError
from sandbox.factory import get_backend
from services import catalog, queue, submissions, webhooks
from services.grading import default_sandbox_limits, internal_error
from services.validation import validate

log = logging.getLogger(__name__)


_backends: dict[str, SandboxBackend] = {}
_sweepers: dict[str, SandboxBackend] = {}


def worker_backend(settings: Settings) -> SandboxBackend:
    """One sandbox backend per worker process, made on first use, keeping sandboxes warm."""
    if settings.sandbox_backend not in _backends:
        ensure_checkpoints(settings.torch_home)
        _backends[settings.sandbox_backend] = get_backend(
            settings.sandbox_backend, settings, prewarm=(default_sandbox_limits(),)
        )
    return _backends[settings.sandbox_backend]


def close_backends() -> None:
    """Remove this process's idle sandboxes (a warm pool's) before it exits: Celery's pool
    processes leave with os._exit, which runs no atexit hook."""
    for backend in _backends.values():
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    _backends.clear()


@contextmanager
def _heartbeat(url: str, claim: submissions.Claim, interval_s: float) -> Iterator[None]:
    """Refresh the claim's heartbeat while grading, so nobody takes a live try for a dead one."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                with session_scope(url) as session:
                    if not submissions.heartbeat(session, claim):
                        return  # superseded: the reaper or a regrade queued it again
            except SQLAlchemyError as exc:
                log.warning("heartbeat of submission %s failed: %s", claim.submission_id, exc)

    thread = threading.Thread(target=beat, name=f"heartbeat-{claim.submission_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval_s)


def _grade(claim: submissions.Claim, settings: Settings) -> GradeResult:
    """Our failures (no engine, the sandbox broke) become a retryable internal error."""
    try:
        backend = None if claim.spec.kind == "choice" else worker_backend(settings)
    except SandboxError as exc:
        log.warning("no sandbox backend for submission %s: %s", claim.submission_id, exc)
        return internal_error(
            claim.spec, f"the sandbox is unavailable; this is not your fault ({exc})", None
        )
    return submissions.run_claim(claim, backend, settings)


def grade_submission(settings: Settings, submission_id: str) -> str:
    url = settings.effective_database_url
    with session_scope(url) as session:
        claim = submissions.claim(session, submission_id, settings)
    if claim is None:
        return "nothing to do"
    with _heartbeat(url, claim, submissions.heartbeat_interval_s(settings)):
        result = _grade(claim, settings)
    with session_scope(url) as session:
        status = submissions.finish(session, claim, result, settings)
        deliveries = []
        if status == "stored":
            deliveries = list(
                session.scalars(
                    select(WebhookDelivery.id).where(
                        WebhookDelivery.submission_id == submission_id,
                        WebhookDelivery.status == "pending",
                    )
                )
            )
        row = session.get(Submission, submission_id)
        row_queue = row.queue if row else "cpu"
    if status == "retry":
        queue.grade(settings, submission_id, row_queue, countdown=2)
    for delivery_id in deliveries:
        queue.deliver(settings, delivery_id)
    log.info("submission %s: %s (%s)", submission_id, status, result.outcome)
    return status


def validate_version(settings: Settings, version_id: str) -> str:
    url = settings.effective_database_url
    with session_scope(url) as session:
        version = session.get(TaskVersion, version_id)
        if version is None or version.status != "validating":
            return "nothing to do"
        spec = catalog.spec_of(version)
    report = validate(spec, backend=worker_backend(settings), settings=settings)
    with session_scope(url) as session:
        catalog.record_self_test(session, version_id, report.ok, report.text(), report.expected)
    return "ready" if report.ok else "invalid"


def deliver_webhook(settings: Settings, delivery_id: str) -> str:
    with session_scope(settings.effective_database_url) as session:
        delay = webhooks.attempt(session, delivery_id, settings)
    if delay is not None:
        queue.deliver(settings, delivery_id, countdown=delay)
        return "retrying"
    return "done"


def sweep_sandboxes(settings: Settings) -> int:
    """Remove sandbox containers left behind by a worker that died mid-run (Docker only).

    Sweeps with a plain backend of its own: the grading backend may keep warm sandboxes,
    which a process that only reaps must not start."""
    try:
        if settings.sandbox_backend not in _sweepers:
            _sweepers[settings.sandbox_backend] = get_backend(settings.sandbox_backend, settings)
        backend = _sweepers[settings.sandbox_backend]
        return backend.sweep_orphans() if backend.name == "docker" else 0
    except SandboxError as exc:
        log.warning("could not sweep orphaned sandboxes: %s", exc)
        return 0


def reap(settings: Settings) -> dict[str, int]:
    """Re-enqueue submissions stuck in queued or running, versions stuck validating and webhook
    deliveries whose message was lost; remove orphaned sandbox containers."""
    url = settings.effective_database_url
    waiting = queue.broker_depth(settings)
    with session_scope(url) as session:
        ids = submissions.stuck(session, settings, waiting)
        queues = {sid: session.get(Submission, sid).queue for sid in ids}
        validating = catalog.overdue_self_tests(session, settings.stuck_grace_s)
        deliveries = webhooks.overdue(session, settings)
    for sid in ids:
        queue.grade(settings, sid, queues[sid])
    for vid in validating:
        queue.validate(settings, vid)
    for delivery_id in deliveries:
        queue.deliver(settings, delivery_id)
    return {
        "submissions": len(ids),
        "versions": len(validating),
        "webhooks": len(deliveries),
        "containers": sweep_sandboxes(settings),
    }
