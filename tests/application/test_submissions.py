"""Reading submissions and regrading them, on SQLite: a caller reads what the policy lets
it read and nothing else (answered as missing), a regrade queues the submission again
after its commit."""

from __future__ import annotations

import asyncio

import pytest

from services.errors import Forbidden, NotFound
from services.queue import GRADE
from tests.application.conftest import add_task
from usecases import submissions, submitting, worker
from usecases.admission import NewSubmission


@pytest.fixture
def made(ctx, broker, people) -> dict[str, str]:
    """ann's and bob's submissions in c1, ann's (another ann) in c2; their messages taken."""
    add_task(ctx, "quiz", "c1")
    add_task(ctx, "quiz", "c2")
    ids = {
        name: submitting.submit(ctx, people[lms], NewSubmission("quiz", student, choice="A")).row.id
        for name, lms, student in (
            ("ann", "lms", "ann"),
            ("bob", "lms", "bob"),
            ("c2 ann", "other_lms", "ann"),
        )
    }
    broker.take()
    return ids


READS = {  # who: (ann's, bob's, c2 ann's) readable
    "admin": (True, True, True),
    "instructor": (True, True, False),
    "lms": (True, True, False),
    "ann": (True, False, False),
    "bob": (False, True, False),
    "other_instructor": (False, False, True),
}


@pytest.mark.parametrize("who", sorted(READS))
def test_a_caller_reads_and_lists_exactly_what_it_may(ctx, people, made, who):
    expected = dict(zip(("ann", "bob", "c2 ann"), READS[who], strict=True))
    for name, readable in expected.items():
        if readable:
            assert submissions.read(ctx, people[who], made[name])["id"] == made[name]
            assert submissions.deliveries(ctx, people[who], made[name]) == []
        else:
            with pytest.raises(NotFound, match=f"no submission {made[name]}"):
                submissions.read(ctx, people[who], made[name])
            with pytest.raises(NotFound):
                submissions.deliveries(ctx, people[who], made[name])
    listed = {v["id"] for v in submissions.list_submissions(ctx, people[who], None, None, 100)}
    assert listed == {made[n] for n, readable in expected.items() if readable}


def test_a_student_lists_only_their_own_whatever_they_ask(ctx, people, made):
    asked = submissions.list_submissions(ctx, people["ann"], "quiz", "bob", 100)
    assert [v["id"] for v in asked] == [made["ann"]]
    by_task = submissions.list_submissions(ctx, people["lms"], "quiz", "bob", 100)
    assert [v["id"] for v in by_task] == [made["bob"]]


def test_an_id_of_another_form_is_missing(ctx, people):
    with pytest.raises(NotFound):
        submissions.read(ctx, people["admin"], "../etc/passwd")


def test_a_long_poll_returns_once_the_result_is_stored(ctx, people, made):
    async def poll_while_grading() -> dict:
        waiting = asyncio.create_task(submissions.wait(ctx, people["ann"], made["ann"], 30))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await asyncio.to_thread(worker.grade_submission, ctx, made["ann"])
        return await asyncio.wait_for(waiting, 10)

    view = asyncio.run(poll_while_grading())
    assert (view["status"], view["outcome"], view["score"]) == ("completed", "passed", 1.0)


def test_a_regrade_queues_the_submission_again_with_its_tries_anew(ctx, broker, people, made):
    assert worker.grade_submission(ctx, made["ann"]) == "stored"
    view = submissions.regrade(ctx, people["instructor"], made["ann"])
    assert view["status"] == "queued" and "outcome" not in view
    assert [m.args for m in broker.take(GRADE)] == [[made["ann"]]]
    assert worker.grade_submission(ctx, made["ann"]) == "stored"
    assert submissions.read(ctx, people["ann"], made["ann"])["outcome"] == "passed"


def test_only_the_courses_staff_regrade(ctx, broker, people, made):
    for who in ("lms", "ann"):
        with pytest.raises(Forbidden, match="this needs one of the roles admin, instructor"):
            submissions.regrade(ctx, people[who], made["ann"])
    with pytest.raises(NotFound):  # another course's: missing, not forbidden
        submissions.regrade(ctx, people["other_instructor"], made["ann"])
    assert broker.sent == []
    submissions.regrade(ctx, people["admin"], made["c2 ann"])
    assert [m.args for m in broker.sent] == [[made["c2 ann"]]]
