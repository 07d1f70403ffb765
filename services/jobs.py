"""What the worker does, as plain functions of an id: grade a submission, self-test a spec
version, deliver a webhook, reap stuck work. Celery tasks in worker/tasks.py only call these."""

from __future__ import annotations

import logging

from sqlalchemy import select

from core.settings import Settings
from db.models import Submission, TaskVersion, WebhookDelivery
from db.session import session_scope
from sandbox.base import SandboxBackend
from sandbox.checkpoints import ensure_checkpoints
from sandbox.factory import get_backend
from services import catalog, queue, submissions, webhooks
from services.validation import validate

log = logging.getLogger(__name__)


_backends: dict[str, SandboxBackend] = {}


def worker_backend(settings: Settings) -> SandboxBackend:
    """One sandbox backend per worker process, made on first use."""
    if settings.sandbox_backend not in _backends:
        ensure_checkpoints(settings.torch_home)
        _backends[settings.sandbox_backend] = get_backend(settings.sandbox_backend, settings)
    return _backends[settings.sandbox_backend]


def grade_submission(settings: Settings, submission_id: str) -> str:
    url = settings.effective_database_url
    with session_scope(url) as session:
        claim = submissions.claim(session, submission_id, settings)
    if claim is None:
        return "nothing to do"
    backend = None if claim.spec.kind == "choice" else worker_backend(settings)
    result = submissions.run_claim(claim, backend, settings)
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


def reap(settings: Settings) -> dict[str, int]:
    """Re-enqueue submissions stuck in queued or running, versions stuck validating, pending webhooks."""
    url = settings.effective_database_url
    with session_scope(url) as session:
        ids = submissions.stuck(session, settings)
        queues = {sid: session.get(Submission, sid).queue for sid in ids}
        validating = list(
            session.scalars(select(TaskVersion.id).where(TaskVersion.status == "validating"))
        )
    for sid in ids:
        queue.grade(settings, sid, queues[sid])
    for vid in validating:
        queue.validate(settings, vid)
    return {"submissions": len(ids), "versions": len(validating)}
