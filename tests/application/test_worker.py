"""The worker's use cases on SQLite: only the current try stores a result, a live try is
not taken over but its row's message comes back after the grace, an internal error is retried and then stored without charging the
attempt, a stored result queues its webhook, the reaper sends again only what is lost."""

from __future__ import annotations

import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import update

from db.models import (
    AttemptCounter,
    Submission,
    TaskVersion,
    VersionStatus,
    WebhookDelivery,
    aware,
    now,
)
from graders.result import CheckResult, GradeResult
from services import webhooks
from services.queue import DELIVER, GRADE, VALIDATE
from tests.application.conftest import add_task
from usecases import submitting, worker
from usecases.admission import NewSubmission


@pytest.fixture
def submitted(ctx, broker, people) -> str:
    """A queued submission of ann's to a quiz of three attempts; its message taken."""
    add_task(ctx, "quiz", "c1", max_attempts=3)
    made = submitting.submit(ctx, people["lms"], NewSubmission("quiz", "ann", choice="A"))
    broker.take()
    return made.row.id


def result(outcome: str = "passed", **extra) -> GradeResult:
    return GradeResult(
        task_id="quiz", task_version="v", outcome=outcome, max_score=1.0,
        score=1.0 if outcome == "passed" else 0.0, **extra,
    )  # fmt: skip


def row(ctx, submission_id: str) -> Submission:
    with ctx.unit_of_work() as work:
        return work.session.get(Submission, submission_id)


def used(ctx, student: str = "ann") -> int:
    with ctx.unit_of_work() as work:
        return work.session.get(AttemptCounter, ("quiz", "c1", student)).used


def age(ctx, submission_id: str, seconds: float) -> None:
    """Move the row's clocks into the past, as if its try stopped heartbeating that long ago."""
    past = now() - timedelta(seconds=seconds)
    with ctx.unit_of_work() as work:
        work.session.execute(
            update(Submission)
            .where(Submission.id == submission_id)
            .values(heartbeat_at=past, started_at=past, enqueued_at=past)
        )


def test_a_choice_answer_is_graded_end_to_end(ctx, submitted):
    assert worker.grade_submission(ctx, submitted) == "stored"
    done = row(ctx, submitted)
    assert (done.status, done.outcome, done.score, done.tries) == ("completed", "passed", 1.0, 1)
    assert worker.grade_submission(ctx, submitted) == "nothing to do"  # a redelivery


def test_a_stale_try_cannot_overwrite_a_newer_result(ctx, broker, submitted):
    old = worker.claim(ctx, submitted)
    age(ctx, submitted, 60)  # its worker went silent
    assert worker.reap(ctx)["submissions"] == 1
    assert [m.args for m in broker.take(GRADE)] == [[submitted]]
    new = worker.claim(ctx, submitted)
    assert new.token != old.token
    assert worker.finish(ctx, new, result("passed")) == "stored"
    assert worker.finish(ctx, old, result("failed")) == "stale"
    done = row(ctx, submitted)
    assert (done.outcome, done.tries, done.attempt_token) == ("passed", 2, None)


def test_a_message_for_a_live_try_is_a_duplicate(ctx, submitted):
    first = worker.claim(ctx, submitted)
    assert worker.claim(ctx, submitted) is None  # its heartbeat is fresh: alive
    assert worker.heartbeat(ctx, first)
    assert worker.reap(ctx)["submissions"] == 0
    age(ctx, submitted, 60)
    second = worker.claim(ctx, submitted)  # silent past the grace: taken over
    assert not worker.heartbeat(ctx, first)
    assert worker.finish(ctx, second, result()) == "stored"
    assert worker.claim(ctx, submitted) is None
    assert row(ctx, submitted).tries == 2


def test_a_message_for_a_held_row_comes_back_and_takes_over_a_dead_try(ctx, broker, submitted):
    first = worker.claim(ctx, submitted)
    assert worker.grade_submission(ctx, submitted) == "nothing to do"  # held by a live try
    [again] = broker.take(GRADE)
    grace_s, beat_s = ctx.settings.stuck_grace_s, worker.heartbeat_interval_s(ctx.settings)
    assert again.args == [submitted] and grace_s < again.countdown <= grace_s + beat_s
    age(ctx, submitted, 60)  # by the time it is back, the try has stopped heartbeating
    assert worker.grade_submission(ctx, submitted) == "stored"
    assert not worker.heartbeat(ctx, first)
    assert (row(ctx, submitted).tries, used(ctx)) == (2, 1)
    assert worker.grade_submission(ctx, submitted) == "nothing to do"
    assert broker.take(GRADE) == []  # completed: nothing comes back any more


