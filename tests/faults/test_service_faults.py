"""The rules that make redelivery, reaping and retries safe, checked on the worker's use
cases against a PostgreSQL database of their own (tests/application checks them on SQLite): only the current try may store a result, a live
try is not taken over, the reaper re-sends only what is lost, stored results and webhook
bodies are bounded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from core.settings import Settings
from db.models import AttemptCounter, Submission, now
from db.session import migrate, session_scope
from graders.result import CheckResult, GradeResult
from graders.spec import parse_spec
from services import catalog, keys, webhooks
from tests.application.conftest import Recorder
from tests.e2e.conftest import choice_spec, fresh_database
from usecases import submitting, worker
from usecases.admission import NewSubmission
from usecases.unit_of_work import Context

pytestmark = [pytest.mark.postgres]

TASK = "svc-quiz"


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    with fresh_database("grader_faults_svc") as url:
        migrate(url)
        yield Settings(database_url=url, stuck_grace_s=4, grading_max_retries=3)


@pytest.fixture(scope="module")
def ctx(settings) -> Context:
    """The use cases' context, with an in-memory broker: nothing here reads the queue."""
    return Context(settings, Recorder(settings.effective_database_url))


@pytest.fixture(scope="module")
def lms(settings):
    with session_scope(settings.effective_database_url) as session:
        catalog.add_version(session, parse_spec(choice_spec(TASK, 3)), course="svc")
        row, plaintext = keys.create_key(session, name="svc", role="lms", course="svc")
    with session_scope(settings.effective_database_url) as session:
        return keys.authenticate(session, plaintext)


@pytest.fixture
def accepted(ctx, lms, request) -> str:
    made = submitting.submit(ctx, lms, NewSubmission(TASK, request.node.name[:60], choice="A"))
    assert made.created
    return made.row.id


def _result(outcome: str = "passed", **extra) -> GradeResult:
    return GradeResult(
        task_id=TASK, task_version="v", outcome=outcome, score=1.0 if outcome == "passed" else 0.0,
        max_score=1.0, **extra,
    )  # fmt: skip


def _row(settings, submission_id: str) -> Submission:
    with session_scope(settings.effective_database_url) as session:
        return session.get(Submission, submission_id)


def _age(settings, submission_id: str, seconds: float) -> None:
    """Move the row's clocks into the past, as if its try stopped heartbeating that long ago."""
    past = now() - timedelta(seconds=seconds)
    with session_scope(settings.effective_database_url) as session:
        session.execute(
            update(Submission)
            .where(Submission.id == submission_id)
            .values(heartbeat_at=past, started_at=past, enqueued_at=past)
        )


def _used(settings, student: str) -> int:
    with session_scope(settings.effective_database_url) as session:
        return session.get(AttemptCounter, (TASK, "svc", student)).used


def test_stale_try_cannot_overwrite_a_newer_result(settings, ctx, accepted):
    old = worker.claim(ctx, accepted)
    _age(settings, accepted, 60)  # its worker went silent: the reaper queues it again
    with session_scope(settings.effective_database_url) as session:
        assert worker.stuck(session, settings, {"cpu": 0}) == [accepted]
    new = worker.claim(ctx, accepted)
    assert new.token != old.token
    assert worker.finish(ctx, new, _result("passed")) == "stored"
    assert worker.finish(ctx, old, _result("failed")) == "stale"
    row = _row(settings, accepted)
    assert (row.outcome, row.tries, row.attempt_token) == ("passed", 2, None)


def test_a_message_for_a_live_try_is_a_duplicate(settings, ctx, accepted):
    first = worker.claim(ctx, accepted)
    assert worker.claim(ctx, accepted) is None  # heartbeat fresh: the try is alive
    assert worker.heartbeat(ctx, first)
    with session_scope(settings.effective_database_url) as session:
        assert worker.stuck(session, settings, {"cpu": 0}) == []
    _age(settings, accepted, 60)
    second = worker.claim(ctx, accepted)  # silent past the grace: taken over
    assert not worker.heartbeat(ctx, first)
    assert worker.finish(ctx, second, _result()) == "stored"
    assert worker.claim(ctx, accepted) is None
    assert _row(settings, accepted).tries == 2


def test_reaper_resends_only_queued_rows_whose_message_is_gone(settings, accepted):
    _age(settings, accepted, 60)
    with session_scope(settings.effective_database_url) as session:
        queued = session.scalar(select(func.count()).where(Submission.status == "queued"))
        assert accepted not in worker.stuck(session, settings, {"cpu": queued})
    with session_scope(settings.effective_database_url) as session:
        assert accepted in worker.stuck(session, settings, {"cpu": queued - 1})
    _age(settings, accepted, 60)
    with session_scope(settings.effective_database_url) as session:
        assert accepted in worker.stuck(session, settings, None)  # broker unknown
    with session_scope(settings.effective_database_url) as session:
        assert accepted not in worker.stuck(session, settings, None)  # just re-sent


def test_internal_error_past_the_retries_is_stored_uncharged(settings, ctx, accepted, request):
    student = request.node.name[:60]
    assert _used(settings, student) == 1
    for expected in ("retry", "retry", "stored"):
        claim = worker.claim(ctx, accepted)
        assert worker.finish(ctx, claim, _result("internal_error")) == expected
    row = _row(settings, accepted)
    assert (row.outcome, row.charged, row.tries) == ("internal_error", False, 3)
    assert _used(settings, student) == 0


def test_stored_results_are_bounded(settings, ctx, accepted):
    huge = "x" * 4_000_000
    checks = [
        CheckResult(name=f"c{i}", passed=False, points=0, max_points=1, message=huge[:50_000])
        for i in range(40)
    ]
    claim = worker.claim(ctx, accepted)
    assert worker.finish(ctx, claim, _result(stdout=huge, stderr=huge, checks=checks)) == "stored"
    stored = _row(settings, accepted).result
    assert len(json.dumps(stored)) <= worker.MAX_RESULT_BYTES
    assert stored["stdout"].startswith("xxx") and "not stored" in stored["stdout"]
    assert "too long to store" in stored["notes"][-1]
    GradeResult.model_validate(stored)  # still a valid result for every reader


def test_webhook_body_is_bounded(settings, ctx, accepted):
    claim = worker.claim(ctx, accepted)
    big = "y" * (webhooks.MAX_PAYLOAD_BYTES // 2)
    worker.finish(ctx, claim, _result(stdout=big, stderr=big))
    body = json.loads(webhooks.payload(_row(settings, accepted)))
    assert body["result"] is None and body["result_omitted"] is True
    assert (body["outcome"], body["submission_id"]) == ("passed", accepted)
