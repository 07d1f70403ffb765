"""The service's own dependencies failing: Redis restarted (losing every message) during a burst,
PostgreSQL gone while an answer is graded, and a full queue pushing back on clients."""

from __future__ import annotations

import time

import httpx
import pytest
import redis
import yaml
from sqlalchemy import text

from tests.conftest import gradectl
from tests.e2e.conftest import auth, fresh_database, start_api
from tests.faults.conftest import CHOICE_TASK, CODE_TASK, CORRECT, SLEEPY, WRONG

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def _burst_answer(i: int) -> dict:
    if i % 3 == 0:
        return {"task_id": CODE_TASK, "code": CORRECT if i % 2 else WRONG}
    return {"task_id": CHOICE_TASK, "choice": "AB"[i % 2]}


def test_redis_restart_during_a_burst_loses_nothing(stack):
    sent = []
    for i in range(10):
        if i == 4:
            stack.broker.stop()  # every queued message is gone with it
        if i == 7:
            stack.broker.start()
        sent.append(stack.submit(student_id=f"burst-{i}", **_burst_answer(i)))
    outcomes = [stack.result(row["id"])["outcome"] for row in sent]
    assert outcomes == [
        ("passed" if i % 2 else "failed") if i % 3 == 0 else ("passed" if i % 2 == 0 else "failed")
        for i in range(10)
    ]
    with stack.db.connect() as conn:
        rows = conn.execute(
            text("SELECT status, tries, outcome FROM submissions WHERE student_id LIKE 'burst-%'")
        ).all()
    assert len(rows) == 10 and all(r.status == "completed" and r.tries == 1 for r in rows)
    stack.check_alive()


def test_postgres_down_refuses_writes_then_work_resumes(stack, wait_until):
    in_flight = stack.submit(task_id=CODE_TASK, student_id="pg-in-flight", code=SLEEPY)
    wait_until(lambda: stack.row(in_flight["id"])["status"] == "running", 60, "grading to start")
    stack.database.cut()
    try:
        refused = stack.client.post(
            "/v1/submissions",
            json={"task_id": CHOICE_TASK, "student_id": "pg-refused", "choice": "A"},
            headers=auth(stack.lms),
        )
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["error"]["code"] == "unavailable"
        read = stack.client.get(f"/v1/submissions/{in_flight['id']}", headers=auth(stack.lms))
        assert read.status_code == 503 and "Retry-After" in read.headers
        time.sleep(4)
    finally:
        stack.database.restore()
    body = stack.result(in_flight["id"])
    assert (body["outcome"], body["score"]) == ("passed", 10.0), body
    assert stack.attempts_used(CODE_TASK, "pg-in-flight") == 1
    with stack.db.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM submissions WHERE student_id = 'pg-refused'")
        ).scalar()
    assert stored == 0 and stack.attempts_used(CHOICE_TASK, "pg-refused") == 0
    after = stack.submit(task_id=CHOICE_TASK, student_id="pg-refused", choice="A")
    assert after["attempts_left"] == 2 and stack.result(after["id"])["outcome"] == "passed"


def test_full_queue_answers_503_with_retry_after(stack):
    """A second API with room for two queued submissions, on a broker no worker reads."""
    with fresh_database("grader_faults_queue") as url:
        env = stack.env | {
            "GRADER_DATABASE_URL": url,
            "GRADER_REDIS_URL": stack.broker.url.rsplit("/", 1)[0] + "/1",
            "GRADER_MAX_QUEUE_LENGTH": "2",
            "GRADER_LOAD_TASK_BANK": "true",
        }
        api, api_url = start_api(env, stack.log_dir, "api-small-queue")
        try:
            made = gradectl("keys", "create", "--role", "lms", "--course", "q", env=env)
            key = yaml.safe_load(made.stdout)["key"]
            answer = {"task_id": "quiz-freeze-syntax", "choice": "A"}
            with httpx.Client(base_url=api_url, timeout=30, headers=auth(key)) as client:
                codes = [
                    client.post("/v1/submissions", json=answer | {"student_id": f"q{i}"})
                    for i in range(3)
                ]
            assert [c.status_code for c in codes] == [202, 202, 503], codes[-1].text
            assert int(codes[-1].headers["Retry-After"]) > 0
            assert codes[-1].json()["error"]["code"] == "unavailable"
        finally:
            api.stop()
            redis.Redis.from_url(env["GRADER_REDIS_URL"]).flushdb()
