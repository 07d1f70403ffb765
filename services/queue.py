"""Sending work to the Celery workers by task name: the API needs no worker code to enqueue.

Messages carry ids only. If the broker is down the row stays `queued` in the database and
the reaper sends it again later, so accepting a submission never depends on Redis.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from core.settings import Settings

log = logging.getLogger(__name__)

GRADE = "grader.grade_submission"
VALIDATE = "grader.validate_version"
DELIVER = "grader.deliver_webhook"
REAP = "grader.reap"
QUEUES = ("cpu", "gpu", "webhooks")


@lru_cache
def client(broker_url: str) -> Celery:
    app = Celery("grader-client", broker=broker_url)
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_transport_options = {
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.2,
    }
    return app


def send(
    settings: Settings, name: str, args: list, queue: str, countdown: float | None = None
) -> bool:
    """Enqueue; False (logged) when the broker cannot be reached: the reaper will retry."""
    try:
        client(settings.redis_url).send_task(
            name, args=args, queue=queue, countdown=countdown, retry=False
        )
        return True
    except Exception as exc:  # kombu raises several types for a broker that is down
        log.warning("could not enqueue %s%s on %s: %s", name, args, queue, exc)
        return False


def grade(
    settings: Settings, submission_id: str, queue: str, countdown: float | None = None
) -> bool:
    return send(settings, GRADE, [submission_id], queue, countdown)


def validate(settings: Settings, version_id: str) -> bool:
    return send(settings, VALIDATE, [version_id], "cpu")


def deliver(settings: Settings, delivery_id: str, countdown: float | None = None) -> bool:
    return send(settings, DELIVER, [delivery_id], "webhooks", countdown)


def broker_depth(settings: Settings) -> dict[str, int] | None:
    """Messages waiting per queue in Redis, or None when Redis does not answer."""
    import redis

    try:
        r = redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
        return {q: int(r.llen(q)) for q in QUEUES}
    except redis.RedisError:
        return None
