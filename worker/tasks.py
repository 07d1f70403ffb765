"""Celery tasks: thin wrappers that take an id and call services.jobs; only infrastructure errors retry."""

from __future__ import annotations

from celery.signals import worker_process_shutdown
from sqlalchemy.exc import OperationalError

from sandbox.errors import SandboxError
from services import jobs
from services.queue import DELIVER, GRADE, REAP, VALIDATE
from worker.celery_app import app, settings

INFRA_ERRORS = (OperationalError, ConnectionError)


@app.task(name=GRADE, autoretry_for=INFRA_ERRORS, retry_backoff=True, max_retries=20)
def grade_submission(submission_id: str) -> str:
    return jobs.grade_submission(settings, submission_id)


# A self-test's sandbox failure that is not the version's own (services/validation.py) is
# the engine's: the version stays validating and the test runs again later.
@app.task(
    name=VALIDATE,
    autoretry_for=(*INFRA_ERRORS, SandboxError),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=20,
)
def validate_version(version_id: str) -> str:
    return jobs.validate_version(settings, version_id)


@app.task(name=DELIVER, autoretry_for=INFRA_ERRORS, retry_backoff=True, max_retries=20)
def deliver_webhook(delivery_id: str) -> str:
    return jobs.deliver_webhook(settings, delivery_id)


@app.task(name=REAP)
def reap() -> dict[str, int]:
    return jobs.reap(settings)


@worker_process_shutdown.connect
def close_sandboxes(**_) -> None:
    jobs.close_backends()
