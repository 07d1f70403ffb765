"""The instructor's desk on SQLite (the recorder for a queue): signing in with an instructor
key and nothing else, the session's cookie and CSRF token, one course's tasks and
submissions (numbered, filtered, best scores and their spread), what a submission sent, a
spec's problems beside the field each names, the CSV made safe for spreadsheets, and what a
learner wrote kept inert. The whole desk, in a browser: tests/browser/test_instructor.py."""

from __future__ import annotations

import csv
import io
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.main import create_app
from core.settings import PROJECT_ROOT
from db.models import ApiKey, Role, TaskVersion, VersionStatus, now
from graders.spec import parse_spec
from services import catalog
from services.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from services.queue import GRADE
from tests.application.conftest import add_task, choice_spec
from usecases import desk, links, staff_sessions, submissions, submitting, worker
from usecases.admission import NewSubmission
from web.export import best_scores_csv, cell

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def answer(ctx, who, student: str, choice: str, task_id: str = "quiz", grade: bool = True) -> str:
    made = submitting.submit(ctx, who, NewSubmission(task_id, student, choice=choice)).row.id
    if grade:
        assert worker.grade_submission(ctx, made) == "stored"
    return made


def ready_freeze_task(ctx, course: str) -> None:
    """The bank's freeze task (its template with blanks) as the course's, marked ready
    without a self-test."""
    text = (PROJECT_ROOT / "taskbank" / "tasks" / "finetune-freeze.yaml").read_text()
    spec = parse_spec(text.replace("id: finetune-freeze", "id: freeze"))
    with ctx.unit_of_work() as work:
        version, _ = catalog.add_version(work.session, spec, course)
        work.session.execute(
            update(TaskVersion)
            .where(TaskVersion.id == version.id)
            .values(status=VersionStatus.READY)
        )


# --- signing in ------------------------------------------------------------------------


def test_only_an_instructor_key_signs_in_and_the_session_acts_as_it(ctx, made_key):
    signed = staff_sessions.sign_in(ctx, "  " + made_key(Role.INSTRUCTOR) + "\n")
    staff = staff_sessions.staff_of(ctx, signed.cookie)
    assert (staff.who.role, staff.who.course) == (Role.INSTRUCTOR, "c1")
    assert staff.csrf_token == signed.staff.csrf_token and len(staff.csrf_token) >= 32
    for role, course, student in (
        (Role.LMS, "c1", None), (Role.STUDENT, "c1", "ann"), (Role.ADMIN, None, None),
    ):  # fmt: skip
        with pytest.raises(Forbidden, match="the desk is for a course's instructors"):
            staff_sessions.sign_in(ctx, made_key(role, course, student))
    for key in ("", "grk_no_such_key"):
        with pytest.raises(Unauthorized):
            staff_sessions.sign_in(ctx, key)


def test_a_session_ends_when_signed_out_or_its_key_is_revoked(ctx, made_key):
    first = staff_sessions.sign_in(ctx, made_key(Role.INSTRUCTOR))
    staff_sessions.sign_out(ctx, first.cookie)
    with pytest.raises(Unauthorized):
        staff_sessions.staff_of(ctx, first.cookie)
    second = staff_sessions.sign_in(ctx, made_key(Role.INSTRUCTOR))
    with ctx.unit_of_work() as work:
        work.session.execute(
            update(ApiKey).where(ApiKey.id == second.staff.who.key_id).values(revoked_at=now())
        )
    with pytest.raises(Unauthorized):
        staff_sessions.staff_of(ctx, second.cookie)
    with pytest.raises(Unauthorized):
        staff_sessions.staff_of(ctx, None)


def test_a_learners_session_is_refused_at_the_desk_whichever_cookie_brings_it(ctx, people):
    add_task(ctx, "quiz", "c1")
    url = links.create_link(ctx, people["lms"], "ann", None, None, "http://testserver")["url"]
    opened = links.open_link(ctx, url.rsplit("/", 1)[1])
    for cookies in ((opened.cookie, None), (None, opened.cookie), ("unknown", opened.cookie)):
        with pytest.raises(Forbidden, match="not student"):
            staff_sessions.staff_of(ctx, *cookies)


