"""Assignment and Grade Services: after each final result the worker sends the learner's
score under the link's policy, once per change, to a line item found or created once; our
token and score requests are held to the OAuth and AGS rules by the tests' platform; the
log shows each try, and staff resync a task."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from db.lti_models import LtiPassback
from db.models import Role, now
from services.queue import GRADE, PASSBACK
from tests.lti.conftest import INSTRUCTOR, SCOPES, launch
from usecases import lti_grades, worker

RIGHT, WRONG = "A", "B"


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def answer(client, ctx, broker, choice: str) -> str:
    """The learner answers in the pages; the worker grades it and sends what it queued.
    The submission's id."""
    page = client.get("/learn/tasks/quiz").text
    sent = client.post(
        "/learn/tasks/quiz", data={"answer": "choice", "choice": choice, "csrf_token": csrf_of(page)},
        follow_redirects=False,
    )  # fmt: skip
    assert sent.status_code == 303, sent.text
    [grading] = broker.take(GRADE)
    assert worker.grade_submission(ctx, grading.args[0]) == "stored"
    return grading.args[0]


def deliver(ctx, broker) -> list:
    """Run every passback message the worker queued; the delays of those that will retry."""
    return [lti_grades.send_passback(ctx, m.args[0]) for m in broker.take(PASSBACK)]


@pytest.fixture
def learner(client, registered):
    response = launch(client, registered, custom={"task_id": "quiz"}, sub="sub-ann")
    assert response.status_code == 303
    return client


def test_the_best_score_goes_to_the_lms_once_per_change(learner, registered, ctx, broker):
    answer(learner, ctx, broker, WRONG)
    deliver(ctx, broker)
    answer(learner, ctx, broker, RIGHT)
    deliver(ctx, broker)
    answer(learner, ctx, broker, WRONG)  # worse: the LMS keeps the best
    deliver(ctx, broker)
    assert registered.errors == []
    [item] = registered.lineitems
    assert item["resourceId"] == "quiz" and item["resourceLinkId"] == "link-1"
    assert item["label"] == "Which call freezes a model?" and item["scoreMaximum"] == 1
    bodies = [s["body"] for s in registered.scores]
    assert [(b["scoreGiven"], b["scoreMaximum"]) for b in bodies] == [(0, 1), (1, 1)]
    for body in bodies:
        assert body["userId"] == "sub-ann"
        assert body["activityProgress"] == "Completed"
        assert body["gradingProgress"] == "FullyGraded"
    assert bodies[0]["comment"] == "failed: 0 of 1" and bodies[1]["comment"] == "passed: 1 of 1"
    assert len(registered.token_requests) == 1  # the access token is cached until it expires
    assert set(registered.token_requests[0]["scope"].split()) == set(SCOPES)


def test_the_latest_policy_sends_a_worse_score_too(client, registered, ctx, broker):
    launch(client, registered, custom={"task_id": "quiz", "grade_policy": "latest"}, sub="s-1")
    for choice in (RIGHT, WRONG):
        answer(client, ctx, broker, choice)
        deliver(ctx, broker)
    assert [s["body"]["scoreGiven"] for s in registered.scores] == [1, 0]
    assert registered.errors == []


def test_the_launchs_line_item_is_used_and_none_is_created(client, registered, ctx, broker):
    registered.lineitems.append(
        {"id": f"{registered.url}/lineitems/1", "label": "set by the LMS", "scoreMaximum": 1}
    )
    launch(client, registered, custom={"task_id": "quiz"}, lineitem=f"{registered.url}/lineitems/1")
    answer(client, ctx, broker, RIGHT)
    deliver(ctx, broker)
    assert len(registered.lineitems) == 1 and registered.scores[0]["lineitem"] == 1
    assert registered.errors == []


def test_a_line_item_is_created_once_for_every_learner_of_a_link(client, registered, ctx, broker):
    from fastapi.testclient import TestClient

    other = TestClient(client.app)
    launch(client, registered, custom={"task_id": "quiz"}, sub="ann")
    launch(other, registered, custom={"task_id": "quiz"}, sub="bob")
    answer(client, ctx, broker, RIGHT)
    answer(other, ctx, broker, WRONG)
    deliver(ctx, broker)
    assert len(registered.lineitems) == 1
    assert sorted(s["body"]["userId"] for s in registered.scores) == ["ann", "bob"]


