"""No single process whose death strands a submission: a whole worker (its main process, which
runs the reaper, and its pool) killed mid-job is recovered by another worker's reaper;
readiness fails while no reaper runs and recovers with it; a grading process killed mid-job
with no reaper running anywhere is taken over by its own message, come back after the grace;
and a worker started with the default concurrency runs a grading process per core, so one
answer looping for its whole time limit holds no other. Each submission ends graded once,
its attempt counted once."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from tests.e2e.conftest import Process, children_of, start_worker
from tests.faults.conftest import CODE_TASK, CORRECT, SLEEPY

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

RECOVERY_S = 90  # generous: the grace is 4 s and the reaper's interval 1 s in the fault stack
LOOPING = "while True:\n    pass\n"


def _holder(stack, submission_id: str) -> int | None:
    """The pid of the process whose try holds the running row, if one does."""
    row = stack.row(submission_id)
    if row["status"] != "running" or row["claimed_by"] is None:
        return None
    return int(row["claimed_by"].rsplit(":", 1)[1])


def _reaper(stack) -> tuple[int, dict]:
    response = stack.client.get("/readyz")
    return response.status_code, response.json()["checks"]["reaper"]


def _worker_env(stack) -> dict[str, str]:
    return stack.env | {"DOCKER_HOST": f"unix://{stack.engine.listen}"}


def _orphaned_temp_dirs(tmp_dir: Path) -> list[Path]:
    """multiprocessing's temp dirs that no live process maps or holds open: a killed main
    process's, which a supervisor removes before it starts it again (as PrivateTmp would)."""
    used = ""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                used += (entry / "maps").read_text()
                used += "".join(os.readlink(fd) + "\n" for fd in (entry / "fd").iterdir())
            except OSError:
                continue
    return [d for d in tmp_dir.glob("pymp-*") if d.is_dir() and f"{d}/" not in used]


def _signal_workers(stack, sig: signal.Signals) -> None:
    for process in stack.workers:
        os.kill(process.popen.pid, sig)  # the main process only: its pool stays as it is


@pytest.fixture(scope="module")
def restarted(stack) -> Iterator[list[Process]]:
    """Workers started in place of killed ones (as a supervisor would), stopped at the end."""
    made: list[Process] = []
    yield made
    for process in made:
        process.stop(grace_s=30.0)


def test_a_worker_killed_whole_mid_job_is_recovered_by_another_workers_reaper(
    stack, restarted, wait_until
):
    sent = stack.submit(task_id=CODE_TASK, student_id="host-lost", code=SLEEPY)
    wait_until(lambda: _holder(stack, sent["id"]) is not None, 60, "a worker to claim it")
    time.sleep(1)  # the sandbox runs the answer's sleep now
    holder = _holder(stack, sent["id"])
    [lost] = [i for i, w in enumerate(stack.workers) if os.getpgid(holder) == w.popen.pid]
    victim = stack.workers[lost]
    os.killpg(victim.popen.pid, signal.SIGKILL)  # its reaper, its pool, the message it held
    victim.popen.wait(timeout=10)

    body = stack.result(sent["id"], timeout_s=RECOVERY_S)
    assert (body["outcome"], body["score"], body["charged"]) == ("passed", 10.0, True), body
    row = stack.row(sent["id"])
    survivor = stack.workers[1 - lost].popen.pid
    assert row["tries"] == 2 and os.getpgid(int(row["claimed_by"].rsplit(":", 1)[1])) == survivor
    assert stack.attempts_used(CODE_TASK, "host-lost") == 1
    status, reaper = _reaper(stack)
    assert status == 200 and reaper["ok"] is True, reaper
    assert reaper["by"].endswith(f":{survivor}")  # the only reaper left ran since

    for left in _orphaned_temp_dirs(stack.tmp_dir):
        shutil.rmtree(left)
    replacement = start_worker(_worker_env(stack), stack.log_dir, f"worker-{lost + 1}-restarted")
    restarted.append(replacement)
    stack.workers[lost] = replacement
    # The message the killed worker held comes back after the broker's visibility timeout (an
    # hour); put back now, it finds its row completed and does nothing.
    with Connection(stack.broker.url, transport_options={"visibility_timeout": 0}) as conn:
        conn.default_channel.qos.restore_visible()
    time.sleep(2)
    assert stack.row(sent["id"])["tries"] == 2


