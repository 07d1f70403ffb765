"""Sending work to the Celery workers by task name: the API needs no worker code to enqueue.

Messages carry ids only. If the broker is down the row stays `queued` in the database and
the reaper sends it again later, so accepting a submission never depends on Redis. The use
cases send through a `Broker` (`RedisBroker` here), only after their transaction committed
(usecases/unit_of_work.py).

A message is a Celery task message (protocol 2, built by Celery's own `as_task_v2`) in the
envelope kombu's Redis transport reads, pushed onto the queue's list; many go in one
pipeline. Publishing through `send_task` costs about a millisecond of CPU a message on
these machines, most of the API's budget for a submission; this costs a tenth of that, and
a group of submissions accepted together is one round trip to Redis.

Two priorities share each queue. Answers, webhooks and re-sent messages go first; a
task version's self-test goes in the background (`BACKGROUND`): a worker takes one only
when no answer is waiting, so a learner never waits behind the bank's self-tests at
start-up or an instructor's new spec. This is kombu's own priority scheme for Redis (one
list per priority step, `cpu` then `cpu\x06\x169`, popped in that order by BRPOP).

The reaper's turns and its latest run are kept beside the queues: each worker's main
process asks for the turn every interval (`take_reaper_turn`, one holder at a time across
every host), and the API reads when a reaper last ran (`last_reap`) for its readiness.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import redis
from celery import Celery
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.settings import Settings

log = logging.getLogger(__name__)

GRADE = "grader.grade_submission"
VALIDATE = "grader.validate_version"
DELIVER = "grader.deliver_webhook"
PASSBACK = "grader.lti_passback"  # a score to an LMS's line item (LTI AGS)
REAP = "grader.reap"
QUEUES = ("cpu", "gpu", "webhooks")
FOREGROUND, BACKGROUND = 0, 9  # kombu's Redis transport pops priority 0 first
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's: a priority's list is f"{queue}{sep}{priority}"
BROKER_TIMEOUT_S = 2.0  # a broker that does not answer fails the send, it does not hang it
REAPER_TURN_KEY = "grader.reaper.turn"
REAPER_LAST_RUN_KEY = "grader.reaper.last_run"


@dataclass(frozen=True)
class Message:
    name: str
    args: list
    queue: str
    countdown: float | None = None
    front: bool = False  # taken next, before the waiting ones (a re-sent message has waited)
    priority: int = FOREGROUND


def list_key(queue: str, priority: int) -> str:
    """The Redis list a message of `priority` waits in (as kombu's Redis transport names it)."""
    return queue if priority == FOREGROUND else f"{queue}{PRIORITY_SEPARATOR}{priority}"


@lru_cache
def client(broker_url: str) -> Celery:
    """Celery, for building task messages (never connected: `send_many` pushes them)."""
    return Celery("grader-client", broker=broker_url)


@lru_cache
def _broker(broker_url: str) -> redis.Redis:
    return redis.Redis.from_url(
        broker_url,
        socket_timeout=BROKER_TIMEOUT_S,
        socket_connect_timeout=BROKER_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1),  # one reconnect (a restarted Redis), never a backoff
    )


def encode(app: Celery, message: Message) -> bytes:
    """`message` as kombu's Redis transport stores it (a JSON envelope, the body in base64)."""
    task_id = str(uuid.uuid4())
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id,
        message.name,
        args=message.args,
        kwargs={},
        countdown=message.countdown,
        ignore_result=None,  # as `send_task` sends it (the workers store no results)
        reply_to=app.thread_oid,
    )
    return json.dumps({
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": message.queue},
            "priority": message.priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }).encode()  # fmt: skip


def send_many(settings: Settings, messages: list[Message]) -> bool:
    """Enqueue all, in one round trip; False (logged) when the broker cannot be reached:
    the reaper will send them again."""
    if not messages:
        return True
    app = client(settings.redis_url)
    try:
        pipe = _broker(settings.redis_url).pipeline(transaction=False)
        for message in messages:  # consumers pop the right end (kombu's BRPOP)
            push = pipe.rpush if message.front else pipe.lpush
            push(list_key(message.queue, message.priority), encode(app, message))
        pipe.execute()
        return True
    except Exception as exc:  # the rows are stored: whatever failed here, the reaper resends
        log.warning("could not enqueue %d messages (%s ...): %s", len(messages), messages[0], exc)
        return False


def grading(
    submission_id: str, queue: str, countdown: float | None = None, front: bool = False
) -> Message:
    return Message(GRADE, [submission_id], queue, countdown, front)


def self_test(version_id: str) -> Message:
    return Message(VALIDATE, [version_id], "cpu", priority=BACKGROUND)


def delivery(delivery_id: str, countdown: float | None = None) -> Message:
    return Message(DELIVER, [delivery_id], "webhooks", countdown)


def passback(passback_id: str, countdown: float | None = None) -> Message:
    return Message(PASSBACK, [passback_id], "webhooks", countdown)


SELF_TESTS = "self-tests"  # the depth of the background list, beside the queues'
SELF_TEST_LIST = list_key(self_test("").queue, BACKGROUND)  # where every self-test waits
LISTS = (*QUEUES, SELF_TEST_LIST)  # every Redis list a message waits in


def broker_depth(settings: Settings) -> dict[str, int] | None:
    """Messages waiting per queue in Redis (the foreground: answers, webhooks), and the
    self-tests waiting in the background (`SELF_TESTS`); None when Redis does not answer."""
    try:
        r = redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
        depth = {q: int(r.llen(q)) for q in QUEUES}
        depth[SELF_TESTS] = int(r.llen(SELF_TEST_LIST))
        return depth
    except redis.RedisError:
        return None


def take_reaper_turn(settings: Settings, owner: str, hold_s: float) -> bool:
    """True when `owner` may reap now: nobody else took a turn in the last `hold_s` seconds.
    False, too, when Redis does not answer (what a reaper would send could not be sent)."""
    try:
        taken = _broker(settings.redis_url).set(
            REAPER_TURN_KEY, owner, nx=True, px=max(1, int(hold_s * 1000))
        )
        return bool(taken)
    except redis.RedisError as exc:
        log.warning("could not take the reaper's turn: %s", exc)
        return False


def record_reap(settings: Settings, owner: str, summary: dict[str, int]) -> None:
    """Keep the reaper's latest run: when, by whom, what it did."""
    record = {"at": time.time(), "by": owner, "did": summary}
    try:
        _broker(settings.redis_url).set(REAPER_LAST_RUN_KEY, json.dumps(record))
    except redis.RedisError as exc:
        log.warning("could not record the reaper's run: %s", exc)


def last_reap(settings: Settings) -> dict | None:
    """The reaper's latest run (`at`: a Unix time, `by`, `did`), or None: none recorded, or
    Redis does not answer."""
    try:
        r = redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
        raw = r.get(REAPER_LAST_RUN_KEY)
    except redis.RedisError:
        return None
    return json.loads(raw) if raw else None


class Broker(Protocol):
    """Where the use cases' messages go (usecases/unit_of_work.py sends them after commit)."""

    def send(self, messages: Sequence[Message]) -> bool:
        """Enqueue all; False when they could not be (the reaper sends them again)."""

    def depth(self) -> dict[str, int] | None:
        """Messages waiting per queue, or None when the broker does not answer."""


class RedisBroker:
    """The deployment's broker: Celery task messages pushed onto Redis lists."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, messages: Sequence[Message]) -> bool:
        return send_many(self.settings, list(messages))

    def depth(self) -> dict[str, int] | None:
        return broker_depth(self.settings)
