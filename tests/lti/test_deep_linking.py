"""Deep Linking: staff pick tasks on our page, and the platform gets a signed
LtiDeepLinkingResponse whose links open those tasks and carry their line items."""

from __future__ import annotations

import re

import jwt

from db.models import Role
from tests.application.conftest import add_task
from tests.lti.conftest import CLIENT_ID, DEPLOYMENT, INSTRUCTOR, launch

DL_RESPONSE = "LtiDeepLinkingResponse"
ITEMS = "https://purl.imsglobal.org/spec/lti-dl/claim/content_items"


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def picker(client, platform) -> str:
    response = launch(client, platform, kind="LtiDeepLinkingRequest", roles=(INSTRUCTOR,))
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("/teach/lti/deep-link/")
    return response.headers["location"]


def test_staff_pick_tasks_and_the_platform_gets_a_signed_response(client, registered, ctx):
    add_task(ctx, "quiz2", None)
    path = picker(client, registered)
    page = client.get(path)
    assert page.status_code == 200 and 'name="task-quiz"' in page.text
    assert 'name="task-quiz2"' in page.text
    sent = client.post(
        path, data={"csrf_token": csrf_of(page.text), "task-quiz": "quiz", "task-quiz2": "quiz2"}
    )
    assert sent.status_code == 200, sent.text
    action = re.search(r'<form method="post" action="([^"]+)"', sent.text).group(1)
    assert action == f"{registered.url}/deep-link-return"
    assert f"form-action 'self' {registered.url}" in sent.headers["content-security-policy"]
    token = re.search(r'name="JWT" value="([^"]+)"', sent.text).group(1)
    keys = {k["kid"]: k for k in client.get("/lti/jwks").json()["keys"]}
    key = jwt.PyJWK(keys[jwt.get_unverified_header(token)["kid"]]).key
    body = jwt.decode(token, key, algorithms=["RS256"], audience=registered.issuer)
    assert body["iss"] == CLIENT_ID
    assert body["https://purl.imsglobal.org/spec/lti/claim/message_type"] == DL_RESPONSE
    assert body["https://purl.imsglobal.org/spec/lti/claim/version"] == "1.3.0"
    assert body["https://purl.imsglobal.org/spec/lti/claim/deployment_id"] == DEPLOYMENT
    assert body["https://purl.imsglobal.org/spec/lti-dl/claim/data"] == "opaque-data"
    items = body[ITEMS]
    assert [i["custom"] for i in items] == [{"task_id": "quiz"}, {"task_id": "quiz2"}]
    for item, task_id in zip(items, ("quiz", "quiz2"), strict=True):
        assert item["type"] == "ltiResourceLink" and item["url"] == "http://testserver/lti/launch"
        assert item["lineItem"] == {
            "label": "Which call freezes a model?", "scoreMaximum": 1.0, "resourceId": task_id,
        }  # fmt: skip
    again = client.post(path, data={"csrf_token": csrf_of(page.text), "task-quiz": "quiz"})
    assert again.status_code == 400 and "launch" in again.text  # the launch is used up


def test_a_resource_link_launch_with_the_custom_parameter_opens_that_task(client, registered):
    response = launch(client, registered, custom={"task_id": "quiz"}, resource_link="dl-link")
    assert response.headers["location"] == "/learn/tasks/quiz"
    again = launch(client, registered, resource_link="dl-link")  # the link remembers its task
    assert again.headers["location"] == "/learn/tasks/quiz"


def test_picking_nothing_asks_again_and_another_course_cannot_answer(client, registered, made_key):
    path = picker(client, registered)
    page = client.get(path).text
    refused = client.post(path, data={"csrf_token": csrf_of(page)})
    assert refused.status_code == 422 and "pick at least one task" in refused.text
    from fastapi.testclient import TestClient

    other = TestClient(client.app)
    other.cookies.set("grader_staff_sign_in", "t", path="/teach")
    signed = other.post(
        "/teach/sign-in", data={"key": made_key(Role.INSTRUCTOR, "c9"), "csrf_token": "t"},
        follow_redirects=False,
    )  # fmt: skip
    assert signed.status_code == 303, signed.text
    assert other.get(path).status_code == 403
