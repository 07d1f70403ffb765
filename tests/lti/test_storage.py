"""The state through the platform's storage frame (LTI OIDC Login with LTI Client Side
postMessages), server side: a login the platform offers its frame answers a page with the
state's proof to put there; a launch without the state's cookie answers a page that reads
it back; the launch with the proof, posted from our own page, is taken once; a wrong,
missing or foreign proof is a 4xx that stores nothing. The browser's part is
tests/lti/test_storage_browser.py."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.lti.test_launch import stored

TARGET = "post_message_forwarding"
OURS = {"Origin": "http://testserver"}


def attribute(page: str, name: str) -> str:
    return html.unescape(re.search(rf'{name}="([^"]*)"', page).group(1))


def new_window(page: str) -> str:
    return html.unescape(re.search(r'href="([^"]*)" id="lti-new-window"', page).group(1))


def storage_login(client, platform, **params) -> dict[str, str]:
    """A login offering the storage frame, in a browser that keeps no cookie: what its
    page puts in the frame, and the state and nonce its authorisation URL carries."""
    query = {
        "iss": platform.issuer, "login_hint": "hint-1", "client_id": "grader-tool",
        "target_link_uri": "http://testserver/lti/launch", "lti_message_hint": "m-1",
        "lti_storage_target": TARGET,
    } | params  # fmt: skip
    page = client.get("/lti/login", params=query)
    assert page.status_code == 200, page.text
    client.cookies.clear()  # the browser refused the state's cookie
    sent = parse_qs(urlsplit(attribute(page.text, "data-next")).query)
    return {
        "page": page.text,
        "key": attribute(page.text, "data-storage-key"),
        "proof": attribute(page.text, "data-storage-value"),
        "state": sent["state"][0],
        "nonce": sent["nonce"][0],
    }


def test_a_login_offered_the_storage_frame_puts_a_proof_of_its_state_there(client, registered):
    login = storage_login(client, registered)
    page = login["page"]
    assert attribute(page, "data-storage-target") == TARGET
    assert attribute(page, "data-storage-origins") == registered.url  # its auth URL's origin
    assert login["key"] == f"lti1p3-{login['state']}" and len(login["proof"]) >= 40
    assert login["proof"] not in (login["state"], login["nonce"])
    assert "/learn/static/lti.js" in page and "<script>" not in page
    assert "lti1p3_new_window=1" in new_window(page) and 'target="_blank"' in page


def test_the_state_read_back_from_the_storage_frame_opens_the_launch_once(client, registered, ctx):
    login = storage_login(client, registered)
    token = registered.id_token(login["nonce"], custom={"task_id": "quiz"})
    form = {"id_token": token, "state": login["state"], "lti_storage_target": TARGET}
    read = client.post("/lti/launch", data=form, follow_redirects=False)
    assert read.status_code == 200, read.text
    assert attribute(read.text, "data-storage-key") == login["key"]
    assert attribute(read.text, "data-storage-origins") == registered.url
    assert f'name="id_token" value="{token}"' in read.text
    assert "set-cookie" not in {k.lower() for k in read.headers}

    before = stored(ctx)
    proven = form | {"lti_storage_proof": login["proof"]}
    entered = client.post("/lti/launch", data=proven, headers=OURS, follow_redirects=False)
    assert entered.status_code == 200, entered.text  # the cookie check, then in place
    assert attribute(entered.text, "data-next") == "/learn/tasks/quiz"
    assert stored(ctx)[2] == before[2] + 1  # a learner's session
    window = new_window(entered.text)
    assert window.startswith("/learn/enter/"), window
    assert any(c.startswith("grader_session=") for c in entered.headers.get_list("set-cookie"))

    client.cookies.clear()  # the new window: a one-time link into the learner's task
    opened = client.get(window, follow_redirects=False)
    assert opened.status_code == 303 and client.cookies.get("grader_session")
    assert "Which call freezes a model?" in client.get("/learn/tasks/quiz").text
    client.cookies.clear()
    assert client.get(window, follow_redirects=False).status_code == 410  # used

    after = stored(ctx)
    again = client.post("/lti/launch", data=proven, headers=OURS, follow_redirects=False)
    assert again.status_code == 400 and "state" in again.text.lower()
    assert stored(ctx) == after


@pytest.mark.parametrize(
    "change, status, says",
    [
        ({"lti_storage_proof": "not-the-proof"}, 400, "state"),
        ({"state": "state-forged"}, 400, "state"),
        ({}, 403, "comes from the tool"),  # no Origin: not a page of ours
    ],
)
def test_a_wrong_or_missing_proof_is_refused_and_stores_nothing(
    client, registered, ctx, change, status, says
):
    login = storage_login(client, registered)
    token = registered.id_token(login["nonce"], custom={"task_id": "quiz"})
    form = {"id_token": token, "state": login["state"], "lti_storage_proof": login["proof"]}
    headers = OURS if change else {}
    before = stored(ctx)
    response = client.post(
        "/lti/launch", data=form | change, headers=headers, follow_redirects=False
    )
    assert response.status_code == status, response.text
    assert says in response.text.lower() and "<h1>" in response.text
    assert stored(ctx) == before
    proven = client.post("/lti/launch", data=form, headers=OURS, follow_redirects=False)
    assert proven.status_code == 200, proven.text  # the refusal used nothing up


def test_a_proof_posted_from_another_sites_page_is_refused(client, registered, ctx):
    login = storage_login(client, registered)
    token = registered.id_token(login["nonce"], custom={"task_id": "quiz"})
    form = {"id_token": token, "state": login["state"], "lti_storage_proof": login["proof"]}
    before = stored(ctx)
    for origin in (registered.url, "null", "http://testserver.evil.example"):
        response = client.post(
            "/lti/launch", data=form, headers={"Origin": origin}, follow_redirects=False
        )
        assert response.status_code == 403, (origin, response.text)
    assert stored(ctx) == before


def test_a_launch_without_cookie_or_stored_proof_is_refused(client, registered, ctx):
    """A state whose login offered no storage frame, or a state nobody issued, with no
    cookie: refused as before, never the page that reads the frame."""
    for state in ("state-forged", storage_login(client, registered)["state"] + "x"):
        token = registered.id_token("n", custom={"task_id": "quiz"})
        response = client.post(
            "/lti/launch", data={"id_token": token, "state": state}, follow_redirects=False
        )
        assert response.status_code == 400 and "state" in response.text.lower()


def test_a_storage_target_that_names_no_frame_is_not_offered(client, registered):
    query = {
        "iss": registered.issuer, "login_hint": "h", "client_id": "grader-tool",
        "lti_storage_target": '"><script>alert(1)</script>',
    }  # fmt: skip
    response = client.get("/lti/login", params=query, follow_redirects=False)
    assert response.status_code == 302  # plain http: straight on, with the state's cookie