def test_a_failed_passback_is_retried_with_backoff_and_logged(learner, registered, ctx, broker):
    registered.score_status = 503
    submission_id = answer(learner, ctx, broker, RIGHT)
    [delay] = deliver(ctx, broker)
    assert delay == ctx.settings.lti_passback_backoff_s
    [retry] = broker.take(PASSBACK)
    assert retry.countdown == delay
    [row] = lti_grades.submission_log(ctx, _admin(ctx), submission_id)
    assert row["state"] == "pending" and row["tries"] == 1 and row["last_status_code"] == 503
    assert "the platform is down" in row["last_error"]
    registered.score_status = 200
    with ctx.unit_of_work() as work:  # the backoff has passed
        work.session.execute(update(LtiPassback).values(next_attempt_at=now() - timedelta(1)))
    assert lti_grades.send_passback(ctx, retry.args[0]) is None
    [row] = lti_grades.submission_log(ctx, _admin(ctx), submission_id)
    assert row["state"] == "sent" and row["tries"] == 2 and row["last_status_code"] == 200
    assert row["last_error"] is None and row["score_given"] == 1
    assert len(registered.scores) == 1


def test_the_log_is_on_the_desk_and_staff_resync_a_task(client, registered, ctx, broker):
    launch(client, registered, custom={"task_id": "quiz"}, sub="ann")
    answer(client, ctx, broker, RIGHT)
    deliver(ctx, broker)
    client.cookies.clear()
    launch(client, registered, custom={"task_id": "quiz"}, roles=(INSTRUCTOR,), sub="teacher")
    log = client.get("/teach/lti/tasks/quiz/passbacks")
    assert log.status_code == 200 and "ann" in log.text and "passback-sent" in log.text
    submission_id = re.search(r'href="/teach/submissions/(\w+)"', log.text).group(1)
    one = client.get(f"/teach/submissions/{submission_id}").text  # its own log, at the desk
    assert 'id="passback-log"' in one and "passback-sent" in one
    resync = client.post(
        "/teach/lti/tasks/quiz/resync", data={"csrf_token": csrf_of(log.text)},
        follow_redirects=False,
    )  # fmt: skip
    assert resync.status_code == 303 and resync.headers["location"].endswith("resyncing=1")
    deliver(ctx, broker)
    assert [s["body"]["scoreGiven"] for s in registered.scores] == [1, 1]
    assert registered.errors == []


def test_the_api_shows_a_submissions_passbacks_to_those_who_may_read_it(
    learner, registered, ctx, broker, admin, made_key
):
    submission_id = answer(learner, ctx, broker, RIGHT)
    deliver(ctx, broker)
    path = f"/v1/lti/submissions/{submission_id}/passbacks"
    [row] = learner.get(path, headers=admin).json()
    assert row["state"] == "sent" and row["user_id"] == "sub-ann"
    stranger = {"Authorization": f"Bearer {made_key(Role.INSTRUCTOR, 'c9')}"}
    assert learner.get(path, headers=stranger).status_code == 404


def _admin(ctx):
    from services.keys import Principal

    return Principal("", Role.ADMIN, None, None, "")


def test_the_roster_from_the_lms_lists_learners_who_have_not_started(
    client, registered, ctx, broker
):
    member = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
    registered.members = [
        {"user_id": "ann", "name": "Ann Example", "roles": [member], "status": "Active"},
        {"user_id": "cid", "given_name": "Cid", "family_name": "Later", "roles": [member]},
        {"user_id": "teacher", "name": "T. Eacher", "roles": [INSTRUCTOR]},
    ]
    launch(client, registered, custom={"task_id": "quiz"}, sub="ann")
    answer(client, ctx, broker, RIGHT)
    deliver(ctx, broker)
    client.cookies.clear()
    launch(client, registered, custom={"task_id": "quiz"}, roles=(INSTRUCTOR,), sub="teacher")
    page = client.get("/teach/lti/tasks/quiz/passbacks")
    assert page.status_code == 200, page.text
    roster = page.text.split('id="roster"')[1].split("</table>")[0]
    assert "Ann Example" in roster and "Cid Later" in roster and "T. Eacher" not in roster
    rows = re.findall(r"<tr><td>(\w+)</td><td>[^<]*</td><td>(\d+)</td>", roster)
    assert rows == [("ann", "1"), ("cid", "0")]
    desk = client.get("/teach/tasks/quiz").text  # the task's desk page lists them too
    assert 'id="roster"' in desk and "Cid Later" in desk
    assert registered.errors == []


def test_the_reaper_sends_a_passback_whose_message_was_lost(learner, registered, ctx, broker):
    answer(learner, ctx, broker, RIGHT)
    assert len(broker.take(PASSBACK)) == 1  # lost
    assert worker.reap(ctx)["lti_passbacks"] == 0  # not overdue yet
    with ctx.unit_of_work() as work:
        work.session.execute(update(LtiPassback).values(next_attempt_at=now() - timedelta(1)))
    assert worker.reap(ctx)["lti_passbacks"] == 1
    deliver(ctx, broker)
    assert [s["body"]["scoreGiven"] for s in registered.scores] == [1]
