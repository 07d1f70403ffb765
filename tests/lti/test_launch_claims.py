"""A launch's claims, held to what the tool promises whatever a signed id_token holds: a claim
of the wrong type or shape is a refusal page with a 4xx (never an error of ours) that stores
nothing, and nobody gets more rights than their role in the course; a login's state is good
for one launch, of the nonce, issuer, client and deployment it was issued for."""

from __future__ import annotations

import pytest
from jwt.api_jws import PyJWS
from sqlalchemy import func, select

from db.models import StaffSession
from lti import adapter
from tests.lti.conftest import (
    AGS,
    CLAIM,
    DEPLOYMENT,
    DL,
    INSTRUCTOR,
    LEARNER,
    NRPS,
    launch,
    login,
    register,
    rsa_key,
    served_platform,
)
from tests.lti.test_launch import stored

MEMBERSHIP = "http://purl.imsglobal.org/vocab/lis/v2/membership"
INSTITUTION = "http://purl.imsglobal.org/vocab/lis/v2/institution/person"
SYSTEM = "http://purl.imsglobal.org/vocab/lis/v2/system/person"
QUIZ = {"custom": {"task_id": "quiz"}}


def assert_refused(response, ctx, before, says: str = "") -> None:
    assert 400 <= response.status_code < 500, response.text
    assert "<h1>" in response.text, response.text
    assert "set-cookie" not in {k.lower() for k in response.headers}
    assert says in response.text.lower(), response.text
    assert stored(ctx) == before


def staff_sessions(ctx) -> int:
    with ctx.unit_of_work() as work:
        return work.session.scalar(select(func.count()).select_from(StaffSession))


# --- who is who: the course role decides ---------------------------------------------


@pytest.mark.parametrize(
    "beside",
    [
        f"{INSTITUTION}#Instructor",
        f"{INSTITUTION}#Administrator",
        f"{SYSTEM}#Administrator",
        f"{SYSTEM}#SysAdmin",
        "http://evil.example/x#Instructor",
        "http://evil.example/membership/Instructor#TeachingAssistant",
        f"{MEMBERSHIP}X#Instructor",
        "urn:lti:role:ims/lis/Instructor",
        "TeachingAssistant",
        "Student",
    ],
)
def test_a_learner_in_the_course_is_a_learner_whatever_else_they_are(
    client, registered, ctx, beside
):
    response = launch(client, registered, roles=(beside, LEARNER), **QUIZ)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/learn/tasks/quiz"
    assert staff_sessions(ctx) == 0
    assert client.get("/teach/tasks/quiz", follow_redirects=False).status_code == 303  # sign in


@pytest.mark.parametrize(
    "roles",
    [
        (f"{INSTITUTION}#Instructor",),
        (f"{SYSTEM}#Administrator", f"{INSTITUTION}#Administrator"),
        ("http://evil.example/x#Instructor",),
        (f"{MEMBERSHIP}#ContentDeveloper",),
        (f"{MEMBERSHIP}#Mentor",),
        (f"{MEMBERSHIP}/Administrator#Support",),
        (),
    ],
)
def test_a_launch_with_no_course_role_the_tool_serves_is_refused(client, registered, ctx, roles):
    before = stored(ctx)
    response = launch(client, registered, roles=roles, **QUIZ)
    assert response.status_code == 403, response.text
    assert_refused(response, ctx, before, "role in this course")


@pytest.mark.parametrize(
    ("role", "staff"),
    [
        (f"{MEMBERSHIP}/Instructor#TeachingAssistant", True),
        (f"{MEMBERSHIP}/Instructor#Grader", True),
        (f"{MEMBERSHIP}#Administrator", True),
        ("Instructor", True),
        ("Learner", False),
        (f"{MEMBERSHIP}/Learner#NonCreditLearner", False),
    ],
)
def test_the_course_roles_the_tool_serves(client, registered, role, staff):
    response = launch(client, registered, roles=(role,), **QUIZ)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == ("/teach/tasks/quiz" if staff else "/learn/tasks/quiz")


@pytest.mark.parametrize("role", [" Instructor", f"{INSTRUCTOR} ", f"{INSTRUCTOR}\n", ""])
def test_a_role_padded_with_spaces_is_refused_not_matched(client, registered, ctx, role):
    before = stored(ctx)
    response = launch(client, registered, roles=(role, LEARNER), **QUIZ)
    assert response.status_code == 400
    assert_refused(response, ctx, before, "role")


# --- the claims' shape ---------------------------------------------------------------


def with_context(**claim) -> dict:
    return {"extra": {CLAIM + "context": {"id": "course-101"} | claim}}


