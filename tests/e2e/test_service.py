"""End to end: HTTP → PostgreSQL row + Redis message → Celery worker → Docker sandbox → result,
webhooks, spec self-tests, regrading, archiving, metrics and readiness."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from core.settings import PROJECT_ROOT
from tests.e2e.conftest import GRADE_WAIT_S, auth, post_spec, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

CORRECT = "model.requires_grad_(False)\n"
ONLY_HEAD = "for p in model.fc.parameters():\n    p.requires_grad = False\n"
ONLY_HEAD_NAME = "only the last layer frozen"  # a known-wrong answer of finetune-freeze


def submit(client, key, **body) -> dict:
    response = client.post("/v1/submissions", json=body, headers=auth(key))
    assert response.status_code == 202, response.text
    return response.json()


def result_of(client, key, submission_id: str) -> dict:
    """Long-poll until the submission is graded, as a client would."""
    deadline = time.monotonic() + GRADE_WAIT_S
    while True:
        response = client.get(
            f"/v1/submissions/{submission_id}", params={"wait_s": 30}, headers=auth(key)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] == "completed" or time.monotonic() > deadline:
            assert body["status"] == "completed", body
            return body


def freeze_spec(task_id: str, reference: str, known_wrong: str | None = None) -> str:
    """The bundled finetune-freeze spec under a new id, keeping at most one known-wrong answer
    (the one named), so that its self-test takes few sandbox runs."""
    spec = yaml.safe_load((PROJECT_ROOT / "taskbank/tasks/finetune-freeze.yaml").read_text())
    spec |= {"id": task_id, "title": "Freeze every layer (e2e)", "reference": reference}
    spec["known_wrong"] = [kw for kw in spec["known_wrong"] if kw["name"] == known_wrong]
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.fixture(scope="module")
def code_task_ready(client, worker, admin_key) -> None:
    body = wait_for(
        client,
        "/v1/tasks/finetune-freeze",
        admin_key,
        lambda b: b["status"] != "validating",
        GRADE_WAIT_S,
    )
    assert body["status"] == "ready", body


@pytest.fixture(scope="module")
def submitted(client, keys, code_task_ready, posted_specs) -> dict[str, dict]:
    """Every graded answer of this module, sent at once so the worker grades while tests run."""
    lms = keys["lms_a"]
    answers = {
        "code": {"code": CORRECT},
        "blanks": {"blanks": {"1": "D"}},
        "grad_attribute": {"blanks": {"1": "B"}},
        "only_head": {"code": ONLY_HEAD},
    }
    return {
        name: submit(client, lms, task_id="finetune-freeze", student_id=f"s-{name}", **answer)
        for name, answer in answers.items()
    }


@pytest.fixture(scope="module")
def posted_specs(client, keys, worker) -> dict[str, str]:
    """A new valid spec, and one whose reference freezes only the head, so that its known-wrong
    answer gets full marks; posted early so that the worker self-tests them while tests run."""
    ids = {
        "valid": f"e2e-freeze-{uuid.uuid4().hex[:8]}",
        "broken": f"e2e-bad-{uuid.uuid4().hex[:8]}",
    }
    specs = {
        "valid": freeze_spec(ids["valid"], CORRECT),
        "broken": freeze_spec(ids["broken"], "model.fc.requires_grad_(False)\n", ONLY_HEAD_NAME),
    }
    for name, task_id in ids.items():
        response = post_spec(client, keys["instructor_a"], specs[name])
        assert response.status_code == 202, response.text
        assert response.json() | {"digest": None} == {
            "id": task_id, "version": 1, "status": "validating", "digest": None, "created": True,
        }  # fmt: skip
    return ids


def test_readyz_reports_database_broker_isolated_sandbox_and_reaper(client, worker):
    deadline = time.monotonic() + 60  # the worker reaps once as it starts
    while (body := client.get("/readyz").json())["checks"]["reaper"]["last_run_at"] is None:
        assert time.monotonic() < deadline, body
        time.sleep(0.5)
    assert body["ready"] is True, body
    assert body["checks"]["reaper"]["ok"] is True and body["checks"]["reaper"]["by"], body
    checks = body["checks"]
    assert checks["database"]["ok"] is True
    assert checks["broker"]["ok"] is True and set(checks["broker"]["queues"]) >= {"cpu", "webhooks"}
    assert checks["sandbox"] | {"detail": ""} == {
        "ok": True, "backend": "docker", "isolated": True, "detail": "",
    }  # fmt: skip


@pytest.mark.parametrize("answer", ["code", "blanks"])
def test_seed_answer_passes_with_full_marks(client, keys, submitted, answer):
    body = result_of(client, keys["lms_a"], submitted[answer]["id"])
    assert (body["outcome"], body["score"], body["max_score"]) == ("passed", 10.0, 10.0), body
    assert body["result"]["backend"] == "docker" and body["result"]["isolated"] is True
    assert all(check["passed"] for check in body["result"]["checks"])
    assert submitted[answer]["attempts_left"] == 2


def test_grad_attribute_is_a_runtime_error_with_the_mistakes_feedback(client, keys, submitted):
    body = result_of(client, keys["lms_a"], submitted["grad_attribute"]["id"])
    assert body["outcome"] == "runtime_error" and body["score"] == 0.0, body
    assert any("param.grad" in line for line in body["result"]["feedback"]), body["result"]
    assert body["charged"] is True


def test_freezing_only_the_head_fails_the_frozen_check(client, keys, submitted):
    body = result_of(client, keys["lms_a"], submitted["only_head"]["id"])
    assert body["outcome"] == "failed" and body["score"] < body["max_score"], body
    failed = {c["name"] for c in body["result"]["checks"] if not c["passed"]}
    assert failed == {"frozen"}
    assert any("still require gradients" in line for line in body["result"]["feedback"])


def test_multiple_choice_task_is_graded_by_its_key(client, keys, worker):
    right = submit(
        client, keys["alice"], task_id="quiz-freeze-syntax", student_id="alice", choice="A"
    )
    wrong = submit(client, keys["bob"], task_id="quiz-freeze-syntax", student_id="bob", choice="C")
    right_body = result_of(client, keys["alice"], right["id"])
    wrong_body = result_of(client, keys["bob"], wrong["id"])
    assert right_body["outcome"] == "passed"
    assert right_body["score"] == right_body["max_score"] > 0
    assert (wrong_body["outcome"], wrong_body["score"]) == ("failed", 0.0)
    assert "Keras" in json.dumps(wrong_body["result"])  # the option's own feedback


class _Receiver(BaseHTTPRequestHandler):
    """Records each delivery; a path ending in /flaky answers 500 to its first try."""

    calls: list[dict]
    tries: dict[str, int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.tries[self.path] = self.tries.get(self.path, 0) + 1
        self.calls.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status = 500 if self.path.endswith("/flaky") and self.tries[self.path] == 1 else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    calls: list[dict] = []
    handler = type("Receiver", (_Receiver,), {"calls": calls, "tries": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", calls
    server.shutdown()
    server.server_close()


def verified(secret: str, call: dict) -> dict:
    """The receiver's side of the contract: check the signature, then trust the body."""
    timestamp = call["headers"]["X-Grader-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + call["body"], hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(call["headers"]["X-Grader-Signature"], f"sha256={expected}")
    assert abs(time.time() - int(timestamp)) < 300
    return json.loads(call["body"])


def test_webhook_is_signed_with_the_keys_secret_and_retried(client, keys, worker, receiver):
    url, calls = receiver
    lms = keys["lms_a"]
    sent = {
        path: submit(
            client,
            lms,
            task_id="quiz-freeze-syntax",
            student_id=f"hook{path}",
            choice="A",
            callback_url=url + path,
        )  # fmt: skip
        for path in ("/ok", "/flaky")
    }
    deliveries = {
        path: wait_for(
            client,
            f"/v1/submissions/{row['id']}/webhooks",
            lms,
            lambda d: bool(d) and d[0]["status"] != "pending",
            GRADE_WAIT_S,
        )
        for path, row in sent.items()
    }
    assert [d["status"] for d in deliveries["/ok"]] == ["delivered"]
    assert (deliveries["/ok"][0]["attempts"], deliveries["/ok"][0]["last_status_code"]) == (1, 204)
    assert deliveries["/flaky"][0]["status"] == "delivered"
    assert deliveries["/flaky"][0]["attempts"] == 2
    for path, row in sent.items():
        got = [verified(lms.webhook_secret, c) for c in calls if c["path"] == path]
        assert got and all(g["submission_id"] == row["id"] for g in got)
        assert got[-1]["outcome"] == "passed" and got[-1]["event"] == "submission.completed"
    forged = dict(calls[0], body=calls[0]["body"].replace(b"passed", b"failed"))
    with pytest.raises(AssertionError):
        verified(lms.webhook_secret, forged)
    with pytest.raises(AssertionError):
        verified(keys["lms_b"].webhook_secret, calls[0])


def test_posted_spec_is_self_tested_then_grades(client, keys, posted_specs, code_task_ready):
    task_id = posted_specs["valid"]
    instructor = keys["instructor_a"]
    body = wait_for(
        client, f"/v1/tasks/{task_id}", instructor, lambda b: b["status"] != "validating", 300
    )
    assert body["status"] == "ready", body["report"]
    assert body["course"] == "course-a" and "valid" in body["report"]
    row = submit(client, keys["lms_a"], task_id=task_id, student_id="s-new", blanks={"1": "D"})
    graded = result_of(client, keys["lms_a"], row["id"])
    assert (graded["outcome"], graded["score"]) == ("passed", 10.0)


def test_spec_whose_reference_fails_is_stored_invalid_with_a_report(client, keys, posted_specs):
    task_id = posted_specs["broken"]
    instructor = keys["instructor_a"]
    body = wait_for(
        client, f"/v1/tasks/{task_id}", instructor, lambda b: b["status"] != "validating", 300
    )
    assert body["status"] == "invalid", body["report"]
    assert f"known-wrong {ONLY_HEAD_NAME!r} got full marks" in body["report"], body["report"]
    refused = client.post(
        "/v1/submissions",
        json={"task_id": task_id, "student_id": "s1", "code": CORRECT},
        headers=auth(keys["lms_a"]),
    )
    assert refused.status_code == 409 and "invalid" in refused.json()["error"]["message"]


def test_spec_schema_error_is_a_422_naming_the_field(client, keys):
    spec = freeze_spec("e2e-schema-error", CORRECT).replace("difficulty: medium", "difficulty: 7")
    response = post_spec(client, keys["instructor_a"], spec)
    assert response.status_code == 422
    assert "difficulty" in response.json()["error"]["message"]
    assert (
        client.get("/v1/tasks/e2e-schema-error", headers=auth(keys["instructor_a"])).status_code
        == 404
    )


def test_regrade_grades_the_submission_again(client, keys, submitted):
    first = result_of(client, keys["lms_a"], submitted["code"]["id"])
    response = client.post(
        f"/v1/submissions/{first['id']}/regrade", headers=auth(keys["instructor_a"])
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    again = result_of(client, keys["lms_a"], first["id"])
    assert (again["outcome"], again["score"]) == ("passed", 10.0)
    assert again["finished_at"] > first["finished_at"]


def test_archived_task_refuses_new_submissions(client, keys):
    instructor = keys["instructor_a"]
    task_id = f"e2e-archive-{uuid.uuid4().hex[:8]}"
    spec = (PROJECT_ROOT / "taskbank/tasks/quiz-freeze-syntax.yaml").read_text()
    assert (
        post_spec(client, instructor, spec.replace("quiz-freeze-syntax", task_id)).status_code
        == 202
    )
    answer = {"task_id": task_id, "student_id": "alice", "choice": "A"}
    assert (
        client.post("/v1/submissions", json=answer, headers=auth(keys["alice"])).status_code == 202
    )
    assert client.post(f"/v1/tasks/{task_id}/archive", headers=auth(instructor)).status_code == 200
    refused = client.post("/v1/submissions", json=answer, headers=auth(keys["alice"]))
    assert refused.status_code == 409 and "archived" in refused.json()["error"]["message"]
    listed = client.get("/v1/tasks", headers=auth(instructor)).json()
    assert task_id not in {t["id"] for t in listed}
    listed = client.get("/v1/tasks", params={"include_archived": True}, headers=auth(instructor))
    assert task_id in {t["id"] for t in listed.json()}


def test_metrics_expose_queue_depth_durations_and_outcomes(client, keys, submitted):
    for row in submitted.values():
        result_of(client, keys["lms_a"], row["id"])
    text = client.get("/metrics").text
    assert re.search(r'^grader_queue_depth\{queue="cpu"\} \d', text, re.M)
    count = re.search(r"^grader_grading_duration_seconds_count (\S+)", text, re.M)
    assert count and float(count.group(1)) >= len(submitted)
    assert re.search(r'^grader_grading_duration_seconds_bucket\{le="\+Inf"\} ', text, re.M)
    passed = re.search(r'^grader_outcomes_total\{outcome="passed"\} (\S+)', text, re.M)
    assert passed and float(passed.group(1)) >= 2
    assert re.search(r'^grader_outcomes_total\{outcome="runtime_error"\} ', text, re.M)
