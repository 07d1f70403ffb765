"""The learner's way in and the pages' safety, over HTTP on SQLite (the recorder for a
queue): links made by an LMS and used once, the session cookie, CSRF on every form, the
Content-Security-Policy, hostile text made inert, and one learner's attempts kept from
another. The whole flow, graded for real in a browser: tests/browser."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.main import create_app
from core.settings import PROJECT_ROOT
from db.models import Role, TaskVersion, VersionStatus
from graders.result import GradeResult
from graders.spec import parse_spec
from services import catalog
from services.queue import GRADE
from tests.application.conftest import add_task
from tests.conftest import gradectl
from usecases import worker

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def client(ctx):
    add_task(ctx, "quiz", "c1", max_attempts=2)
    app = create_app(ctx.settings, prepare_on_start=False)
    app.state.context = ctx
    with TestClient(app, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def lms(made_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {made_key(Role.LMS)}"}


def link(client: TestClient, lms: dict, student_id: str = "ann", **body) -> str:
    response = client.post("/v1/links", json={"student_id": student_id, **body}, headers=lms)
    assert response.status_code == 201, response.text
    assert set(response.json()) == {"url", "expires_at"}
    return response.json()["url"]


def enter(client: TestClient, url: str) -> TestClient:
    response = client.get(url, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/learn"
    return client


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_an_lms_makes_links_and_nobody_else_does(client, lms, made_key):
    url = link(client, lms, task_ids=["quiz"], expires_in_s=600)
    assert url.startswith("http://testserver/learn/enter/")
    student = {"Authorization": f"Bearer {made_key(Role.STUDENT, 'c1', 'ann')}"}
    instructor = {"Authorization": f"Bearer {made_key(Role.INSTRUCTOR)}"}
    for headers, status in ((student, 403), (instructor, 403), ({}, 401)):
        response = client.post("/v1/links", json={"student_id": "ann"}, headers=headers)
        assert response.status_code == status
        assert set(response.json()["error"]) == {"code", "message"}
    refused = {
        "task_ids": ({"student_id": "ann", "task_ids": ["no-such-task"]}, "no task no-such-task"),
        "expires_in_s": ({"student_id": "ann", "expires_in_s": 10**9}, "expires_in_s"),
        "student_id": ({"student_id": ""}, "student_id"),
        "extra": ({"student_id": "ann", "course": "c2"}, "course"),
    }
    for body, named in refused.values():
        response = client.post("/v1/links", json=body, headers=lms)
        assert response.status_code == 422 and named in response.json()["error"]["message"]


def test_a_link_opens_once_and_starts_a_session_held_in_a_cookie(client, lms):
    url = link(client, lms)
    first = client.get(url, follow_redirects=False)
    cookie = first.headers["set-cookie"]
    assert "grader_session=" in cookie and "HttpOnly" in cookie and "Path=/learn" in cookie
    assert "SameSite=lax" in cookie.replace("Lax", "lax") and "Secure" not in cookie  # http
    page = client.get("/learn")
    assert page.status_code == 200 and "Which call freezes a model?" in page.text
    again = TestClient(client.app).get(url)
    assert again.status_code == 410 and "cannot be used again" in again.text
    stranger = TestClient(client.app).get("/learn")
    assert stranger.status_code == 401 and "Open the link" in stranger.text
    forged = TestClient(client.app, cookies={"grader_session": "forged"}).get("/learn")
    assert forged.status_code == 401


def test_a_link_opened_in_a_learners_session_asks_first(client, lms, broker):
    """A page of another site can send a signed-in learner to someone else's link: the
    link is opened only from the session's own page, so their answers stay theirs."""
    enter(client, link(client, lms, student_id="ann"))
    other = link(client, lms, student_id="mallory")
    asked = client.get(other, follow_redirects=False)
    assert asked.status_code == 200 and 'signed in as <span class="student">ann' in asked.text
    assert 'Signed in as <span class="student">ann' in client.get("/learn").text
    token = csrf_of(asked.text)
    path = urlsplit(other).path
    refused = client.post(path, data={"csrf_token": token}, headers={"Origin": "http://evil"})
    assert refused.status_code == 403
    assert client.post(path, data={"csrf_token": "x" * 43}).status_code == 403
    opened = client.post(path, data={"csrf_token": token}, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/learn"
    assert 'Signed in as <span class="student">mallory' in client.get("/learn").text


def test_over_https_the_cookie_is_secure(client, lms):
    url = link(client, lms).replace("http://testserver", "https://testserver")
    response = TestClient(client.app, base_url="https://testserver").get(
        url, follow_redirects=False
    )
    assert "Secure" in response.headers["set-cookie"]


def test_every_page_has_a_policy_without_inline_script(client, lms):
    enter(client, link(client, lms))
    for path in ("/learn", "/learn/tasks/quiz", "/learn/tasks/none-such"):
        response = client.get(path)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        scripts = re.findall(r"<script[^>]*>", response.text)
        assert scripts and all(" src=" in tag for tag in scripts)
        assert not re.search(r"\son[a-z]+=", response.text)  # no inline handlers either


def test_who_may_frame_the_pages_is_a_setting(ctx, lms, client):
    settings = ctx.settings.model_copy(update={"frame_ancestors": "https://lms.example.org"})
    app = create_app(settings, prepare_on_start=False)
    app.state.context = type(ctx)(settings, ctx.broker)
    with TestClient(app) as other:
        enter(other, link(client, lms))
        policy = other.get("/learn").headers["content-security-policy"]
    assert "frame-ancestors https://lms.example.org" in policy


def test_a_form_without_the_sessions_token_is_refused(client, lms, broker):
    enter(client, link(client, lms))
    page = client.get("/learn/tasks/quiz").text
    for token in ("", "x" * 43):
        sent = client.post(
            "/learn/tasks/quiz", data={"answer": "choice", "choice": "A", "csrf_token": token}
        )
        assert sent.status_code == 403 and "reload" in sent.text
    assert broker.take(GRADE) == []
    sent = client.post(
        "/learn/tasks/quiz", data={"answer": "choice", "choice": "A", "csrf_token": csrf_of(page)},
        follow_redirects=False,
    )  # fmt: skip
    assert sent.status_code == 303 and len(broker.take(GRADE)) == 1
    assert "Waiting to be graded" in client.get("/learn/tasks/quiz").text


def test_a_form_sent_twice_is_one_attempt(client, lms, broker):
    enter(client, link(client, lms))
    page = client.get("/learn/tasks/quiz").text
    form = {"answer": "choice", "choice": "B", "csrf_token": csrf_of(page)}
    form["attempt_id"] = re.search(r'name="attempt_id" value="([^"]+)"', page).group(1)
    for _ in range(2):
        assert (
            client.post("/learn/tasks/quiz", data=form, follow_redirects=False).status_code == 303
        )
    assert len(broker.take(GRADE)) == 1
    assert "Attempts: 1 left" in client.get("/learn/tasks/quiz").text


def test_a_hostile_student_id_is_shown_inert(client, lms):
    enter(client, link(client, lms, student_id=HOSTILE))
    for path in ("/learn", "/learn/tasks/quiz"):
        text = client.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text


def test_a_learner_never_sees_another_learners_attempt(client, lms, ctx, made_key, broker):
    enter(client, link(client, lms, student_id="ann"))
    page = client.get("/learn/tasks/quiz").text
    client.post(
        "/learn/tasks/quiz", data={"answer": "choice", "choice": "A", "csrf_token": csrf_of(page)}
    )
    ann_attempt = broker.take(GRADE)[0].args[0]
    assert client.get(f"/learn/submissions/{ann_attempt}").status_code == 200
    bob = enter(TestClient(client.app), link(client, lms, student_id="bob"))
    for path in (f"/learn/submissions/{ann_attempt}", f"/learn/submissions/{ann_attempt}/status"):
        response = bob.get(path)
        assert response.status_code == 403 and ann_attempt not in response.text
    assert bob.get(f"/learn/submissions/{'0' * 32}").status_code == 403  # unknown: the same
    assert ann_attempt not in bob.get("/learn/tasks/quiz").text


def test_a_link_for_some_tasks_shows_only_those(client, lms, ctx):
    add_task(ctx, "other-quiz", "c1")
    enter(client, link(client, lms, task_ids=["other-quiz"]))
    assert 'href="/learn/tasks/other-quiz"' in client.get("/learn").text
    assert 'href="/learn/tasks/quiz"' not in client.get("/learn").text
    assert client.get("/learn/tasks/quiz").status_code == 404


def test_a_link_for_some_tasks_takes_answers_to_those_only(client, lms, ctx, broker):
    """The set is the link's: an answer to another task of the course is refused as its
    page is (404), and nothing is stored or counted."""
    add_task(ctx, "other-quiz", "c1")
    enter(client, link(client, lms, task_ids=["other-quiz"]))
    token = csrf_of(client.get("/learn/tasks/other-quiz").text)
    sent = client.post(
        "/learn/tasks/quiz", data={"answer": "choice", "choice": "A", "csrf_token": token},
        follow_redirects=False,
    )  # fmt: skip
    assert sent.status_code == 404 and "No task quiz in your set" in sent.text
    assert broker.take(GRADE) == []
    listed = client.get("/v1/submissions", params={"student_id": "ann"}, headers=lms)
    assert listed.status_code == 200 and listed.json() == []
    sent = client.post(
        "/learn/tasks/other-quiz", data={"answer": "choice", "choice": "A", "csrf_token": token},
        follow_redirects=False,
    )  # fmt: skip
    assert sent.status_code == 303 and len(broker.take(GRADE)) == 1


def test_the_pages_are_not_in_the_openapi_but_links_are(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/links" in paths and not [p for p in paths if p.startswith("/learn")]
    assert {"201", "401", "403", "422"} <= set(paths["/v1/links"]["post"]["responses"])


def test_gradectl_link_prints_a_link_that_opens(ctx, client):
    env = {"GRADER_DATABASE_URL": ctx.settings.database_url, "GRADER_API_PORT": "8123"}
    done = gradectl("link", "--course", "c1", "--student", "ann", "--task", "quiz", env=env)
    assert done.returncode == 0, done.stderr.decode()
    url = done.stdout.decode().strip()
    assert url.startswith("http://127.0.0.1:8123/learn/enter/")
    enter(client, url.removeprefix("http://127.0.0.1:8123"))
    assert 'href="/learn/tasks/quiz"' in client.get("/learn").text


# --- a training task's loss per iteration ------------------------------------------------

CURVE = {"answer": [2.81, 3.15, None, 2.79], "reference": [2.81, 3.15, 2.86, 2.79]}


def ready_training_task(ctx) -> None:
    """The bank's training task as course c1's, marked ready without a self-test."""
    text = (PROJECT_ROOT / "taskbank" / "tasks" / "finetune-train-epoch.yaml").read_text()
    spec = parse_spec(text.replace("id: finetune-train-epoch", "id: train"))
    with ctx.unit_of_work() as work:
        version, _ = catalog.add_version(work.session, spec, "c1")
        work.session.execute(
            update(TaskVersion)
            .where(TaskVersion.id == version.id)
            .values(status=VersionStatus.READY)
        )


def graded_training_answer(client, lms, ctx, broker, loss_curve: dict | None) -> str:
    """A learner's code answer to the training task, sent from its page, then stored as the
    worker stores a result holding `loss_curve`: the submission's id."""
    ready_training_task(ctx)
    enter(client, link(client, lms, task_ids=["train"]))
    token = csrf_of(client.get("/learn/tasks/train").text)
    sent = client.post(
        "/learn/tasks/train", data={"answer": "code", "code": "pass\n", "csrf_token": token},
        follow_redirects=False,
    )  # fmt: skip
    assert sent.status_code == 303, sent.text
    submission_id = broker.take(GRADE)[0].args[0]
    result = GradeResult(
        task_id="train", task_version="v", outcome="passed", score=10.0, max_score=10.0,
        loss_curve=loss_curve,
    )  # fmt: skip
    assert worker.finish(ctx, worker.claim(ctx, submission_id), result) == "stored"
    return submission_id


def test_a_training_result_plots_the_loss_beside_a_correct_runs(client, lms, ctx, broker):
    submission_id = graded_training_answer(client, lms, ctx, broker, CURVE)
    page = client.get("/learn/tasks/train")
    assert page.status_code == 200
    svg = re.search(r"<svg[^>]*>.*?</svg>", page.text.split("Loss per iteration", 1)[1], re.S)
    assert (
        svg
        and 'role="img"' in svg.group()
        and 'aria-labelledby="loss-title" aria-describedby="loss-desc"' in svg.group()
    )
    assert '<title id="loss-title">' in svg.group() and '<desc id="loss-desc">' in svg.group()
    # The learner's line breaks where a value was not read; a correct run's is whole.
    answer = re.search(r'<g class="answer">(.*?)</g>', svg.group(), re.S).group(1)
    reference = re.search(r'<g class="reference">(.*?)</g>', svg.group(), re.S).group(1)
    assert answer.count("<polyline") == 1 and answer.count("<circle") == 1
    assert reference.count("<polyline") == 1 and len(re.findall(r"\d,\d", reference)) == 4
    assert "style=" not in svg.group() and "<script" not in svg.group()
    summary = "Your loop's loss over 4 iterations, from 2.81 to 2.79 (lowest 2.79); 1 of them could not be read. A correct run's loss over 4 iterations, from 2.81 to 2.79 (lowest 2.79)."
    assert summary.replace("'", "&#39;") in page.text
    rows = re.findall(
        r'<tr><th scope="row">(\d+)</th><td>([^<]*)</td><td>([^<]*)</td></tr>', page.text
    )
    assert rows == [
        ("1", "2.81", "2.81"),
        ("2", "3.15", "3.15"),
        ("3", "not read", "2.86"),
        ("4", "2.79", "2.79"),
    ]
    live = client.get(f"/learn/submissions/{submission_id}/status").json()
    assert (
        live["done"]
        and "Loss per iteration" in live["html"]
        and summary.replace("'", "&#39;") in live["html"]
    )
    api = client.get(f"/v1/submissions/{submission_id}", headers=lms).json()
    assert api["result"]["loss_curve"] == CURVE  # the REST API's result: one field more


def test_without_a_correct_runs_curve_the_learners_is_drawn_alone(client, lms, ctx, broker):
    """A task version validated before the curves were recorded holds no reference curve."""
    graded_training_answer(client, lms, ctx, broker, {"answer": [1.5, 1.25], "reference": []})
    page = client.get("/learn/tasks/train").text
    assert '<g class="answer">' in page and '<g class="reference">' not in page
    assert "A correct run" not in page
    assert "Your loop&#39;s loss over 2 iterations, from 1.5 to 1.25 (lowest 1.25)." in page


def test_a_curve_with_no_value_read_is_told_in_words_alone(client, lms, ctx, broker):
    """A loss of a tensor subclass, say: the observer reads none of its values."""
    graded_training_answer(client, lms, ctx, broker, {"answer": [None] * 3, "reference": []})
    page = client.get("/learn/tasks/train").text
    assert "Your loop&#39;s loss could not be read at any of its 3 iterations." in page
    assert "<svg" not in page


def test_a_result_without_a_curve_shows_no_plot(client, lms, ctx, broker):
    graded_training_answer(client, lms, ctx, broker, None)
    page = client.get("/learn/tasks/train").text
    assert "Score 10 of 10" in page and "Loss per iteration" not in page and "<svg" not in page


@pytest.mark.parametrize(
    "code",
    [b"x%20%3D%20%27%FF%27", b"x%20%3D%20%27%ED%A0%80%27", b"x = '\xff'"],
    ids=["percent-encoded-byte", "lone-surrogate", "raw-byte"],
)
def test_an_answer_that_is_not_utf8_is_refused_with_why_and_costs_no_attempt(
    client, lms, ctx, broker, code
):
    ready_training_task(ctx)
    enter(client, link(client, lms, task_ids=["train"]))
    token = csrf_of(client.get("/learn/tasks/train").text)
    body = b"answer=code&csrf_token=" + token.encode() + b"&code=" + code
    sent = client.post(
        "/learn/tasks/train", content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert sent.status_code == 422
    assert "not valid UTF-8" in sent.text and "no attempt was counted" in sent.text
    assert broker.take(GRADE) == []
    assert "Attempts: 3 left" in client.get("/learn/tasks/train").text
    listed = client.get("/v1/submissions", params={"student_id": "ann"}, headers=lms)
    assert listed.json() == []
