"""Submitting, on SQLite: attempts counted once per accepted submission, an
`Idempotency-Key` answered with its first submission, the queue's limit, who may submit
what, and every grading message sent after its row was committed (the `ctx` fixture
checks that for every test)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import AttemptCounter, Role, Submission
from services.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized, Unavailable
from services.queue import GRADE
from tests.application.conftest import add_task
from usecases import submitting, tasks
from usecases.admission import Accepted, Entry, NewSubmission
from usecases.submitting import Posted


def answer(task_id: str, student: str, choice: str = "A") -> NewSubmission:
    return NewSubmission(task_id, student, choice=choice)


def stored(ctx, student: str) -> tuple[int, int]:
    """The student's rows, and the attempts counted for them."""
    with ctx.unit_of_work() as work:
        rows = work.session.scalar(select(func.count()).where(Submission.student_id == student))
        used = work.session.scalar(
            select(func.coalesce(func.sum(AttemptCounter.used), 0)).where(
                AttemptCounter.student_id == student
            )
        )
    return rows, used


def test_each_accepted_submission_counts_one_attempt_until_none_are_left(ctx, broker, people):
    add_task(ctx, "quiz", "c1", max_attempts=2)
    first = submitting.submit(ctx, people["lms"], answer("quiz", "ann"))
    second = submitting.submit(ctx, people["lms"], answer("quiz", "ann", "B"))
    assert (first.created, first.attempts_left) == (True, 1)
    assert (second.created, second.attempts_left) == (True, 0)
    with pytest.raises(Conflict, match="no attempts left: ann has used all 2 attempts at quiz"):
        submitting.submit(ctx, people["lms"], answer("quiz", "ann"))
    assert stored(ctx, "ann") == (2, 2)
    assert [m.args for m in broker.sent] == [[first.row.id], [second.row.id]]
    assert {m.name for m in broker.sent} == {GRADE}
    other = submitting.submit(ctx, people["lms"], answer("quiz", "bob"))  # bob's own count
    assert other.attempts_left == 1


def test_attempts_are_counted_per_course(ctx, people):
    add_task(ctx, "shared-quiz", None, max_attempts=1)
    assert submitting.submit(ctx, people["lms"], answer("shared-quiz", "ann")).attempts_left == 0
    in_c2 = submitting.submit(ctx, people["other_lms"], answer("shared-quiz", "ann"))
    assert in_c2.attempts_left == 0  # c2's ann is another student
    assert stored(ctx, "ann") == (2, 2)


def test_an_idempotency_key_is_answered_with_its_first_submission(ctx, broker, people, principal):
    add_task(ctx, "quiz", "c1", max_attempts=3)
    first = submitting.submit(ctx, people["lms"], answer("quiz", "ann"), "key-1")
    again = submitting.submit(ctx, people["lms"], answer("quiz", "ann", "B"), "key-1")
    assert (again.created, again.row.id, again.attempts_left) == (False, first.row.id, 2)
    assert stored(ctx, "ann") == (1, 1)
    assert len(broker.take(GRADE)) == 1  # the repeat sent nothing
    second_lms = principal(Role.LMS, "c1")  # keys are a caller's own: its own submission
    theirs = submitting.submit(ctx, second_lms, answer("quiz", "ann"), "key-1")
    assert theirs.created and theirs.row.id != first.row.id
    assert stored(ctx, "ann") == (2, 2)


def test_repeats_within_one_group_are_one_submission(ctx, broker, people):
    add_task(ctx, "quiz", "c1", max_attempts=3)
    entry = Entry(people["lms"], answer("quiz", "ann"), "same")
    outcomes = submitting.submit_group(ctx, [entry, entry, entry])
    assert [o.created for o in outcomes] == [True, False, False]
    assert len({o.row.id for o in outcomes}) == 1
    assert stored(ctx, "ann") == (1, 1) and len(broker.sent) == 1


def test_an_idempotency_key_longer_than_the_column_is_refused(ctx, people):
    add_task(ctx, "quiz", "c1")
    with pytest.raises(InvalidInput, match="longer than 200 characters"):
        submitting.submit(ctx, people["lms"], answer("quiz", "ann"), "k" * 201)


def test_who_may_submit_what(ctx, people):
    add_task(ctx, "quiz", "c1")
    add_task(ctx, "c2-quiz", "c2")
    with pytest.raises(Forbidden, match="a student may only submit as themselves"):
        submitting.submit(ctx, people["ann"], answer("quiz", "bob"))
    with pytest.raises(Forbidden, match="instructors do not submit answers"):
        submitting.submit(ctx, people["instructor"], answer("quiz", "ann"))
    with pytest.raises(NotFound, match="no task c2-quiz"):  # another course's: missing
        submitting.submit(ctx, people["lms"], answer("c2-quiz", "ann"))
    assert submitting.submit(ctx, people["ann"], answer("quiz", "ann")).created
    assert submitting.submit(ctx, people["admin"], answer("c2-quiz", "zoe")).row.course == "c2"
    assert stored(ctx, "bob") == (0, 0)


def test_an_archived_or_unready_task_takes_no_submission(ctx, people):
    add_task(ctx, "quiz", "c1")
    tasks.archive(ctx, people["instructor"], "quiz")
    with pytest.raises(Conflict, match="task quiz is archived"):
        submitting.submit(ctx, people["lms"], answer("quiz", "ann"))
    assert stored(ctx, "ann") == (0, 0)


def test_the_queue_limit_holds(ctx, broker, people, settings):
    add_task(ctx, "open", "c1", max_attempts=None)
    tight = type(ctx)(settings.model_copy(update={"max_queue_length": 2}), broker)
    entries = [Entry(people["lms"], answer("open", f"s{i}")) for i in range(4)]
    outcomes = submitting.submit_group(tight, entries)
    assert [isinstance(o, Accepted) for o in outcomes] == [True, True, False, False]
    assert all(isinstance(o, Unavailable) and o.retry_after_s == 10 for o in outcomes[2:])
    assert len(broker.sent) == 2


def test_a_posted_submission_is_read_only_after_its_key_authenticates(ctx, people):
    add_task(ctx, "quiz", "c1")
    parsed = []

    def parse(raw: bytes) -> NewSubmission:
        parsed.append(raw)
        return answer("quiz", "ann")

    outcomes = submitting.submit_group(ctx, [Posted("grk_unknown", b"{", None)], parse)
    assert isinstance(outcomes[0], Unauthorized) and parsed == []


def test_nothing_is_stored_or_sent_when_the_broker_is_down(ctx, broker, people):
    """The row is the source of truth: a broker that does not answer loses no submission
    (the reaper sends its message later)."""
    add_task(ctx, "quiz", "c1")
    broker.down = True
    made = submitting.submit(ctx, people["lms"], answer("quiz", "ann"))
    assert made.created and stored(ctx, "ann") == (1, 1) and broker.sent == []


@pytest.mark.parametrize("role", [Role.ADMIN, Role.LMS])
def test_a_caller_in_no_course_and_one_in_a_course_reach_the_shared_bank(ctx, people, role):
    add_task(ctx, "bank-quiz", None)
    who = people["admin" if role == Role.ADMIN else "lms"]
    made = submitting.submit(ctx, who, answer("bank-quiz", "ann"))
    assert made.row.task_key == "bank-quiz"