# --- one course's tasks and submissions ------------------------------------------------


def test_the_task_list_has_the_courses_tasks_then_the_banks_marked(ctx, people):
    add_task(ctx, "quiz", "c1")
    add_task(ctx, "bank-quiz", None)
    add_task(ctx, "other-quiz", "c2")
    listed = desk.task_list(ctx, people["instructor"])
    assert [(t["id"], t["shared"]) for t in listed] == [("quiz", False), ("bank-quiz", True)]
    assert listed[0]["report"] == "multiple choice: graded by key"  # the staff view
    assert "report" not in listed[1]  # the bank's: what GET /v1/tasks/{id} shows an instructor
    with pytest.raises(Forbidden):
        desk.task_list(ctx, people["lms"])


def test_a_tasks_submissions_are_numbered_filtered_and_scored_per_learner(ctx, people):
    add_task(ctx, "quiz", "c1", max_attempts=None)
    add_task(ctx, "quiz", "c2", max_attempts=None)
    lms = people["lms"]
    ann_1 = answer(ctx, lms, "ann", "B")
    ann_2 = answer(ctx, lms, "ann", "A")
    bob_1 = answer(ctx, lms, "bob", "B")
    cat_1 = answer(ctx, lms, "cat", "A", grade=False)
    answer(ctx, people["other_lms"], "ann", "A")  # another course's ann
    page = desk.task_desk(ctx, people["instructor"], "quiz")
    numbered = {s["id"]: (s["student_id"], s["attempt"]) for s in page["submissions"]}
    assert numbered == {
        cat_1: ("cat", 1), bob_1: ("bob", 1), ann_2: ("ann", 2), ann_1: ("ann", 1),
    }  # fmt: skip
    assert [s["id"] for s in page["submissions"]] == [cat_1, bob_1, ann_2, ann_1]
    assert [(b["student_id"], b["best_score"], b["attempts"]) for b in page["best"]] == [
        ("ann", 1.0, 2), ("bob", 0.0, 1), ("cat", None, 1),
    ]  # fmt: skip
    assert [b["count"] for b in page["histogram"]["bins"]] == [1, 1]  # scores 0 and 1
    assert (page["histogram"]["graded"], page["histogram"]["pending"]) == (2, 1)
    assert page["by_version"] == {1: 4} and page["may_regrade_all"]

    only_ann = desk.task_desk(ctx, people["instructor"], "quiz", student_id="ann")
    assert [(s["id"], s["attempt"]) for s in only_ann["submissions"]] == [(ann_2, 2), (ann_1, 1)]
    failed = desk.task_desk(ctx, people["instructor"], "quiz", outcome="failed")
    assert {s["id"] for s in failed["submissions"]} == {ann_1, bob_1}
    pending = desk.task_desk(ctx, people["instructor"], "quiz", outcome="pending")
    assert [s["id"] for s in pending["submissions"]] == [cat_1]
    with pytest.raises(InvalidInput, match="outcome: must be one of"):
        desk.task_desk(ctx, people["instructor"], "quiz", outcome="<b>")
    assert desk.best_scores(ctx, people["instructor"], "quiz") == page["best"]


def test_staff_read_no_other_course_and_regrade_a_bank_task_one_answer_at_a_time(ctx, people):
    add_task(ctx, "quiz", "c2")
    add_task(ctx, "bank-quiz", None, max_attempts=None)
    theirs = answer(ctx, people["other_lms"], "ann", "A")
    with pytest.raises(NotFound):
        desk.task_desk(ctx, people["instructor"], "quiz")
    with pytest.raises(NotFound):
        desk.submission(ctx, people["instructor"], theirs)
    with pytest.raises(NotFound):
        desk.best_scores(ctx, people["instructor"], "quiz")
    mine = answer(ctx, people["lms"], "ann", "A", task_id="bank-quiz")
    answer(ctx, people["other_lms"], "zed", "A", task_id="bank-quiz")
    bank = desk.task_desk(ctx, people["instructor"], "bank-quiz")
    assert [s["id"] for s in bank["submissions"]] == [mine]  # only the course's answers
    assert not bank["may_regrade_all"]  # every course's answers: an admin's to regrade
    assert desk.submission(ctx, people["instructor"], mine)["may_regrade"]  # one of the course's


