"""Submitting, on SQLite: attempts counted once per accepted submission, an
`Idempotency-Key` answered with its first submission (and a 409 when reused with another
body), blanks and choices held to the task's options, the queue's limit, who may submit
what, and every grading message sent after its row was committed (the `ctx` fixture
checks that for every test)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.main import create_app
from core.settings import PROJECT_ROOT
from db.models import AttemptCounter, Role, Submission, TaskVersion, VersionStatus
from graders.spec import parse_spec
from services import catalog
from services import keys as key_store
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
    again = submitting.submit(ctx, people["lms"], answer("quiz", "ann"), "key-1")
    assert (again.created, again.row.id, again.attempts_left) == (False, first.row.id, 2)
    assert stored(ctx, "ann") == (1, 1)
    assert len(broker.take(GRADE)) == 1  # the repeat sent nothing
    second_lms = principal(Role.LMS, "c1")  # keys are a caller's own: its own submission
    theirs = submitting.submit(ctx, second_lms, answer("quiz", "ann"), "key-1")
    assert theirs.created and theirs.row.id != first.row.id
    assert stored(ctx, "ann") == (2, 2)


@pytest.mark.parametrize(
    ("other", "differ"),
    [
        pytest.param(answer("quiz", "bob"), "student_id", id="another-student"),
        pytest.param(answer("quiz", "ann", "B"), "choice", id="another-answer"),
        pytest.param(answer("quiz-2", "ann"), "task_id", id="another-task"),
        pytest.param(
            NewSubmission("quiz", "ann", choice="A", callback_url="http://127.0.0.1:9/hook"),
            "callback_url",
            id="another-callback",
        ),
    ],
)
def test_an_idempotency_key_reused_with_another_body_is_a_conflict(
    ctx, broker, people, other, differ
):
    """Not the first submission (another student's record), not a new one: a 409 naming what
    differs, nothing stored or counted; the first body still gets its submission."""
    add_task(ctx, "quiz", "c1", max_attempts=3)
    add_task(ctx, "quiz-2", "c1", max_attempts=3)
    first = submitting.submit(ctx, people["lms"], answer("quiz", "ann"), "key-1")
    broker.take(GRADE)
    with pytest.raises(Conflict, match=rf"'key-1' was already used .*\(different: {differ}\)"):
        submitting.submit(ctx, people["lms"], other, "key-1")
    assert stored(ctx, "ann") == (1, 1) and stored(ctx, "bob") == (0, 0)
    assert broker.sent == []
    again = submitting.submit(ctx, people["lms"], answer("quiz", "ann"), "key-1")
    assert (again.created, again.row.id, again.attempts_left) == (False, first.row.id, 2)


def test_a_reused_idempotency_key_does_not_show_the_first_students_record(ctx, people):
    add_task(ctx, "quiz", "c1", max_attempts=3)
    submitting.submit(ctx, people["lms"], answer("quiz", "ann"), "key-1")
    with pytest.raises(Conflict) as refused:
        submitting.submit(ctx, people["lms"], answer("quiz", "bob"), "key-1")
    assert "ann" not in str(refused.value)


def test_a_key_reused_with_another_body_within_one_group_is_a_conflict(ctx, broker, people):
    add_task(ctx, "quiz", "c1", max_attempts=3)
    same = Entry(people["lms"], answer("quiz", "ann"), "same")
    other = Entry(people["lms"], answer("quiz", "bob"), "same")
    outcomes = submitting.submit_group(ctx, [same, other, same])
    assert outcomes[0].created and not outcomes[2].created
    assert outcomes[2].row.id == outcomes[0].row.id
    assert isinstance(outcomes[1], Conflict) and "different: student_id" in str(outcomes[1])
    assert stored(ctx, "ann") == (1, 1) and stored(ctx, "bob") == (0, 0)
    assert len(broker.sent) == 1


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


# --- the answer's values: the task's blanks and options ---------------------------------


def ready_freeze_task(ctx, course: str | None) -> None:
    """The bank's freeze task (one blank, options A to D; D is requires_grad), marked ready
    without a self-test."""
    text = (PROJECT_ROOT / "taskbank" / "tasks" / "finetune-freeze.yaml").read_text()
    with ctx.unit_of_work() as work:
        version, _ = catalog.add_version(work.session, parse_spec(text), course)
        work.session.execute(
            update(TaskVersion)
            .where(TaskVersion.id == version.id)
            .values(status=VersionStatus.READY)
        )


@pytest.mark.parametrize(
    ("blanks", "expected"),
    [
        pytest.param(
            {1: "D", 2: "A"},
            r"task finetune-freeze has no blank \[2\]; its blanks are \[1\]",
            id="unknown-blank",
        ),
        pytest.param(
            {7: "D"},
            r"task finetune-freeze has no blank \[7\]; its blanks are \[1\]",
            id="only-an-unknown-blank",
        ),
        pytest.param(
            {1: "Z"}, r"blank \[1\] takes one of its options A, B, C, D, not 'Z'", id="bad-letter"
        ),
        pytest.param(
            {1: "requires_grad_(False) or model.requires_grad_(False); param.x"},
            r"blank \[1\] takes one of its options A, B, C, D, not 'requires_grad_",
            id="code-in-a-blank",
        ),
        pytest.param({1: "DD"}, r"blank \[1\] takes one of its options", id="two-letters"),
    ],
)
def test_a_blank_the_template_lacks_or_a_value_not_among_its_options_is_refused(
    ctx, broker, people, blanks, expected
):
    ready_freeze_task(ctx, "c1")
    new = NewSubmission("finetune-freeze", "ann", blanks=blanks)
    with pytest.raises(InvalidInput, match=expected):
        submitting.submit(ctx, people["lms"], new)
    assert stored(ctx, "ann") == (0, 0) and broker.sent == []


@pytest.mark.parametrize("value", ["D", " d "])
def test_a_blank_filled_with_one_of_its_options_is_accepted(ctx, broker, people, value):
    ready_freeze_task(ctx, "c1")
    new = NewSubmission("finetune-freeze", "ann", blanks={1: value})
    made = submitting.submit(ctx, people["lms"], new)
    assert (made.created, made.attempts_left, made.row.blanks) == (True, 2, {"1": value})
    assert stored(ctx, "ann") == (1, 1) and len(broker.sent) == 1


@pytest.mark.parametrize("choice", ["Z", "AB", "", "model.requires_grad_(False)"])
def test_a_choice_not_among_the_options_is_refused(ctx, broker, people, choice):
    add_task(ctx, "quiz", "c1", max_attempts=2)
    with pytest.raises(InvalidInput, match=r"is not one of the options of task quiz: A, B, C"):
        submitting.submit(ctx, people["lms"], answer("quiz", "ann", choice))
    assert stored(ctx, "ann") == (0, 0) and broker.sent == []
    made = submitting.submit(ctx, people["lms"], answer("quiz", "ann", " b"))  # as judged
    assert (made.created, made.attempts_left) == (True, 1)


# --- over HTTP: the REST API's answers, and the learner's page -------------------------


@pytest.fixture
def client(ctx):
    app = create_app(ctx.settings, prepare_on_start=False)
    app.state.context = ctx
    with TestClient(app, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def lms_key(ctx) -> dict[str, str]:
    with ctx.unit_of_work() as work:
        plaintext = key_store.create_key(work.session, name="lms", role=Role.LMS, course="c1")[1]
    return {"Authorization": f"Bearer {plaintext}"}


def test_the_api_answers_422_for_a_bad_blank_or_choice_and_409_for_a_reused_key(
    ctx, client, lms_key, broker
):
    ready_freeze_task(ctx, "c1")
    add_task(ctx, "quiz", "c1", max_attempts=3)
    post = lambda body, **headers: client.post(  # noqa: E731
        "/v1/submissions", json=body, headers={**lms_key, **headers}
    )
    bad_blank = post({"task_id": "finetune-freeze", "student_id": "ann", "blanks": {"1": "Z"}})
    assert bad_blank.status_code == 422, bad_blank.text
    assert "blank [1] takes one of its options A, B, C, D" in bad_blank.text
    bad_choice = post({"task_id": "quiz", "student_id": "ann", "choice": "Z"})
    assert bad_choice.status_code == 422 and "options of task quiz: A, B, C" in bad_choice.text
    assert stored(ctx, "ann") == (0, 0) and broker.sent == []

    body = {"task_id": "quiz", "student_id": "ann", "choice": "A"}
    first = post(body, **{"Idempotency-Key": "k1"})
    assert first.status_code == 202, first.text
    reused = post({**body, "student_id": "bob"}, **{"Idempotency-Key": "k1"})
    assert reused.status_code == 409 and "different: student_id" in reused.text
    assert "ann" not in reused.text
    again = post(body, **{"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert stored(ctx, "ann") == (1, 1) and stored(ctx, "bob") == (0, 0)

    documented = client.get("/openapi.json").json()["paths"]["/v1/submissions"]["post"]
    assert "Idempotency-Key" in documented["responses"]["409"]["description"]


def test_the_learners_page_refuses_a_choice_not_among_the_options(ctx, client, lms_key, broker):
    add_task(ctx, "quiz", "c1", max_attempts=2)
    made = client.post("/v1/links", json={"student_id": "ann"}, headers=lms_key)
    assert made.status_code == 201, made.text
    entered = client.get(made.json()["url"], follow_redirects=False)
    assert entered.status_code == 303
    page = client.get("/learn/tasks/quiz").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    sent = client.post(
        "/learn/tasks/quiz", data={"answer": "choice", "choice": "Z", "csrf_token": token},
        follow_redirects=False,
    )  # fmt: skip
    assert sent.status_code == 422 and "is not one of the options of task quiz" in sent.text
    assert stored(ctx, "ann") == (0, 0) and broker.sent == []
