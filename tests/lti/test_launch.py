"""Login and launch against the tests' platform: who is who, and every refusal (a page and a
4xx, nothing stored) for id_tokens signed with the tests' own keys."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from db.lti_models import LtiContext, LtiLearner
from db.models import LearnerSession, StaffSession
from tests.lti.conftest import CLAIM, CLIENT_ID, INSTRUCTOR, launch, login, rsa_key

TA = "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
ADMIN = "http://purl.imsglobal.org/vocab/lis/v2/membership#Administrator"


def stored(ctx) -> tuple[int, int, int, int]:
    with ctx.unit_of_work() as work:
        return tuple(
            work.session.scalar(select(func.count()).select_from(table))
            for table in (LtiContext, LtiLearner, LearnerSession, StaffSession)
        )


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_a_learner_launch_opens_the_task_in_a_session_of_a_course_made_for_it(
    client, registered, ctx
):
    response = launch(client, registered, custom={"task_id": "quiz"}, sub="sub-ann")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/learn/tasks/quiz"
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("grader_session="))
    assert "Path=/learn" in session and "HttpOnly" in session and "Secure" not in session
    page = client.get("/learn/tasks/quiz")
    assert page.status_code == 200 and "Which call freezes a model?" in page.text
    assert 'class="student">sub-ann' in page.text
    assert client.get("/learn/tasks/other").status_code == 404  # the link's task only
    with ctx.unit_of_work() as work:
        [context] = work.session.scalars(select(LtiContext))
        assert context.course.startswith("lti-") and context.title == "Deep Learning 101"
    again = launch(client, registered, custom={"task_id": "quiz"}, sub="sub-bob")
    assert again.status_code == 303
    assert stored(ctx)[:2] == (1, 2)  # one course, two learners on its link


@pytest.mark.parametrize("role", [INSTRUCTOR, TA, ADMIN, "Instructor"])
def test_staff_launches_open_the_desk_for_the_task(client, registered, role):
    response = launch(client, registered, custom={"task_id": "quiz"}, roles=(role,), sub="t-1")
    assert response.status_code == 303 and response.headers["location"] == "/teach/tasks/quiz"
    desk = client.get("/teach/tasks/quiz")
    assert desk.status_code == 200 and "Instructor of course" in desk.text


def test_a_learner_who_tries_a_staff_page_is_refused(client, registered):
    launch(client, registered, custom={"task_id": "quiz"})
    assert client.get("/teach/tasks/quiz", follow_redirects=False).status_code == 303  # sign in
    learner_cookie = client.cookies.get("grader_session")
    client.cookies.set("grader_staff_session", learner_cookie, path="/teach")
    assert client.get("/teach/tasks/quiz", follow_redirects=False).status_code == 403


def test_a_learner_may_not_open_the_task_picker(client, registered, ctx):
    before = stored(ctx)
    response = launch(client, registered, kind="LtiDeepLinkingRequest")
    assert response.status_code == 403 and "staff" in response.text
    assert stored(ctx) == before


def test_a_new_launch_by_the_same_learner_resumes_their_attempts(client, registered):
    launch(client, registered, custom={"task_id": "quiz"}, sub="sub-ann")
    page = client.get("/learn/tasks/quiz").text
    sent = client.post(
        "/learn/tasks/quiz", data={"answer": "choice", "choice": "B", "csrf_token": csrf_of(page)},
        follow_redirects=False,
    )  # fmt: skip
    assert sent.status_code == 303
    client.cookies.clear()
    launch(client, registered, custom={"task_id": "quiz"}, sub="sub-ann")
    page = client.get("/learn/tasks/quiz").text
    assert "Attempts: 4 left" in page and ">Attempt 1</a>" in page


def test_an_https_launch_checks_cookies_then_sets_those_a_cross_site_frame_sends_back(
    ctx, registered
):
    from fastapi.testclient import TestClient

    from api.main import create_app

    app = create_app(ctx.settings, prepare_on_start=False)
    app.state.context = ctx
    with TestClient(app, base_url="https://testserver") as secure:
        check = secure.get(
            "/lti/login",
            params={"iss": registered.issuer, "login_hint": "h", "client_id": CLIENT_ID},
        )
        assert check.status_code == 200 and "/learn/static/lti.js" in check.text
        assert "lti1p3_new_window=1" in check.text and 'target="_blank"' in check.text
        state, nonce = login(secure, registered, lti1p3_new_window="1")
        [cookie] = [c for c in secure.cookies.jar if c.name.startswith("lti1p3-state")]
        assert cookie.secure
        token = registered.id_token(nonce, custom={"task_id": "quiz"})
        response = secure.post(
            "/lti/launch", data={"id_token": token, "state": state}, follow_redirects=False
        )
    assert response.status_code == 303, response.text
    for set_cookie in response.headers.get_list("set-cookie"):
        assert "Secure" in set_cookie and "SameSite=none" in set_cookie
        assert "Partitioned" in set_cookie


def test_an_unknown_kid_refetches_the_platforms_key_set(client, registered):
    assert launch(client, registered, custom={"task_id": "quiz"}).status_code == 303  # cached
    pem, public = rsa_key()
    registered.published = [public]  # the platform rotated its key
    response = launch(client, registered, custom={"task_id": "quiz"}, pem=pem, kid=public["kid"])
    assert response.status_code == 303, response.text


def test_several_audiences_need_our_azp(client, registered):
    both = ["another-tool", CLIENT_ID]
    refused = launch(client, registered, custom={"task_id": "quiz"}, aud=both)
    assert refused.status_code == 400
    taken = launch(
        client, registered, custom={"task_id": "quiz"}, aud=both, extra={"azp": CLIENT_ID}
    )
    assert taken.status_code == 303, taken.text


OTHER_PEM, OTHER_JWK = rsa_key()


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"pem": OTHER_PEM}, "signature"),  # forged: signed by another key, the platform's kid
        ({"pem": OTHER_PEM, "kid": OTHER_JWK["kid"]}, "public key"),  # a key the platform lacks
        ({"aud": "another-tool"}, "registration"),
        ({"lifetime_s": -120}, "expired"),
        ({"iat_shift_s": 600, "lifetime_s": 900}, "not yet valid"),
        ({"nonce": "never-issued"}, "nonce"),
        ({"iss": "https://unknown.example.org"}, "registration"),
        ({"deployment": "unknown-deployment"}, "deployment"),
        ({"kind": "LtiSubmissionReviewRequest"}, "does not serve"),
        ({"extra": {CLAIM + "version": "1.1"}}, "version"),
        ({"drop": (CLAIM + "context",)}, "course"),
        ({"custom": {}}, "names no task"),
        ({"custom": {"task_id": "not-a-task"}}, "not here"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_refused_launch_is_a_page_and_stores_nothing(client, registered, ctx, claims, says):
    before = stored(ctx)
    response = launch(client, registered, **({"custom": {"task_id": "quiz"}} | claims))
    assert 400 <= response.status_code < 500, response.text
    assert says in response.text.lower(), response.text
    assert "<h1>" in response.text and "set-cookie" not in {k.lower() for k in response.headers}
    assert stored(ctx) == before


def test_a_replayed_id_token_is_refused(client, registered, ctx):
    state, nonce = login(client, registered)
    form = {"id_token": registered.id_token(nonce, custom={"task_id": "quiz"}), "state": state}
    assert client.post("/lti/launch", data=form, follow_redirects=False).status_code == 303
    before = stored(ctx)
    replayed = client.post("/lti/launch", data=form, follow_redirects=False)
    assert replayed.status_code == 400 and "used already" in replayed.text.lower()
    fresh_state, _ = login(client, registered)
    with_a_new_state = client.post(
        "/lti/launch", data=form | {"state": fresh_state}, follow_redirects=False
    )
    assert with_a_new_state.status_code == 400 and "nonce" in with_a_new_state.text.lower()
    assert stored(ctx) == before


@pytest.mark.parametrize("state", ["", "state-forged"])
def test_a_launch_without_its_state_is_refused(client, registered, ctx, state):
    before = stored(ctx)
    response = launch(client, registered, state=state, custom={"task_id": "quiz"})
    assert response.status_code == 400 and "state" in response.text.lower()
    assert stored(ctx) == before


def test_a_login_from_an_unknown_issuer_is_refused(client, registered):
    response = client.get(
        "/lti/login", params={"iss": "https://nobody.example.org", "login_hint": "x"}
    )
    assert response.status_code == 400 and "registration" in response.text.lower()
    missing = client.post("/lti/login", data={"iss": registered.issuer})
    assert missing.status_code == 400 and "login hint" in missing.text.lower()


def test_concurrent_first_launches_make_one_course_and_one_link(client, registered, ctx):
    import threading

    from fastapi.testclient import TestClient

    from db.lti_models import LtiLink

    browsers = [TestClient(client.app) for _ in range(4)]
    forms = []
    for number, browser in enumerate(browsers):
        state, nonce = login(browser, registered)
        token = registered.id_token(nonce, custom={"task_id": "quiz"}, sub=f"s-{number}")
        forms.append({"id_token": token, "state": state})
    start, answers = threading.Barrier(len(browsers)), []

    def go(browser, form) -> None:
        start.wait()
        answers.append(browser.post("/lti/launch", data=form, follow_redirects=False))

    threads = [threading.Thread(target=go, args=pair) for pair in zip(browsers, forms, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [303] * 4
    with ctx.unit_of_work() as work:
        assert work.session.scalar(select(func.count()).select_from(LtiLink)) == 1
    assert stored(ctx)[:2] == (1, 4)
