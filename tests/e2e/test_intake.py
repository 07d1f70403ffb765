"""Submissions stored as a group (usecases/submitting.py, usecases/group_commit.py): each
is judged as if it had come alone, whatever else is in its group, on PostgreSQL and on
SQLite. Counted from the database and the broker: one row and one queue message per
accepted submission, attempt counters equal to the rows, nothing stored for a refused one."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select

from api.schemas import parse_submission
from core.settings import Settings
from db.models import AttemptCounter, Submission
from db.session import migrate, session_scope
from graders.spec import parse_spec
from services import catalog, keys, queue
from services.errors import Conflict, Forbidden, NotFound, Unauthorized, Unavailable
from tests.conftest import TEST_REDIS
from tests.e2e.conftest import choice_spec, fresh_database
from usecases import admission, submitting
from usecases.admission import Accepted
from usecases.group_commit import GroupCommit
from usecases.submitting import Posted
from usecases.unit_of_work import Context

ONCE, TWICE, OPEN = "intake-once", "intake-twice", "intake-open"  # 1, 2, unlimited attempts
# A Redis DB of these tests' own (one per test process): no worker of the e2e stacks reads it.
BROKER_URL = TEST_REDIS + "/{}".format(
    1 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) % 6
)


@pytest.fixture(scope="module")
def broker_url(redis_url) -> str:  # (`redis_url`: Redis answers, or the test skips or fails)
    return BROKER_URL


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def world(request, broker_url, tmp_path_factory) -> Iterator[dict]:
    def make(url: str) -> dict:
        migrate(url)
        settings = Settings(database_url=url, redis_url=broker_url, max_queue_length=10_000)
        ctx = Context.of(settings)
        with session_scope(url) as session:
            for task_id, limit in ((ONCE, 1), (TWICE, 2)):
                catalog.add_version(session, parse_spec(choice_spec(task_id, limit)), course="c1")
            unlimited = choice_spec(OPEN).replace("prompt:", "max_attempts: null\nprompt:")
            catalog.add_version(session, parse_spec(unlimited), course="c1")
            made = {
                "lms": keys.create_key(session, name="lms", role="lms", course="c1")[1],
                "other": keys.create_key(session, name="o", role="lms", course="c2")[1],
                "student": keys.create_key(
                    session, name="s", role="student", course="c1", student_id="ann"
                )[1],
            }
        return {"settings": settings, "ctx": ctx, "keys": made}

    if request.param == "sqlite":
        yield make(f"sqlite:///{tmp_path_factory.mktemp('intake')}/grader.db")
    else:
        with fresh_database("grader_intake") as url:
            yield make(url)


@pytest.fixture(autouse=True)
def empty_queue(broker_url) -> Iterator[redis.Redis]:
    broker = redis.Redis.from_url(broker_url)
    broker.flushdb()
    yield broker
    broker.flushdb()


def accept_group(settings: Settings, group: list[Posted]) -> list:
    """Store `group` as the REST API's group commit does: one transaction, then the queue."""
    return submitting.submit_group(Context.of(settings), group, parse_submission)


def post(key: str, idempotency_key: str | None = None, **body) -> Posted:
    return Posted(key, json.dumps(body).encode(), idempotency_key)


def student() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def stored(settings: Settings, student_id: str) -> tuple[int, int]:
    """Rows of the student, and attempts counted for them over all tasks."""
    with session_scope(settings.effective_database_url) as session:
        rows = session.scalar(
            select(func.count()).where(Submission.student_id == student_id)
        )  # fmt: skip
        used = session.scalar(
            select(func.coalesce(func.sum(AttemptCounter.used), 0)).where(
                AttemptCounter.student_id == student_id
            )
        )
    return rows, used