def test_an_internal_error_is_retried_then_stored_uncharged(ctx, broker, submitted):
    assert used(ctx) == 1
    for expected in ("retry", "retry", "stored"):
        claimed = worker.claim(ctx, submitted)
        assert worker.finish(ctx, claimed, result("internal_error")) == expected
    retries = broker.take(GRADE)
    assert [(m.args, m.countdown) for m in retries] == [([submitted], 2), ([submitted], 2)]
    done = row(ctx, submitted)
    assert (done.outcome, done.charged, done.tries) == ("internal_error", False, 3)
    assert used(ctx) == 0  # the attempt given back


def test_stored_results_are_bounded(ctx, submitted):
    huge = "x" * 4_000_000
    checks = [
        CheckResult(name=f"c{i}", passed=False, points=0, max_points=1, message=huge[:50_000])
        for i in range(40)
    ]
    claimed = worker.claim(ctx, submitted)
    assert worker.finish(ctx, claimed, result(stdout=huge, stderr=huge, checks=checks)) == "stored"
    stored = row(ctx, submitted).result
    assert "not stored" in stored["stdout"] and "too long to store" in stored["notes"][-1]
    GradeResult.model_validate(stored)


def test_the_reaper_resends_only_queued_rows_whose_message_is_gone(ctx, broker, submitted):
    age(ctx, submitted, 60)  # its message was taken (the fixture) and lost
    assert worker.reap(ctx)["submissions"] == 1
    assert [m.args for m in broker.sent] == [[submitted]]  # sent again, once
    age(ctx, submitted, 60)
    assert worker.reap(ctx)["submissions"] == 0  # its message waits in the broker now
    broker.down = True
    assert worker.reap(ctx)["submissions"] == 1  # broker unknown: every old queued row
    assert now() - aware(row(ctx, submitted).enqueued_at) < timedelta(seconds=30)


def test_the_reaper_resends_only_self_tests_whose_message_is_gone(ctx, broker):
    add_task(ctx, "quiz", "c1")
    past = now() - timedelta(hours=1)

    def lose_the_message() -> None:  # validating, sent an hour ago, its message taken
        broker.take()
        with ctx.unit_of_work() as work:
            work.session.execute(
                update(TaskVersion).values(status=VersionStatus.VALIDATING, enqueued_at=past)
            )

    lose_the_message()
    assert worker.reap(ctx)["versions"] == 1
    (sent,) = broker.sent
    assert sent.name == VALIDATE and sent.priority > 0  # behind every waiting answer
    with ctx.unit_of_work() as work:
        work.session.execute(update(TaskVersion).values(enqueued_at=past))
    assert worker.reap(ctx)["versions"] == 0  # slow, not lost: its message waits
    lose_the_message()
    broker.down = True
    assert worker.reap(ctx)["versions"] == 1  # broker unknown: every overdue version


class _Receiver(BaseHTTPRequestHandler):
    statuses: list[int] = []
    bodies: list[tuple[dict, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append((dict(self.headers), body))
        self.send_response(type(self).statuses.pop(0))
        self.end_headers()

    def log_message(self, *_) -> None:
        pass


def test_a_stored_result_is_delivered_signed_and_retried_until_delivered(ctx, broker, people):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.statuses, _Receiver.bodies = [500, 204], []
    try:
        add_task(ctx, "quiz", "c1")
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        new = NewSubmission("quiz", "ann", choice="A", callback_url=url)
        made = submitting.submit(ctx, people["lms"], new)
        broker.take()
        assert worker.grade_submission(ctx, made.row.id) == "stored"
        [delivery] = broker.take(DELIVER)
        assert worker.deliver_webhook(ctx, delivery.args[0]) == "retrying"
        [retry] = broker.take(DELIVER)
        assert (retry.args, retry.countdown) == (delivery.args, 0.5)
        with ctx.unit_of_work() as work:  # its try is due now
            work.session.execute(update(WebhookDelivery).values(next_attempt_at=now()))
        assert worker.deliver_webhook(ctx, delivery.args[0]) == "done"
    finally:
        server.shutdown()
    headers, body = _Receiver.bodies[-1]
    secret = people["lms"].webhook_secret
    assert webhooks.verify(
        secret, headers["X-Grader-Timestamp"], body, headers["X-Grader-Signature"]
    )
    with ctx.unit_of_work() as work:
        state = work.session.get(WebhookDelivery, delivery.args[0])
        assert (state.status, state.attempts) == ("delivered", 2)