def test_a_submission_shows_what_it_sent(ctx, people):
    add_task(ctx, "quiz", "c1")
    ready_freeze_task(ctx, "c1")
    lms = people["lms"]
    chose = answer(ctx, lms, "ann", "A")
    view = desk.submission(ctx, people["instructor"], chose)
    assert view["answer"] == {
        "kind": "choice",
        "choice": "A",
        "text": "model.requires_grad_(False)",
    }
    assert (view["attempt"], view["kind"], view["may_regrade"]) == (1, "choice", True)
    filled = submitting.submit(ctx, lms, NewSubmission("freeze", "ann", blanks={1: "D"})).row.id
    blanks = desk.submission(ctx, people["instructor"], filled)["answer"]
    assert blanks["blanks"] == [{"blank": 1, "value": "D", "code": "requires_grad"}]
    assert "param.requires_grad = False" in blanks["code"]
    code = submitting.submit(ctx, lms, NewSubmission("freeze", "ann", code=HOSTILE)).row.id
    assert desk.submission(ctx, people["instructor"], code)["answer"] == {
        "kind": "code", "code": HOSTILE,
    }  # fmt: skip
    own = submissions.read(ctx, people["ann"], code, with_answer=True)  # the learner's own
    assert own["answer"]["code"] == HOSTILE
    assert "answer" not in submissions.read(ctx, people["ann"], code)  # the API's view


def test_the_histogram_bins_scores_from_zero_to_the_maximum():
    spread = desk.histogram([0, 0.5, 3, 9.99, 10, None], 10)  # a bin for each whole score
    assert [b["count"] for b in spread["bins"]] == [2, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1]
    assert [(b["low"], b["high"]) for b in spread["bins"]][::10] == [(0, 1), (10, 10)]
    assert (spread["graded"], spread["pending"]) == (5, 1)
    tenths = desk.histogram([0, 1.3, 2.5, 40], 2.5)  # ten bins; the last holds the maximum
    assert [b["count"] for b in tenths["bins"]] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    many = desk.histogram([100, 99, 5], 100)
    assert len(many["bins"]) == 10 and many["bins"][-1]["count"] == 2
    assert desk.histogram([], None)["graded"] == 0


def test_the_csv_escapes_what_a_spreadsheet_would_run():
    assert [cell(v) for v in ("=1+1", "+a", "-2", "@SUM(A1)", "\tx", "ann", None, 2.5, 3)] == [
        "'=1+1", "'+a", "'-2", "'@SUM(A1)", "'\tx", "ann", "", "2.5", "3",
    ]  # fmt: skip
    text = best_scores_csv(
        [{"student_id": '=HYPERLINK("x")', "best_score": 1.0, "max_score": 1.0, "attempts": 2,
          "last_at": "2026-01-01T00:00:00+00:00"}]
    )  # fmt: skip
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["student_id", "best_score", "max_score", "attempts", "last_submitted_at"]
    assert rows[1] == ['\'=HYPERLINK("x")', "1", "1", "2", "2026-01-01T00:00:00+00:00"]


# --- the desk over HTTP ----------------------------------------------------------------


@pytest.fixture
def client(ctx):
    add_task(ctx, "quiz", "c1", max_attempts=None)
    app = create_app(ctx.settings, prepare_on_start=False)
    app.state.context = ctx
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def token_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def signed_in(client: TestClient, key: str) -> TestClient:
    page = client.get("/teach/sign-in")
    assert page.status_code == 200
    done = client.post(
        "/teach/sign-in", data={"key": key, "csrf_token": token_of(page.text)},
        follow_redirects=False,
    )  # fmt: skip
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/teach"
    return client


