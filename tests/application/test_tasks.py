"""Tasks on SQLite: posting a spec (a new version, its self-test queued after the commit),
the views each caller gets, archiving and regrading a version, and start-up."""

from __future__ import annotations

import pytest

from services.errors import Conflict, Forbidden, InvalidInput, NotFound
from services.queue import GRADE, VALIDATE
from tests.application.conftest import choice_spec
from usecases import startup, submitting, tasks, worker
from usecases.admission import NewSubmission


@pytest.fixture
def code_spec(settings) -> bytes:
    return (settings.tasks_dir / "finetune-freeze.yaml").read_bytes()


def test_a_posted_code_spec_is_queued_for_its_self_test_once(ctx, broker, people, code_spec):
    posted = tasks.post_spec(ctx, people["instructor"], code_spec, course="c2")
    assert (posted["version"], posted["status"], posted["created"]) == (1, "validating", True)
    assert [(m.name, m.args) for m in broker.sent] == [(VALIDATE, [broker.sent[0].args[0]])]
    again = tasks.post_spec(ctx, people["instructor"], code_spec, course=None)
    assert (again["version"], again["created"]) == (1, False)  # identical: no new version
    assert len(broker.sent) == 1
    view = tasks.get_task(ctx, people["instructor"], "finetune-freeze")
    assert view["course"] == "c1"  # an instructor's course, whatever it names


def test_a_choice_spec_is_ready_at_once_and_needs_no_self_test(ctx, broker, people):
    posted = tasks.post_spec(ctx, people["admin"], choice_spec("quiz").encode(), course=None)
    assert (posted["status"], posted["created"]) == ("ready", True) and broker.sent == []
    assert tasks.get_task(ctx, people["ann"], "quiz")["course"] is None  # the shared bank


def test_who_may_post_a_spec(ctx, people):
    for who in ("lms", "ann"):
        with pytest.raises(Forbidden, match="this needs one of the roles"):
            tasks.post_spec(ctx, people[who], b"\xff", course=None)  # refused before parsing
    with pytest.raises(InvalidInput, match="the spec must be UTF-8 text"):
        tasks.post_spec(ctx, people["instructor"], b"\xff", course=None)
    tasks.post_spec(ctx, people["admin"], choice_spec("bank").encode(), course=None)
    with pytest.raises(Conflict, match="reserved"):
        tasks.post_spec(ctx, people["instructor"], choice_spec("bank").encode(), course=None)


@pytest.fixture
def posted(ctx, people) -> None:
    """quiz in c1, quiz in c2 (ids are per course), bank in the shared bank."""
    tasks.post_spec(ctx, people["instructor"], choice_spec("quiz", 2).encode(), None)
    tasks.post_spec(ctx, people["other_instructor"], choice_spec("quiz", 2).encode(), None)
    tasks.post_spec(ctx, people["admin"], choice_spec("bank").encode(), None)


def test_each_caller_sees_its_courses_tasks_and_its_staff_the_spec(ctx, people, posted):
    listed = {who: tasks.list_tasks(ctx, people[who]) for who in ("admin", "lms", "ann")}
    assert [(v["id"], v["course"]) for v in listed["ann"]] == [("bank", None), ("quiz", "c1")]
    assert listed["lms"] == listed["ann"]
    assert len(listed["admin"]) == 3
    assert all("spec" not in v for views in listed.values() for v in views)
    assert "spec" in tasks.get_task(ctx, people["instructor"], "quiz")
    assert "spec" not in tasks.get_task(ctx, people["instructor"], "bank")  # not its staff
    assert "spec" not in tasks.get_task(ctx, people["lms"], "quiz")
    with pytest.raises(Conflict, match="several courses"):  # an admin names the course
        tasks.get_task(ctx, people["admin"], "quiz")
    assert tasks.get_task(ctx, people["admin"], "quiz", course="c2")["course"] == "c2"


def test_versions_archive_and_regrade_are_their_staffs(ctx, people, posted):
    calls = {  # archive last: the others still find the task
        "version": lambda who: tasks.get_version(ctx, who, "quiz", 1),
        "regrade": lambda who: tasks.regrade_version(ctx, who, "quiz", 1),
        "archive": lambda who: tasks.archive(ctx, who, "quiz"),
    }
    for name, call in calls.items():
        with pytest.raises(Forbidden, match="this needs one of the roles admin, instructor"):
            call(people["lms"])
        assert call(people["other_instructor"]), name  # c2's own quiz: ids are per course
        assert call(people["instructor"]), name
    with pytest.raises(Forbidden, match="only an instructor of this course or an admin"):
        tasks.archive(ctx, people["instructor"], "bank")
    with pytest.raises(NotFound, match="task quiz has no version 9"):
        tasks.get_version(ctx, people["instructor"], "quiz", 9)
    with pytest.raises(NotFound, match="no task nope"):
        tasks.get_version(ctx, people["instructor"], "nope", 1)


def test_a_version_regrade_queues_every_submission_of_it(ctx, broker, people, posted):
    ids = [
        submitting.submit(ctx, people["lms"], NewSubmission("quiz", s, choice="B")).row.id
        for s in ("ann", "bob")
    ]
    for submission_id in ids:
        worker.grade_submission(ctx, submission_id)
    broker.take()
    done = tasks.regrade_version(ctx, people["instructor"], "quiz", 1)
    assert done == {"task_id": "quiz", "version": 1, "regrading": 2}
    assert sorted(m.args[0] for m in broker.take(GRADE)) == sorted(ids)


def test_an_archived_task_is_open_again_once_a_new_version_is_posted(ctx, people, posted):
    tasks.archive(ctx, people["instructor"], "quiz")
    assert tasks.get_task(ctx, people["ann"], "quiz")["archived"] is True
    tasks.post_spec(ctx, people["instructor"], choice_spec("quiz", 3).encode(), None)
    made = submitting.submit(ctx, people["lms"], NewSubmission("quiz", "ann", choice="A"))
    assert made.attempts_left == 2


def test_start_up_loads_the_bank_and_queues_its_self_tests_once(ctx, broker, settings):
    bank = ctx.__class__(settings.model_copy(update={"bootstrap_admin_key": "grk_boot"}), broker)
    pending = startup.prepare(bank)
    assert pending and sorted(m.args[0] for m in broker.take(VALIDATE)) == sorted(pending)
    assert startup.prepare(bank) == [] and broker.sent == []