def test_readiness_fails_while_no_reaper_runs_and_recovers_with_it(stack, wait_until):
    status, reaper = _reaper(stack)
    assert status == 200 and reaper["ok"] is True and reaper["interval_s"] == 1, reaper
    metrics = stack.client.get("/metrics").text
    assert "grader_reaper_last_run_timestamp_seconds " in metrics
    _signal_workers(stack, signal.SIGSTOP)  # hung: every process that runs a reaper
    try:
        wait_until(lambda: _reaper(stack)[0] == 503, 30, "readiness to fail without a reaper")
        body = stack.client.get("/readyz").json()
        assert body["ready"] is False and body["checks"]["reaper"]["seconds_ago"] > 3, body
        assert all(c["ok"] for name, c in body["checks"].items() if name != "reaper"), body
    finally:
        _signal_workers(stack, signal.SIGCONT)
    wait_until(lambda: _reaper(stack)[0] == 200, 30, "readiness to recover with the reapers")


@pytest.fixture(scope="module")
def lone_worker(stack, restarted) -> Iterator[Process]:
    """The only worker that takes work (the stack's are stopped), with the default concurrency
    and a reaper that runs only when it starts: what recovers here is not a reaper."""
    argv = [sys.executable, "-m", "cli.gradectl", "worker", "--queues", "cpu,webhooks"]
    env = _worker_env(stack) | {"GRADER_REAPER_INTERVAL_S": "3600"}
    _signal_workers(stack, signal.SIGSTOP)
    time.sleep(1)  # the reaper's turn the stopped workers may hold has lapsed
    process = Process("worker-lone", argv, env, stack.log_dir)
    try:
        deadline = time.monotonic() + 60
        while not (
            len(children_of(process.popen.pid)) == (os.cpu_count() or 1)
            and (_reaper(stack)[1]["by"] or "").endswith(f":{process.popen.pid}")
        ):  # its pool is up, and its reaper has had its one run
            process.check_alive()
            assert time.monotonic() < deadline, "the worker did not start its pool and reaper"
            time.sleep(0.2)
        yield process
    finally:
        process.stop(grace_s=30.0)
        _signal_workers(stack, signal.SIGCONT)


def test_a_grading_process_killed_mid_job_is_taken_over_by_its_own_message(
    stack, lone_worker, wait_until
):
    reaped_at = _reaper(stack)[1]["last_run_at"]
    sent = stack.submit(task_id=CODE_TASK, student_id="own-message", code=SLEEPY)
    wait_until(lambda: _holder(stack, sent["id"]) is not None, 60, "the worker to claim it")
    time.sleep(1)
    victim = _holder(stack, sent["id"])
    assert victim in children_of(lone_worker.popen.pid)
    os.kill(victim, signal.SIGKILL)

    body = stack.result(sent["id"], timeout_s=RECOVERY_S)
    assert (body["outcome"], body["score"], body["charged"]) == ("passed", 10.0, True), body
    row = stack.row(sent["id"])
    assert row["tries"] == 2 and int(row["claimed_by"].rsplit(":", 1)[1]) != victim
    assert stack.attempts_used(CODE_TASK, "own-message") == 1
    status, reaper = _reaper(stack)
    assert reaper["last_run_at"] == reaped_at  # no reaper ran meanwhile
    assert status == 503 and reaper["ok"] is False, reaper
    lone_worker.check_alive()


def test_one_looping_answer_holds_no_other_with_the_default_concurrency(stack, lone_worker):
    assert len(children_of(lone_worker.popen.pid)) == os.cpu_count()
    looping = stack.submit(task_id=CODE_TASK, student_id="looping", code=LOOPING)
    deadline = time.monotonic() + 60
    while _holder(stack, looping["id"]) is None:
        assert time.monotonic() < deadline, "the looping answer was never claimed"
        time.sleep(0.2)
    behind = stack.submit(task_id=CODE_TASK, student_id="behind-a-loop", code=CORRECT)
    assert stack.result(behind["id"])["outcome"] == "passed"
    looped = stack.result(looping["id"])
    assert (looped["outcome"], looped["charged"]) == ("time_limit", True), looped
    # graded beside the loop, not after it: taken while the loop still held its process
    assert stack.row(behind["id"])["started_at"] < stack.row(looping["id"])["finished_at"]
