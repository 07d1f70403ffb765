"""Failures around one grading: a worker process killed mid-run, a message delivered twice, the
sandbox engine failing (for a while, then for good), webhook receivers that are down, slow
or broken. Each accepted submission must end with exactly one result, never charged for
our failure."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker
import docker.errors
import pytest

from core.settings import Settings
from sandbox.docker_backend import EXPIRES_LABEL, OWNER_LABEL, SANDBOX_LABEL
from services import queue
from tests.e2e.conftest import _free_port, auth, wait_for
from tests.faults.conftest import CHOICE_TASK, CODE_TASK, CORRECT, SLEEPY

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def _running(stack, submission_id: str) -> bool:
    row = stack.row(submission_id)
    return row["status"] == "running" and row["claimed_by"] is not None


def test_worker_killed_mid_grading_is_graded_once_by_another(stack, wait_until):
    sent = stack.submit(task_id=CODE_TASK, student_id="killed", code=SLEEPY)
    assert sent["attempts_left"] == 2
    wait_until(lambda: _running(stack, sent["id"]), 60, "a worker to claim it")
    time.sleep(2)  # the sandbox is running the answer's sleep now
    victim = int(stack.row(sent["id"])["claimed_by"].rsplit(":", 1)[1])
    owners = [w for w in stack.workers if os.getpgid(victim) == w.popen.pid]
    assert len(owners) == 1 and victim != owners[0].popen.pid  # the pool process, not the parent
    os.kill(victim, signal.SIGKILL)

    body = stack.result(sent["id"])
    assert (body["outcome"], body["score"], body["charged"]) == ("passed", 10.0, True), body
    row = stack.row(sent["id"])
    assert row["tries"] >= 2 and int(row["claimed_by"].rsplit(":", 1)[1]) != victim
    assert stack.attempts_used(CODE_TASK, "killed") == 1
    listed = stack.client.get(
        "/v1/submissions", params={"student_id": "killed"}, headers=auth(stack.lms)
    ).json()
    assert [(s["id"], s["status"]) for s in listed] == [(sent["id"], "completed")]
    stack.check_alive()  # Celery replaced the killed pool process


def test_a_sandbox_container_killed_mid_job_is_regraded_uncharged(stack, wait_until):
    """Its fork server sends no end line: the engine or an operator stopped the container,
    not the answer, so the try is our failure (retried), never the answer's runtime error."""
    sent = stack.submit(task_id=CODE_TASK, student_id="container-killed", code=SLEEPY)
    wait_until(lambda: _running(stack, sent["id"]), 60, "a worker to claim it")
    time.sleep(2)  # the sandbox is running the answer's sleep now
    engine = docker.APIClient(version="auto")
    try:
        for container in list(stack.engine.containers):  # the one running it among them
            with contextlib.suppress(docker.errors.APIError):
                if engine.inspect_container(container)["State"].get("Running"):
                    engine.kill(container)
    finally:
        engine.close()

    body = stack.result(sent["id"])
    assert (body["outcome"], body["score"], body["charged"]) == ("passed", 10.0, True), body
    assert stack.row(sent["id"])["tries"] >= 2
    assert stack.attempts_used(CODE_TASK, "container-killed") == 1


def test_the_sandboxes_of_a_killed_grading_process_are_removed_at_once(stack, wait_until):
    """Not at their expiry: a worker killed again and again would leave its warm sandboxes
    importing torch and waiting for minutes, and those starve the live ones of CPU."""
    sent = stack.submit(task_id=CODE_TASK, student_id="sandboxes-swept", code=SLEEPY)
    wait_until(lambda: _running(stack, sent["id"]), 60, "a worker to claim it")
    time.sleep(2)  # the sandbox is running the answer's sleep now
    victim = int(stack.row(sent["id"])["claimed_by"].rsplit(":", 1)[1])
    engine = docker.APIClient(version="auto")
    try:

        def made_by_victim() -> dict[str, float]:
            found = {}
            for container in list(stack.engine.containers):
                with contextlib.suppress(docker.errors.NotFound):
                    labels = engine.inspect_container(container)["Config"]["Labels"] or {}
                    if labels.get(OWNER_LABEL, "").split("|")[2:3] == [str(victim)]:
                        found[container] = float(labels[EXPIRES_LABEL])
            return found

        held = made_by_victim()
        assert held, "the killed process made no sandbox: the test proved nothing"
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        wait_until(lambda: not made_by_victim(), 30, "the reaper to remove its sandboxes")
        assert min(held.values()) - killed_at > 30  # long before their expiry
    finally:
        engine.close()
    body = stack.result(sent["id"])
    assert (body["outcome"], body["charged"]) == ("passed", True), body
    assert stack.attempts_used(CODE_TASK, "sandboxes-swept") == 1


