"""Commit, then enqueue: a unit of work sends what was registered only after its commit,
and nothing when it rolls back."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Submission, TaskVersion
from services import queue
from tests.application.conftest import add_task
from usecases import submitting
from usecases.admission import NewSubmission


def test_messages_are_sent_after_the_commit(ctx, broker, people):
    add_task(ctx, "quiz", "c1")
    made = submitting.submit(ctx, people["lms"], NewSubmission("quiz", "ann", choice="A"))
    with ctx.unit_of_work() as work:
        row = work.session.get(Submission, made.row.id)
        row.tries = 5
        work.enqueue(queue.grading(row.id, row.queue))
        assert len(broker.sent) == 1  # only the submission's own message so far
    assert broker.sent[-1] == queue.grading(made.row.id, "cpu") and broker.early == []


def test_a_unit_of_work_that_fails_sends_nothing_and_stores_nothing(ctx, broker):
    add_task(ctx, "quiz", "c1")
    with pytest.raises(RuntimeError), ctx.unit_of_work() as work:
        version = work.session.scalar(select(TaskVersion))
        version.report = "changed"
        work.enqueue(queue.self_test(version.id))
        raise RuntimeError("the use case failed")
    assert broker.sent == []
    with ctx.unit_of_work() as work:
        assert work.session.scalar(select(TaskVersion)).report != "changed"


def test_the_recorder_sees_a_message_sent_before_its_commit(ctx, broker, people):
    """The check every application test relies on can fail: a message sent from inside
    the transaction names a row no other connection can read yet."""
    add_task(ctx, "quiz", "c1")
    made = submitting.submit(ctx, people["lms"], NewSubmission("quiz", "ann", choice="A"))
    with ctx.unit_of_work() as work:
        work.session.delete(work.session.get(Submission, made.row.id))
        work.session.flush()
        broker.send([queue.grading("f" * 32, "cpu")])  # no such row committed
    assert [m.args for m in broker.early] == [["f" * 32]]
    broker.early.clear()
