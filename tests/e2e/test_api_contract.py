"""The HTTP contract: who may do what (401 and 403 apart), what each role sees, how bad input,
idempotency and attempt limits under concurrency are answered. Nothing here waits for grading."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import GRADE_WAIT_S, auth, choice_spec, post_spec, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

CORRECT = "model.requires_grad_(False)\n"
ROLES = ("admin", "instructor_a", "instructor_b", "lms_a", "alice", "bob", "none", "bad", "revoked")
NO_ACCESS = {"none": 401, "bad": 401, "revoked": 401}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def headers(keys, admin_key) -> dict[str, dict[str, str]]:
    """Request headers per role; `none` sends no key, `bad` an unknown one."""
    by_role = {name: auth(key) for name, key in keys.items()} | {
        "admin": auth(admin_key),
        "none": {},
        "bad": auth("grk_" + "x" * 43),
    }
    return {role: by_role[role] for role in ROLES}


@pytest.fixture(scope="module")
def world(client, keys, admin_key) -> dict[str, str]:
    """A course-A quiz and one submission each by alice and bob."""
    task_id = unique("auth-quiz")
    assert post_spec(client, keys["instructor_a"], choice_spec(task_id)).status_code == 202
    subs = {}
    for student in ("alice", "bob"):
        response = client.post(
            "/v1/submissions",
            json={"task_id": task_id, "student_id": student, "choice": "B"},
            headers=auth(keys[student]),
        )
        assert response.status_code == 202, response.text
        subs[student] = response.json()["id"]
    return {"task": task_id, "alice_sub": subs["alice"], "bob_sub": subs["bob"]}


def _course_a_task(client, admin_key) -> str:
    """A fresh course-A quiz, for calls that change the task they act on."""
    task_id = unique("auth-fresh")
    response = post_spec(client, admin_key, choice_spec(task_id), course="course-a")
    assert response.status_code == 202, response.text
    return task_id


def _submit_as(role: str) -> dict:
    student = role if role in ("alice", "bob") else "carol"
    return {"student_id": student, "choice": "A"}


CALLS = {
    "list_tasks": lambda c, w, role, admin: c.get("/v1/tasks"),
    "create_task": lambda c, w, role, admin: c.post(
        "/v1/tasks", content=choice_spec(unique(f"auth-new-{role.replace('_', '-')}")).encode()
    ),
    "get_task": lambda c, w, role, admin: c.get(f"/v1/tasks/{w['task']}"),
    "get_version": lambda c, w, role, admin: c.get(f"/v1/tasks/{w['task']}/versions/1"),
    "archive": lambda c, w, role, admin: c.post(f"/v1/tasks/{_course_a_task(c, admin)}/archive"),
    "regrade_version": lambda c, w, role, admin: c.post(
        f"/v1/tasks/{w['task']}/versions/1/regrade"
    ),
    "submit": lambda c, w, role, admin: c.post(
        "/v1/submissions", json={"task_id": w["task"], **_submit_as(role)}
    ),
    "get_submission": lambda c, w, role, admin: c.get(f"/v1/submissions/{w['alice_sub']}"),
    "list_submissions": lambda c, w, role, admin: c.get("/v1/submissions"),
    "regrade": lambda c, w, role, admin: c.post(f"/v1/submissions/{w['alice_sub']}/regrade"),
    "webhooks": lambda c, w, role, admin: c.get(f"/v1/submissions/{w['alice_sub']}/webhooks"),
}

# role order: admin, instructor_a, instructor_b, lms_a, alice, bob (no/bad/revoked key: 401)
EXPECTED = {
    "list_tasks": (200, 200, 200, 200, 200, 200),
    "create_task": (202, 202, 202, 403, 403, 403),
    "get_task": (200, 200, 404, 200, 200, 200),
    "get_version": (200, 200, 404, 403, 403, 403),
    "archive": (200, 200, 404, 403, 403, 403),
    "regrade_version": (202, 202, 404, 403, 403, 403),
    "submit": (202, 403, 403, 202, 202, 202),
    "get_submission": (200, 200, 404, 200, 200, 404),
    "list_submissions": (200, 200, 200, 200, 200, 200),
    "regrade": (202, 202, 404, 403, 403, 403),
    "webhooks": (200, 200, 404, 200, 200, 404),
}
MATRIX = [
    (endpoint, role, dict(zip(ROLES, codes, strict=False)).get(role) or NO_ACCESS[role])
    for endpoint, codes in EXPECTED.items()
    for role in ROLES
]


@pytest.mark.parametrize(("endpoint", "role", "status"), MATRIX)
def test_authorisation_matrix(api_url, world, headers, admin_key, endpoint, role, status):
    with httpx.Client(base_url=api_url, headers=headers[role], timeout=30) as c:
        response = CALLS[endpoint](c, world, role, admin_key)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"


def test_x_api_key_header_authenticates(client, keys):
    assert client.get("/v1/tasks", headers={"X-API-Key": keys["lms_a"].key}).status_code == 200


def test_student_sees_only_their_own_submissions(client, world, keys):
    for student, other in (("alice", "bob"), ("bob", "alice")):
        for params in ({}, {"student_id": other}):
            rows = client.get("/v1/submissions", params=params, headers=auth(keys[student])).json()
            assert rows and {r["student_id"] for r in rows} == {student}
        own = client.get(f"/v1/submissions/{world[f'{student}_sub']}", headers=auth(keys[student]))
        assert own.status_code == 200
    lms_rows = client.get(
        "/v1/submissions", params={"task_id": world["task"]}, headers=auth(keys["lms_a"])
    ).json()
    assert {r["student_id"] for r in lms_rows} >= {"alice", "bob"}
    other_course = client.get("/v1/submissions", headers=auth(keys["instructor_b"])).json()
    assert all(r["task_id"] != world["task"] for r in other_course)


def test_student_cannot_submit_as_another_student(client, world, keys):
    response = client.post(
        "/v1/submissions",
        json={"task_id": world["task"], "student_id": "bob", "choice": "A"},
        headers=auth(keys["alice"]),
    )
    assert response.status_code == 403


def test_other_courses_cannot_see_or_submit_to_a_course_task(client, world, keys):
    body = {"task_id": world["task"], "student_id": "dave", "choice": "A"}
    assert client.post("/v1/submissions", json=body, headers=auth(keys["lms_b"])).status_code == 404
    listed = client.get("/v1/tasks", headers=auth(keys["lms_b"])).json()
    assert world["task"] not in {t["id"] for t in listed}


SECRET_FIELDS = {"spec", "report", "digest", "answer", "explanation", "reference", "setup"}


@pytest.mark.parametrize("role", ["lms_a", "alice"])
def test_students_and_lms_see_only_the_public_task_view(client, world, keys, role):
    for task_id in ("finetune-freeze", world["task"]):
        response = client.get(f"/v1/tasks/{task_id}", headers=auth(keys[role]))
        assert response.status_code == 200
        view = response.json()
        assert not SECRET_FIELDS & set(view), view
        assert "resnet18(weights" not in response.text  # the setup code
        assert "param.requires_grad = False" not in response.text  # the reference
        for check in view.get("checks", []):
            assert set(check) == {"name", "points"}
    listed = client.get("/v1/tasks", headers=auth(keys[role]))
    assert all(not SECRET_FIELDS & set(view) for view in listed.json())
    assert "resnet18(weights" not in listed.text


def test_staff_see_the_spec_and_report(client, world, keys):
    view = client.get(f"/v1/tasks/{world['task']}", headers=auth(keys["instructor_a"])).json()
    assert view["spec"]["answer"] == "A" and view["report"]


@pytest.fixture(scope="module")
def code_task_ready(client, worker, admin_key) -> str:
    """finetune-freeze self-tested by the worker: code answers are checked against a ready task."""
    body = wait_for(
        client,
        "/v1/tasks/finetune-freeze",
        admin_key,
        lambda b: b["status"] != "validating",
        GRADE_WAIT_S,
    )
    assert body["status"] == "ready", body
    return "finetune-freeze"


def _post(client, key, body: dict, **kwargs) -> httpx.Response:
    return client.post("/v1/submissions", json=body, headers=auth(key), **kwargs)


@pytest.mark.docker
def test_code_over_the_answer_limit_is_413(client, keys, code_task_ready):
    code = "x = 1\n" + "#" * 70_000 + "\n"
    response = _post(
        client, keys["lms_a"], {"task_id": code_task_ready, "student_id": "s", "code": code}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_body_over_the_request_limit_is_413(client, keys):
    big = b'{"task_id": "finetune-freeze", "student_id": "s", "code": "' + b"#" * 300_000 + b'"}'
    declared = client.post(
        "/v1/submissions",
        content=big,
        headers={**auth(keys["lms_a"]), "Content-Type": "application/json"},
    )
    assert declared.status_code == 413
    streamed = client.post(
        "/v1/submissions",
        content=iter([big[:100_000], big[100_000:200_000], big[200_000:]]),
        headers={**auth(keys["lms_a"]), "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize("field", ["code", "student_id", "task_id", "choice", "callback_url"])
def test_null_byte_in_any_field_is_422(client, world, keys, field):
    body = {"task_id": world["task"], "student_id": "s-null", "choice": "A"}
    body[field] = "a\x00b" if field != "callback_url" else "http://example.com/\x00"
    if field == "code":
        body.pop("choice")
    response = _post(client, keys["lms_a"], body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "path", ["/v1/submissions/a%00b", "/v1/tasks/a%00b", "/v1/tasks/a%00b/versions/1"]
)
def test_null_byte_in_a_path_is_not_found(client, keys, admin_key, path):
    assert client.get(path, headers=auth(admin_key)).status_code == 404


@pytest.mark.parametrize("param", ["student_id", "task_id"])
def test_null_byte_in_a_query_is_422(client, keys, param):
    response = client.get("/v1/submissions", params={param: "a\x00b"}, headers=auth(keys["lms_a"]))
    assert response.status_code == 422


@pytest.mark.parametrize("path", ["/v1/submissions", "/v1/tasks"])
def test_non_utf8_body_is_422(client, keys, path):
    response = client.post(
        path,
        content=b'{"task_id": "\xff\xfe", "student_id": "s", "choice": "A"}',
        headers={**auth(keys["instructor_a"] if path == "/v1/tasks" else keys["lms_a"]),
                 "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"


def test_malformed_json_is_422(client, keys):
    response = client.post(
        "/v1/submissions",
        content=b'{"task_id": ',
        headers={**auth(keys["lms_a"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 422


@pytest.mark.parametrize("key", ["none", "bad", "revoked"])
def test_a_caller_without_a_valid_key_gets_401_before_the_body_is_judged(client, headers, key):
    for body in (b'{"task_id": ', b'{"score": 10}'):
        response = client.post(
            "/v1/submissions", content=body,
            headers={**headers[key], "Content-Type": "application/json", "Idempotency-Key": "k" * 300},
        )  # fmt: skip
        assert response.status_code == 401, response.text


def test_an_idempotency_key_over_200_characters_is_422(client, world, keys):
    body = {"task_id": world["task"], "student_id": "s-long-key", "choice": "A"}
    for length, status in ((201, 422), (200, 202)):
        headers = {**auth(keys["lms_a"]), "Idempotency-Key": "k" * length}
        response = client.post("/v1/submissions", json=body, headers=headers)
        assert response.status_code == status, response.text
    assert (
        "Idempotency-Key"
        in client.post(
            "/v1/submissions",
            json=body,
            headers={**auth(keys["lms_a"]), "Idempotency-Key": "k" * 201},
        ).json()["error"]["message"]
    )


def test_the_submission_body_is_documented(client):
    post = client.get("/openapi.json").json()["paths"]["/v1/submissions"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"task_id", "student_id"} <= set(schema["required"])
    assert {"code", "blanks", "choice", "callback_url"} <= set(schema["properties"])


def test_unknown_task_is_404(client, keys):
    response = _post(
        client, keys["lms_a"], {"task_id": "no-such-task", "student_id": "s", "choice": "A"}
    )
    assert response.status_code == 404 and "no-such-task" in response.json()["error"]["message"]


def test_task_still_validating_is_409(client, keys):
    task_id = unique("auth-validating")
    spec = (
        f"id: {task_id}\ntitle: Still validating\ndifficulty: easy\nprompt: Freeze it.\n"
        "setup: raise SystemExit(3)\nreference: pass\n"
        "checks: [{name: frozen, type: trainable_params, points: 1}]\n"
    )
    posted = post_spec(client, keys["instructor_a"], spec)
    assert posted.status_code == 202 and posted.json()["status"] == "validating"
    response = _post(
        client, keys["lms_a"], {"task_id": task_id, "student_id": "s", "code": CORRECT}
    )
    assert response.status_code == 409
    assert "not ready" in response.json()["error"]["message"]


def test_unknown_fields_are_422_naming_the_field(client, world, keys):
    body = {"task_id": world["task"], "student_id": "s", "choice": "A", "score": 10}
    response = _post(client, keys["lms_a"], body)
    assert response.status_code == 422 and "score" in response.json()["error"]["message"]


def test_code_and_choice_together_are_422(client, world, keys):
    body = {"task_id": world["task"], "student_id": "s", "choice": "A", "code": CORRECT}
    response = _post(client, keys["lms_a"], body)
    assert response.status_code == 422 and "exactly one" in response.json()["error"]["message"]


def test_no_answer_is_422(client, world, keys):
    response = _post(client, keys["lms_a"], {"task_id": world["task"], "student_id": "s"})
    assert response.status_code == 422


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/", "http://[::1]/", "http://169.254.169.254/x", "ftp://example.com/"]
)
def test_callback_url_to_a_private_address_or_odd_scheme_is_422(client, world, keys, url):
    body = {"task_id": world["task"], "student_id": "s", "choice": "A", "callback_url": url}
    response = _post(client, keys["lms_a"], body)
    assert response.status_code == 422, response.text
    assert "callback_url" in response.json()["error"]["message"]


def test_same_idempotency_key_gives_the_same_submission(client, world, keys):
    student = unique("idem")
    body = {"task_id": world["task"], "student_id": student, "choice": "A"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.post("/v1/submissions", json=body, headers={**auth(keys["lms_a"]), **key})
    second = client.post("/v1/submissions", json=body, headers={**auth(keys["lms_a"]), **key})
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]
    rows = client.get(
        "/v1/submissions", params={"student_id": student}, headers=auth(keys["lms_a"])
    ).json()
    assert [r["id"] for r in rows] == [first.json()["id"]]


def test_concurrent_submissions_respect_max_attempts(api_url, client, keys):
    task_id = unique("auth-limited")
    assert (
        post_spec(client, keys["instructor_a"], choice_spec(task_id, max_attempts=3)).status_code
        == 202
    )
    student = unique("racer")
    body = {"task_id": task_id, "student_id": student, "choice": "B"}

    def one(_: int) -> int:
        with httpx.Client(base_url=api_url, timeout=60) as c:
            return c.post("/v1/submissions", json=body, headers=auth(keys["lms_a"])).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = Counter(pool.map(one, range(20)))
    assert statuses == {202: 3, 409: 17}
    rows = client.get(
        "/v1/submissions", params={"student_id": student}, headers=auth(keys["lms_a"])
    ).json()
    assert len(rows) == 3


def test_same_idempotency_key_sent_concurrently_makes_one_submission(api_url, world, keys):
    body = {"task_id": world["task"], "student_id": unique("idem"), "choice": "A"}
    headers = {**auth(keys["lms_a"]), "Idempotency-Key": uuid.uuid4().hex}

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=api_url, timeout=60) as c:
            return c.post("/v1/submissions", json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(one, range(6)))
    assert sorted(r.status_code for r in responses) == [200] * 5 + [202]
    assert len({r.json()["id"] for r in responses}) == 1


def test_attempts_are_counted_per_course(client, keys, admin_key):
    task_id = unique("auth-shared")
    assert post_spec(client, admin_key, choice_spec(task_id, max_attempts=1)).status_code == 202
    body = {"task_id": task_id, "student_id": "zoe", "choice": "B"}
    first_a = _post(client, keys["lms_a"], body)
    assert first_a.status_code == 202 and first_a.json()["attempts_left"] == 0
    assert _post(client, keys["lms_a"], body).status_code == 409
    first_b = _post(client, keys["lms_b"], body)  # zoe of course B is another student
    assert first_b.status_code == 202 and first_b.json()["attempts_left"] == 0