def queued_ids(broker: redis.Redis) -> list[str]:
    """The submission ids of the grading messages waiting on the cpu queue."""
    ids = []
    for raw in broker.lrange("cpu", 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == queue.GRADE
        ids.append(message["headers"]["argsrepr"].strip("[]'"))
    return ids


def test_each_submission_of_a_group_gets_its_own_answer(world, empty_queue):
    settings, k = world["settings"], world["keys"]
    ann, bob, cid = student(), student(), student()
    group = [
        post(k["lms"], task_id=OPEN, student_id=ann, choice="A"),
        post("grk_unknown", task_id=OPEN, student_id=ann, choice="A"),
        post(k["lms"], task_id=ONCE, student_id=bob, choice="A"),
        Posted(k["lms"], b"{", None),  # not JSON
        post(k["lms"], task_id=ONCE, student_id=bob, choice="B"),  # bob's one attempt is used
        post(k["other"], task_id=OPEN, student_id=cid, choice="A"),  # another course's task
        post(k["lms"], task_id="no-such-task", student_id=cid, choice="A"),
        post(k["student"], task_id=OPEN, student_id=cid, choice="A"),  # not ann: forbidden
        post(k["lms"], task_id=OPEN, student_id=ann, code="x = 1\n"),  # wrong kind of answer
        post(k["lms"], task_id=TWICE, student_id=cid, choice="A"),
        post(k["lms"], task_id=TWICE, student_id=cid, choice="A"),
        post(k["lms"], task_id=TWICE, student_id=cid, choice="A"),  # the third of two
    ]
    outcomes = accept_group(settings, group)
    kinds = [type(o).__name__ if isinstance(o, Exception) else o.created for o in outcomes]
    assert kinds == [
        True, "Unauthorized", True, "RequestValidationError", "Conflict", "NotFound",
        "NotFound", "Forbidden", "InvalidInput", True, True, "Conflict",
    ]  # fmt: skip
    assert isinstance(outcomes[1], Unauthorized) and isinstance(outcomes[3], RequestValidationError)
    assert isinstance(outcomes[4], Conflict) and isinstance(outcomes[7], Forbidden)
    assert isinstance(outcomes[5], NotFound) and isinstance(outcomes[6], NotFound)
    assert [outcomes[i].attempts_left for i in (0, 2, 9, 10)] == [None, 0, 1, 0]
    assert stored(settings, ann) == (1, 1)
    assert stored(settings, bob) == (1, 1)
    assert stored(settings, cid) == (2, 2)
    made = [o.row.id for o in outcomes if isinstance(o, Accepted)]
    assert sorted(queued_ids(empty_queue)) == sorted(made)


def test_a_repeated_idempotency_key_in_a_group_is_one_submission(world, empty_queue):
    settings, k = world["settings"], world["keys"]
    ann, key = student(), uuid.uuid4().hex
    same = post(k["lms"], key, task_id=TWICE, student_id=ann, choice="A")
    first = accept_group(settings, [same, same, same])
    assert [o.created for o in first] == [True, False, False]
    assert len({o.row.id for o in first}) == 1 and first[1].attempts_left == 1
    again = accept_group(
        settings, [same, post(k["lms"], task_id=TWICE, student_id=ann, choice="B")]
    )
    assert again[0].created is False and again[0].row.id == first[0].row.id
    assert again[1].created is True and again[1].attempts_left == 0
    assert stored(settings, ann) == (2, 2)
    assert len(queued_ids(empty_queue)) == 2


def test_a_group_that_loses_an_idempotency_race_is_stored_one_by_one(world, empty_queue):
    """Another group holds an `Idempotency-Key` it has not committed: this group waits for
    it (PostgreSQL: on the student's counter, then the insert fails on the key; SQLite: on
    the database's lock, and then finds the key), so the group is rolled back and each
    submission stored alone: the others accepted once, the repeat answered with the
    other's row."""
    settings, k = world["settings"], world["keys"]
    url = settings.effective_database_url
    ann, bob, key = student(), student(), uuid.uuid4().hex
    group = [
        post(k["lms"], task_id=OPEN, student_id=bob, choice="A"),
        post(k["lms"], key, task_id=OPEN, student_id=ann, choice="A"),
        post(k["lms"], task_id=ONCE, student_id=bob, choice="A"),
    ]
    outcomes: list = []
    with session_scope(url) as other:
        who = keys.authenticate(other, k["lms"])
        new = admission.NewSubmission(OPEN, ann, choice="A")
        [theirs] = admission.admit(other, [admission.Entry(who, new, key)], settings)
        racing = threading.Thread(target=lambda: outcomes.extend(accept_group(settings, group)))
        racing.start()
        time.sleep(1.0)
        assert racing.is_alive()  # waiting on the other group's key (SQLite: on its lock)
    racing.join(60)
    assert [o.created for o in outcomes] == [True, False, True]
    assert outcomes[1].row.id == theirs.row.id
    assert stored(settings, ann) == (1, 1) and stored(settings, bob) == (2, 2)
    assert len(queued_ids(empty_queue)) == 2


def test_the_queue_limit_holds_within_a_group(world, empty_queue):
    settings = world["settings"]
    with session_scope(settings.effective_database_url) as session:
        waiting = session.scalar(select(func.count()).where(Submission.status == "queued"))
    tight = settings.model_copy(update={"max_queue_length": waiting + 2})
    ann = student()
    refused = post(world["keys"]["lms"], task_id="no-such-task", student_id=ann, choice="A")
    group = [refused] + [post(world["keys"]["lms"], task_id=OPEN, student_id=ann, choice="A")] * 4
    outcomes = accept_group(tight, group)  # the refused one takes no room
    assert isinstance(outcomes[0], NotFound)
    assert [isinstance(o, Accepted) for o in outcomes[1:]] == [True, True, False, False]
    assert all(isinstance(o, Unavailable) and o.retry_after_s > 0 for o in outcomes[3:])
    assert stored(settings, ann) == (2, 2)


def test_concurrent_posts_are_stored_in_groups_each_with_its_answer(world, empty_queue):
    """Through the API's group commit: 40 posts at once form groups of at most 8 (one lane), and
    each post gets its own outcome: 20 students with one attempt each, every one twice."""
    settings, k = world["settings"], world["keys"]
    group_commit = GroupCommit(world["ctx"], parse_submission, lanes=1, max_group=8)
    sizes: list[int] = []
    real = submitting.submit_group

    def counting(ctx, group, parse):
        sizes.append(len(group))
        return real(ctx, group, parse)

    students = [student() for _ in range(20)]
    posts = [post(k["lms"], task_id=ONCE, student_id=s, choice="A") for s in students * 2]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("usecases.group_commit.submit_group", counting)

        async def all_at_once() -> list:
            return await asyncio.gather(
                *(group_commit.submit(p) for p in posts), return_exceptions=True
            )

        # In a thread of its own: another test's browser may hold this thread's event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            results = pool.submit(asyncio.run, all_at_once()).result()
    assert sizes == [8] * 5
    for s in students:
        mine = [r for p, r in zip(posts, results, strict=True) if s in p.raw.decode()]
        assert sorted(type(r).__name__ for r in mine) == ["Accepted", "Conflict"]
        assert stored(settings, s) == (1, 1)
    assert len(queued_ids(empty_queue)) == 20


def test_messages_are_what_celery_itself_sends(broker_url, empty_queue):
    """The grading message pushed by services/queue.py equals, but for its ids and times,
    the one Celery's `send_task` puts on the queue, so the workers read it the same way."""
    from celery import Celery

    settings = Settings(redis_url=broker_url)
    Celery("reference", broker=broker_url).send_task(
        queue.GRADE, args=["a" * 32], queue="gpu", countdown=5, retry=False
    )
    assert queue.send_many(settings, [queue.grading("a" * 32, "gpu", countdown=5)])
    theirs, ours = (json.loads(m) for m in reversed(empty_queue.lrange("gpu", 0, -1)))

    def without_ids(message: dict) -> dict:
        for name in ("id", "root_id", "eta", "origin"):
            assert message["headers"].pop(name)
        for name in ("correlation_id", "reply_to", "delivery_tag"):
            assert message["properties"].pop(name)
        return message

    assert without_ids(ours) == without_ids(theirs)


def test_answers_are_taken_before_the_self_tests_sent_earlier(broker_url, empty_queue):
    """A worker's consumer takes every waiting answer before any self-test, whatever the
    order they were sent in; and a self-test is what Celery sends at priority 9."""
    from celery import Celery
    from kombu import Connection

    settings = Settings(redis_url=broker_url)
    Celery("reference", broker=broker_url).send_task(
        queue.VALIDATE, args=["v" * 32], queue="cpu", priority=queue.BACKGROUND, retry=False
    )
    (theirs,) = empty_queue.lrange(queue.SELF_TEST_LIST, 0, -1)
    empty_queue.flushdb()

    self_tests = [queue.self_test(f"v{n}") for n in range(3)]
    answers = [queue.grading(f"s{n}", "cpu") for n in range(2)]
    assert queue.send_many(settings, self_tests[:2])
    assert queue.send_many(settings, [answers[0], self_tests[2], answers[1]])
    assert queue.broker_depth(settings) == {"cpu": 2, "gpu": 0, "webhooks": 0, "self-tests": 3}
    ours = json.loads(empty_queue.lindex(queue.SELF_TEST_LIST, 0))
    assert ours["properties"]["priority"] == json.loads(theirs)["properties"]["priority"] == 9

    taken = []
    with Connection(broker_url) as connection:
        waiting = connection.SimpleQueue("cpu", no_ack=True)
        for _ in range(5):
            message = waiting.get(timeout=2)
            taken.append(message.headers["argsrepr"].strip("[]'"))
        waiting.close()
    assert taken == ["s0", "s1", "v0", "v1", "v2"]
