"""Celery tasks: thin wrappers that take an id and call a use case (usecases/worker.py);
only infrastructure errors retry."""

from __future__ import annotations

import os
import socket

from celery.signals import worker_process_shutdown
from sqlalchemy.exc import OperationalError

from sandbox.errors import SandboxError
from services.queue import DELIVER, GRADE, PASSBACK, REAP, VALIDATE
from services.sandboxes import close_backends
from usecases import lti_grades, worker
from worker.celery_app import app, context

INFRA_ERRORS = (OperationalError, ConnectionError)


@app.task(name=GRADE, autoretry_for=INFRA_ERRORS, retry_backoff=True, max_retries=20)
def grade_submission(submission_id: str) -> str:
    return worker.grade_submission(context, submission_id)


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
    return worker.validate_version(context, version_id)


@app.task(name=DELIVER, autoretry_for=INFRA_ERRORS, retry_backoff=True, max_retries=20)
def deliver_webhook(delivery_id: str) -> str:
    return worker.deliver_webhook(context, delivery_id)


@app.task(name=PASSBACK, autoretry_for=INFRA_ERRORS, retry_backoff=True, max_retries=20)
def lti_passback(passback_id: str) -> str:
    delay = lti_grades.send_passback(context, passback_id)
    return "retrying" if delay is not None else "done"


@app.task(name=REAP)  # a reap on demand (`celery call grader.reap`); the timer's are in reaper.py
def reap() -> dict[str, int]:
    return worker.run_reaper(context, f"{socket.gethostname()}:{os.getpid()}")


@worker_process_shutdown.connect
def close_sandboxes(**_) -> None:
    close_backends()