def test_signing_in_sets_a_cookie_for_the_desk_alone(client, made_key):
    assert client.get("/teach", follow_redirects=False).headers["location"] == "/teach/sign-in"
    page = client.get("/teach/sign-in")
    forged = client.post("/teach/sign-in", data={"key": made_key(Role.INSTRUCTOR)})
    assert forged.status_code == 403  # no token: a form from elsewhere
    done = client.post(
        "/teach/sign-in", data={"key": made_key(Role.INSTRUCTOR), "csrf_token": token_of(page.text)},
        follow_redirects=False,
    )  # fmt: skip
    cookie = next(c for c in done.headers.get_list("set-cookie") if "grader_staff_session=" in c)
    assert "HttpOnly" in cookie and "Path=/teach" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http; over https it is Secure
    desk_page = client.get("/teach")
    assert desk_page.status_code == 200 and "Tasks of c1" in desk_page.text
    assert "script-src 'self'" in desk_page.headers["content-security-policy"]
    assert "<script>" not in desk_page.text and " style=" not in desk_page.text
    assert client.post("/teach/sign-out", data={}).status_code == 403  # no token
    out = client.post(
        "/teach/sign-out", data={"csrf_token": token_of(desk_page.text)}, follow_redirects=False
    )
    assert out.headers["location"] == "/teach/sign-in"
    assert client.get("/teach", follow_redirects=False).status_code == 303


def test_a_sign_in_posted_from_another_origin_is_refused(client, made_key):
    """A sibling origin (another port or subdomain) can plant the sign-in form's cookie,
    token and all, and post the attacker's key: the browser names that page's origin."""
    client.cookies.set("grader_staff_sign_in", "planted", path="/teach")
    form = {"key": made_key(Role.INSTRUCTOR), "csrf_token": "planted"}
    for origin in ("http://testserver:9999", "http://evil.testserver", "null"):
        sent = client.post("/teach/sign-in", data=form, headers={"Origin": origin})
        assert sent.status_code == 403 and "another site" in sent.text
        assert "grader_staff_session" not in client.cookies
    sent = client.post(
        "/teach/sign-in", data=form, headers={"Origin": "http://testserver"}, follow_redirects=False
    )
    assert sent.status_code == 303  # the service's own page


def test_a_wrong_key_shows_the_form_again_with_why(client, made_key):
    page = client.get("/teach/sign-in")
    for key, status in (("grk_nope", 401), (made_key(Role.LMS), 403)):
        again = client.post("/teach/sign-in", data={"key": key, "csrf_token": token_of(page.text)})
        assert again.status_code == status
        assert 'role="alert"' in again.text and 'aria-invalid="true"' in again.text


def test_a_learners_cookie_gets_403_at_the_desk(client, made_key):
    lms = {"Authorization": f"Bearer {made_key(Role.LMS)}"}
    url = client.post("/v1/links", json={"student_id": "ann"}, headers=lms).json()["url"]
    client.get(url, follow_redirects=False)
    learner_cookie = client.cookies.get("grader_session")
    client.cookies.clear()
    for cookies in ({"grader_session": learner_cookie}, {"grader_staff_session": learner_cookie}):
        client.cookies.clear()
        for name, value in cookies.items():
            client.cookies.set(name, value)
        response = client.get("/teach", follow_redirects=False)
        assert response.status_code == 403
        assert "Not yours to see" in response.text


def test_a_broken_spec_is_shown_again_with_each_problem_beside_its_field(client, made_key, ctx):
    signed_in(client, made_key(Role.INSTRUCTOR))
    token = token_of(client.get("/teach").text)
    broken = choice_spec("desk-quiz").replace("difficulty: easy\n", "difficulty: trivial\n")
    refused = client.post("/teach/tasks", data={"spec": broken + "bogus: <b>1</b>\n",
                                                "csrf_token": token})  # fmt: skip
    assert refused.status_code == 422
    assert '<li data-field="difficulty"><code class="field">difficulty</code>:' in refused.text
    assert '<li data-field="bogus">' in refused.text
    assert "bogus: &lt;b&gt;1&lt;/b&gt;" in refused.text  # the textarea holds what was posted
    assert 'aria-describedby="spec-help spec-problems"' in refused.text
    files = {"file": ("quiz.yaml", choice_spec("desk-quiz").encode(), "application/yaml")}
    posted = client.post(
        "/teach/tasks", data={"spec": "", "csrf_token": token}, files=files,
        follow_redirects=False,
    )  # fmt: skip
    assert posted.status_code == 303 and posted.headers["location"] == "/teach/tasks/desk-quiz"
    page = client.get("/teach/tasks/desk-quiz")
    assert "Ready: the self-test passed" in page.text
    status = client.get("/teach/tasks/desk-quiz/status").json()
    assert status["done"] and status["status"] == "ready"