BAD_CLAIMS = {
    "iss list": {"extra": {"iss": ["http://127.0.0.1"]}},
    "iss surrogate": {"extra": {"iss": "http://127.0.0.1\ud800"}},
    "iss number": {"extra": {"iss": 7}},
    "sub surrogate": {"sub": "ann\udfff"},
    "sub NUL": {"sub": "ann\x00"},
    "sub number": {"extra": {"sub": 12}},
    "sub padded": {"sub": " ann"},
    "sub too long": {"sub": "a" * 201},
    "nonce number": {"nonce": 12345},
    "aud empty list": {"aud": []},
    "aud number": {"aud": 5},
    "iat string": {"extra": {"iat": "yesterday"}},
    "iat beyond a float": {"extra": {"iat": -(10**400)}},
    "exp beyond a float": {"extra": {"exp": 10**400}},
    "nbf not a number": {"extra": {"nbf": float("nan")}},
    "deployment list": {"extra": {CLAIM + "deployment_id": [DEPLOYMENT]}},
    "message type list": {"extra": {CLAIM + "message_type": ["LtiResourceLinkRequest"]}},
    "roles string": {"extra": {CLAIM + "roles": INSTRUCTOR}},
    "roles of numbers": {"extra": {CLAIM + "roles": [1]}},
    "context string": {"extra": {CLAIM + "context": "course-101"}},
    "context id number": with_context(id=101),
    "context id surrogate": with_context(id="course\ud800"),
    "context id empty": with_context(id=""),
    "context title list": with_context(title=["a"]),
    "resource link string": {"extra": {CLAIM + "resource_link": "link-1"}},
    "resource link id number": {"extra": {CLAIM + "resource_link": {"id": 7}}},
    "resource link id surrogate": {"resource_link": "link\ud800"},
    "custom string": {"custom": None, "extra": {CLAIM + "custom": "task_id=quiz"}},
    "task_id surrogate": {"custom": {"task_id": "quiz\ud800"}},
    "task_id number": {"custom": {"task_id": 3}},
    "task_id padded": {"custom": {"task_id": " quiz"}},
    "grade policy list": {"custom": {"task_id": "quiz", "grade_policy": ["latest"]}},
    "grade policy unknown": {"custom": {"task_id": "quiz", "grade_policy": "worst"}},
    "ags string": {"extra": {AGS: "https://lms.example/lineitems"}},
    "ags lineitems number": {"extra": {AGS: {"lineitems": 5}}},
    "ags lineitem not a url": {"extra": {AGS: {"lineitem": "javascript:alert(1)"}}},
    "ags scope string": {"extra": {AGS: {"scope": "score"}}},
    "nrps string": {"extra": {NRPS: "https://lms.example/memberships"}},
    "nrps url number": {"extra": {NRPS: {"context_memberships_url": 1}}},
    "a name with NUL": {"extra": {"name": "Ann\x00"}},
    "a deep surrogate": {"extra": {"https://lms.example/x": {"a": [{"b": "\ud800"}]}}},
}


@pytest.mark.parametrize("claims", BAD_CLAIMS.values(), ids=BAD_CLAIMS.keys())
def test_a_claim_of_the_wrong_shape_is_refused(client, registered, ctx, claims):
    before = stored(ctx)
    response = launch(client, registered, **({**QUIZ, **claims}))
    assert response.status_code == 400, response.text
    assert_refused(response, ctx, before)


BAD_DEEP_LINKING = {
    "settings string": {DL: "https://lms.example/return"},
    "no return url": {DL: {"accept_types": ["ltiResourceLink"]}},
    "accept types string": {
        DL: {"deep_link_return_url": "https://lms.example/r", "accept_types": "ltiResourceLink"}
    },
    "accept multiple list": {
        DL: {
            "deep_link_return_url": "https://lms.example/r",
            "accept_types": ["ltiResourceLink"],
            "accept_presentation_document_targets": ["iframe"],
            "accept_multiple": [],
        }
    },
}


@pytest.mark.parametrize("extra", BAD_DEEP_LINKING.values(), ids=BAD_DEEP_LINKING.keys())
def test_a_deep_linking_claim_of_the_wrong_shape_is_refused(client, registered, ctx, extra):
    before = stored(ctx)
    response = launch(
        client, registered, kind="LtiDeepLinkingRequest", roles=(INSTRUCTOR,), extra=extra
    )
    assert response.status_code == 400, response.text
    assert_refused(response, ctx, before, "deep linking")


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"a string"', b"null"])
def test_an_id_token_whose_body_is_not_an_object_is_refused(client, registered, ctx, payload):
    state, _ = login(client, registered)
    token = PyJWS().encode(
        payload, registered.pem, algorithm="RS256", headers={"kid": registered.jwk["kid"]}
    )
    before = stored(ctx)
    response = client.post("/lti/launch", data={"id_token": token, "state": state})
    assert response.status_code == 400, response.text
    assert_refused(response, ctx, before)


def test_a_request_with_a_nul_is_refused(client, registered, ctx):
    state, nonce = login(client, registered)
    before = stored(ctx)
    form = {"id_token": registered.id_token(nonce, **QUIZ), "state": state + "\x00"}
    response = client.post("/lti/launch", data=form)
    assert_refused(response, ctx, before, "nul")
    login_with_nul = client.get(
        "/lti/login", params={"iss": registered.issuer + "\x00", "login_hint": "h"}
    )
    assert 400 <= login_with_nul.status_code < 500


