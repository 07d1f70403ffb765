"""A fresh database and several processes of the service starting at once (the API and
each worker migrate, load the task bank and create the bootstrap key when they start):
every one comes up, and each of those is done once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import httpx

from core.settings import PROJECT_ROOT
from tests.e2e.conftest import fresh_database

STARTS = 3
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_apis_starting_together_on_a_fresh_database_all_come_up(tmp_path):
    key = "grk_first_start_" + uuid.uuid4().hex
    with fresh_database("grader_first_start") as url:
        env = {
            **os.environ,
            "GRADER_DATABASE_URL": url,
            "GRADER_BOOTSTRAP_ADMIN_KEY": key,
            "GRADER_DATA_DIR": str(tmp_path),
            "GRADER_REDIS_URL": "redis://127.0.0.1:1/0",  # no broker: the reaper enqueues later
        }
        ports = [_free_port() for _ in range(STARTS)]
        apis = [
            subprocess.Popen(
                [sys.executable, "-m", "cli.gradectl", "serve", "--port", str(port)],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / f"api-{port}.log").open("wb"),
                start_new_session=True,
            )  # fmt: skip
            for port in ports
        ]
        try:
            listed = []
            for port, api in zip(ports, apis, strict=True):
                deadline = time.monotonic() + START_TIMEOUT_S
                while True:
                    log = (tmp_path / f"api-{port}.log").read_text(errors="replace")
                    assert api.poll() is None, f"the API on {port} exited:\n{log[-3000:]}"
                    try:
                        response = httpx.get(
                            f"http://127.0.0.1:{port}/v1/tasks",
                            headers={"Authorization": f"Bearer {key}"},
                        )
                        break
                    except httpx.TransportError:
                        assert time.monotonic() < deadline, f"no answer on {port}:\n{log[-3000:]}"
                        time.sleep(0.5)
                assert response.status_code == 200, response.text
                listed.append(sorted(task["id"] for task in response.json()))
            assert listed[0] and all(ids == listed[0] for ids in listed)
        finally:
            for api in apis:
                os.killpg(api.pid, signal.SIGTERM)
            for api in apis:
                api.wait(timeout=60)


def test_commands_migrating_together_on_a_fresh_database_all_succeed():
    with fresh_database("grader_first_start") as url:
        env = {**os.environ, "GRADER_DATABASE_URL": url}
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "cli.gradectl", "keys", "list"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            for _ in range(4)
        ]
        for run in runs:
            _, err = run.communicate(timeout=300)
            assert run.returncode == 0, err.decode()[-3000:]