def test_what_a_learner_wrote_is_inert_at_the_desk_and_the_csv_is_safe(
    client, made_key, ctx, people, broker
):
    lms = {"Authorization": f"Bearer {made_key(Role.LMS)}"}
    sent = client.post(
        "/v1/submissions", json={"task_id": "quiz", "student_id": HOSTILE, "choice": "A"},
        headers=lms,
    )  # fmt: skip
    assert sent.status_code == 202, sent.text
    signed_in(client, made_key(Role.INSTRUCTOR))
    page = client.get("/teach/tasks/quiz", params={"student": HOSTILE})
    assert HOSTILE not in page.text and "&lt;script&gt;" in page.text
    assert "Attempt 1" in page.text
    detail = client.get(f"/teach/submissions/{sent.json()['id']}")
    assert HOSTILE not in detail.text and "&lt;img src=x" in detail.text
    broker.take()
    regraded = client.post(
        f"/teach/submissions/{sent.json()['id']}/regrade",
        data={"csrf_token": token_of(detail.text)}, follow_redirects=False,
    )  # fmt: skip
    assert regraded.status_code == 303
    assert [m.args for m in broker.take(GRADE)] == [[sent.json()["id"]]]
    all_of_them = client.post(
        "/teach/tasks/quiz/regrade", data={"csrf_token": token_of(detail.text), "version": "1"},
        follow_redirects=False,
    )  # fmt: skip
    assert all_of_them.headers["location"] == "/teach/tasks/quiz?regrading=1"
    exported = client.get("/teach/tasks/quiz/best-scores.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[1][0] == HOSTILE  # starts with "<": text already; the header, then one row
    assert len(rows) == 2


def test_the_histogram_labels_each_bin_with_the_scores_it_holds(client, made_key, ctx, people):
    """A maximum of 0.25 makes ten bins 0.025 wide: each is labelled with its own edges
    (not rounded to the same number), the last holding the maximum."""
    spec = choice_spec("quarter").replace("answer: A\n", "answer: A\npoints: 0.25\n")
    with ctx.unit_of_work() as work:
        catalog.add_version(work.session, parse_spec(spec), "c1")
    answer(ctx, people["lms"], "ann", "A", task_id="quarter")
    answer(ctx, people["lms"], "bob", "B", task_id="quarter")
    signed_in(client, made_key(Role.INSTRUCTOR))
    page = client.get("/teach/tasks/quarter").text
    caption = re.search(r'<figcaption id="histogram-caption">(.*?)</figcaption>', page).group(1)
    assert caption == ("Best scores of 2 learners, by score; 0 to under 0.025: 1; 0.225 to 0.25: 1")
    titles = re.findall(r"<title>(.*?)</title>", page.split("<svg", 1)[1])
    assert titles[:2] == ["0 to under 0.025: 1 learner", "0.025 to under 0.05: 0 learners"]
    assert titles[-1] == "0.225 to 0.25: 1 learner" and len(set(titles)) == 10
    ticks = re.findall(r'class="range">([^<]*)</text>', page)
    assert ticks == [f"{i * 0.025:g}" for i in range(10)] + ["up to 0.25"]
    whole = desk.histogram([0, 1, 1.5], 2)  # a bin per whole score, the last the maximum alone
    assert [b["label"] for b in whole["bins"]] == ["0 to under 1", "1 to under 2", "2"]