def test_a_login_parameter_longer_than_any_hint_is_refused_not_copied(client, registered):
    """It would be copied into the redirect to the platform's login page."""
    response = client.get(
        "/lti/login",
        params={"iss": registered.issuer, "login_hint": "h" * 5000,
                "target_link_uri": "http://testserver/lti/launch"},
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert "login_hint" in response.text and "location" not in response.headers


def test_an_old_id_token_is_refused_however_late_it_expires(client, registered, ctx):
    before = stored(ctx)
    response = launch(client, registered, iat_shift_s=-7200, lifetime_s=7500, **QUIZ)
    assert response.status_code == 400
    assert_refused(response, ctx, before, "issued")


# --- the login's state ---------------------------------------------------------------


def post(client, state: str, token: str):
    return client.post(
        "/lti/launch", data={"id_token": token, "state": state}, follow_redirects=False
    )


def test_a_state_is_used_once_and_its_cookie_cleared(client, registered, ctx):
    state, nonce = login(client, registered)
    first = post(client, state, registered.id_token(nonce, **QUIZ))
    assert first.status_code == 303, first.text
    [cleared] = [c for c in first.headers.get_list("set-cookie") if c.startswith("lti1p3-")]
    assert cleared.startswith(f'lti1p3-{state}=""') and "Max-Age=0" in cleared
    assert "Path=/lti" in cleared
    _, other_nonce = login(client, registered)
    client.cookies.set(f"lti1p3-{state}", state, path="/lti")  # a browser that kept it
    before = stored(ctx)
    again = post(client, state, registered.id_token(other_nonce, **QUIZ))
    assert again.status_code == 400
    assert_refused(again, ctx, before, "state")


def test_a_state_is_bound_to_its_nonce(client, registered, ctx):
    state_a, nonce_a = login(client, registered)
    state_b, nonce_b = login(client, registered)
    before = stored(ctx)
    crossed = post(client, state_a, registered.id_token(nonce_b, **QUIZ))
    assert crossed.status_code == 400
    assert_refused(crossed, ctx, before, "state")
    assert post(client, state_a, registered.id_token(nonce_a, **QUIZ)).status_code == 303
    assert post(client, state_b, registered.id_token(nonce_b, **QUIZ)).status_code == 303


def test_a_state_is_bound_to_the_client_its_login_was_for(client, admin, registered, ctx):
    register(client, admin, registered, client_id="another-tool")
    state, nonce = login(client, registered)  # for CLIENT_ID
    before = stored(ctx)
    token = registered.id_token(nonce, aud="another-tool", **QUIZ)
    response = post(client, state, token)
    assert response.status_code == 400
    assert_refused(response, ctx, before, "state")
    assert post(client, state, registered.id_token(nonce, **QUIZ)).status_code == 303


def test_a_state_is_bound_to_the_deployment_its_login_named(client, admin, platform, ctx):
    register(client, admin, platform, deployment_ids=[DEPLOYMENT, "deployment-2"])
    state, nonce = login(client, platform, lti_deployment_id="deployment-2")
    before = stored(ctx)
    response = post(client, state, platform.id_token(nonce, deployment=DEPLOYMENT, **QUIZ))
    assert response.status_code == 400
    assert_refused(response, ctx, before, "state")
    taken = post(client, state, platform.id_token(nonce, deployment="deployment-2", **QUIZ))
    assert taken.status_code == 303, taken.text


def test_a_state_is_bound_to_the_issuer_its_login_was_for(client, admin, registered, ctx):
    with served_platform() as other:
        register(client, admin, other)
        state, nonce = login(client, registered)
        before = stored(ctx)
        response = post(client, state, other.id_token(nonce, **QUIZ))  # the other's token
        assert response.status_code == 400
        assert_refused(response, ctx, before, "state")
    assert post(client, state, registered.id_token(nonce, **QUIZ)).status_code == 303


# --- the platform's key set ----------------------------------------------------------


def test_refetching_a_key_set_for_an_unknown_kid_is_rate_limited(
    client, registered, ctx, monkeypatch
):
    assert launch(client, registered, **QUIZ).status_code == 303
    first_pem, first = rsa_key()
    registered.published = [first]
    assert launch(client, registered, pem=first_pem, kid=first["kid"], **QUIZ).status_code == 303
    reads = registered.key_set_reads
    second_pem, second = rsa_key()
    registered.published = [first, second]
    before = stored(ctx)
    for _ in range(3):
        refused = launch(client, registered, pem=second_pem, kid=second["kid"], **QUIZ)
        assert_refused(refused, ctx, before, "refetched")
    assert registered.key_set_reads == reads
    monkeypatch.setattr(adapter, "KEY_SET_REFETCH_S", 0)  # as if the minute had passed
    taken = launch(client, registered, pem=second_pem, kid=second["kid"], **QUIZ)
    assert taken.status_code == 303, taken.text
    assert registered.key_set_reads == reads + 1