def test_same_message_twice_gives_one_grading(stack, wait_until):
    sent = stack.submit(task_id=CODE_TASK, student_id="twice", code=SLEEPY)
    assert queue.send_many(Settings(redis_url=stack.broker.url), [queue.grading(sent["id"], "cpu")])
    body = stack.result(sent["id"])
    assert body["outcome"] == "passed", body
    wait_until(lambda: stack.broker.client().llen("cpu") == 0, 30, "the copy to be consumed")
    time.sleep(2)
    row = stack.row(sent["id"])
    assert row["tries"] == 1 and row["status"] == "completed"
    assert row["finished_at"].isoformat() == body["finished_at"]
    assert stack.attempts_used(CODE_TASK, "twice") == 1


def test_engine_failure_is_retried_uncharged_then_graded(stack, wait_until):
    stack.engine.cut()
    try:
        sent = stack.submit(task_id=CODE_TASK, student_id="engine-flaky", code=CORRECT)
        wait_until(
            lambda: (
                stack.row(sent["id"])["tries"] >= 2 and stack.row(sent["id"])["status"] == "queued"
            ),
            60,
            "the internal error to be retried",
        )
    finally:
        stack.engine.restore()
    body = stack.result(sent["id"])
    assert (body["outcome"], body["score"], body["charged"]) == ("passed", 10.0, True), body
    assert stack.row(sent["id"])["tries"] == 3
    assert stack.attempts_used(CODE_TASK, "engine-flaky") == 1  # the one submission, no more
    assert sent["attempts_left"] == 2


def test_engine_down_past_the_retries_is_an_uncharged_internal_error(stack):
    stack.engine.cut()
    try:
        sent = stack.submit(task_id=CODE_TASK, student_id="engine-down", code=CORRECT)
        body = stack.result(sent["id"], timeout_s=60)
    finally:
        stack.engine.restore()
    assert (body["outcome"], body["charged"]) == ("internal_error", False), body
    assert "not your fault" in body["result"]["error"]
    assert stack.row(sent["id"])["tries"] == 3
    assert stack.attempts_used(CODE_TASK, "engine-down") == 0  # the attempt was given back


def test_reaper_removes_expired_orphan_containers(stack, wait_until):
    client = docker.DockerClient(base_url=f"unix://{stack.engine.listen}")
    image = Settings().docker_image
    orphan = client.containers.create(
        image, command=["true"], labels={SANDBOX_LABEL: "1", EXPIRES_LABEL: "1"}
    )
    try:
        wait_until(
            lambda: not client.containers.list(all=True, filters={"id": orphan.id}),
            30,
            "the reaper to remove the orphaned sandbox",
        )
    finally:
        client.close()


class _Receiver(BaseHTTPRequestHandler):
    """/down is never served (see `receivers`); /slow answers after the timeout; /broken is 500."""

    tries: dict[str, int]

    def do_POST(self) -> None:
        self.tries[self.path] = self.tries.get(self.path, 0) + 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/slow":
            time.sleep(3)
        self.send_response(500 if self.path == "/broken" else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, dict[str, int]]]:
    tries: dict[str, int] = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("R", (_Receiver,), {"tries": tries}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tries
    server.shutdown()
    server.server_close()


def test_failing_webhook_receivers_are_retried_then_marked_failed(stack, receiver):
    url, tries = receiver
    targets = {
        "down": f"http://127.0.0.1:{_free_port()}/down",
        "slow": url + "/slow",
        "broken": url + "/broken",
    }
    sent = {
        name: stack.submit(
            task_id=CHOICE_TASK, student_id=f"hook-{name}", choice="A", callback_url=target
        )
        for name, target in targets.items()
    }
    for name, row in sent.items():
        assert stack.result(row["id"])["outcome"] == "passed"  # grading does not wait on hooks
        deliveries = wait_for(
            stack.client,
            f"/v1/submissions/{row['id']}/webhooks",
            stack.lms,
            lambda d: bool(d) and d[0]["status"] != "pending",
            60,
        )
        assert [(d["status"], d["attempts"]) for d in deliveries] == [("failed", 3)], deliveries
        expected = {"down": "ConnectError", "slow": "Timeout", "broken": "HTTP 500"}[name]
        assert expected in deliveries[0]["last_error"], deliveries
    assert tries == {"/slow": 3, "/broken": 3}
