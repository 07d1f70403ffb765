"""The service as a user runs it: a fresh PostgreSQL database, a Redis DB, `gradectl serve` and
`gradectl worker` as subprocesses, and API keys made with `gradectl keys create`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from core.settings import PROJECT_ROOT
from db.session import temporary_database
from sandbox.docker_backend import engine_answers
from tests.conftest import TEST_REDIS, gradectl, require_or_skip

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def stack_redis_url(first_db: int) -> str:
    """A Redis DB for one kind of service stack in this test process: `first_db`, and one
    more per xdist worker (four kinds' worth). Two stacks sharing a DB would take (and
    flush) each other's messages: each kind of stack (these tests, the browser tests) has
    its own range, and so does test_intake (1-6)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    return f"{TEST_REDIS}/{first_db + worker % 4}"


REDIS_URL = stack_redis_url(7)  # 7-10; the browser tests' stack takes 12-15
START_TIMEOUT_S = 90
# Generous: a fresh service self-tests its bank first (in the background), beside other tests.
GRADE_WAIT_S = 300
ADMIN_KEY = "grk_e2e_admin_" + uuid.uuid4().hex


def _postgres_answers() -> bool:
    try:
        with create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 2}).connect():
            return True
    except OperationalError:
        return False


def _redis_answers() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fresh_database(prefix: str = "grader_e2e") -> Iterator[str]:
    """A PostgreSQL database of its own, dropped at the end, so runs never see each other's rows."""
    require_or_skip(_postgres_answers(), "PostgreSQL server")
    with temporary_database(POSTGRES_ADMIN_URL, prefix) as url:
        yield url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@contextlib.contextmanager
def empty_redis_db(url: str) -> Iterator[str]:
    """The Redis DB at `url`, empty at the start and at the end."""
    require_or_skip(_redis_answers(), "Redis server")
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A dedicated Redis DB index, empty at the start and at the end."""
    with empty_redis_db(REDIS_URL) as url:
        yield url


E2E_TASKS = ("finetune-freeze.yaml", "quiz-freeze-syntax.yaml")


@pytest.fixture(scope="session")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the bundled tasks the tests use: a fresh worker self-tests the bank it loads
    before it grades, and on a fresh checkout the whole bank takes minutes."""
    folder = tmp_path_factory.mktemp("tasks")
    for name in E2E_TASKS:
        shutil.copy(PROJECT_ROOT / "taskbank" / "tasks" / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def service_env(database_url: str, redis_url: str, tasks_dir: Path) -> dict[str, str]:
    """The environment every piece (API, worker, CLI) is started with."""
    return {
        "GRADER_TASKS_DIR": str(tasks_dir),
        "GRADER_DATABASE_URL": database_url,
        "GRADER_REDIS_URL": redis_url,
        "GRADER_SANDBOX_BACKEND": "docker" if engine_answers() else "process",
        "GRADER_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "GRADER_WEBHOOK_BACKOFF_S": "0.5",
        "GRADER_DATA_DIR": str(PROJECT_ROOT / "var"),
        "GRADER_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
    }


class Process:
    """A service subprocess in its own process group, logged to a file, stopped with its children."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")

    def group_alive(self) -> bool:
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the whole group (a Celery worker's pool children too), SIGKILL what lingers."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                self.popen.poll()
                if not self.group_alive():
                    break
                time.sleep(0.1)
            else:
                continue
            break
        self.popen.wait(timeout=5)
        self._log.close()
        assert not self.group_alive(), f"processes of {self.name} survived SIGKILL"


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


def start_api(
    env: dict[str, str], log_dir: Path, name: str = "api", *args: str
) -> tuple[Process, str]:
    """`gradectl serve` on a free port, returned once ready (database, broker, sandbox)."""
    port = _free_port()
    argv = [sys.executable, "-m", "cli.gradectl", "serve", "--port", str(port), *args]
    server = Process(name, argv, env, log_dir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            server.check_alive()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    return server, url
            if time.monotonic() > deadline:
                pytest.fail(f"{name} was not ready in {START_TIMEOUT_S} s:\n{server.log_tail()}")
            time.sleep(0.3)
    except BaseException:
        server.stop()
        raise


def start_worker(env: dict[str, str], log_dir: Path, name: str = "worker", *args: str) -> Process:
    """A real Celery worker process (`gradectl worker`, two pool processes) grading in Docker."""
    require_or_skip(engine_answers(), "Docker engine")
    argv = [sys.executable, "-m", "cli.gradectl", "worker", "--queues", "cpu,webhooks"]
    # Two pool processes: the bank's self-tests at start-up do not hold every answer behind them.
    return Process(name, [*argv, "--concurrency", "2", *args], env, log_dir)


@pytest.fixture(scope="session")
def api_url(service_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    server, url = start_api(service_env, log_dir)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def worker(service_env: dict[str, str], api_url: str, log_dir: Path) -> Iterator[Process]:
    """Started after the API has migrated the database."""
    process = start_worker(service_env, log_dir)
    try:
        yield process
    finally:
        process.stop(grace_s=30.0)


@dataclass(frozen=True)
class Key:
    id: str
    key: str
    role: str
    course: str | None
    student_id: str | None
    webhook_secret: str


@pytest.fixture(scope="session")
def make_key(service_env: dict[str, str], api_url: str) -> Callable[..., Key]:
    """Create a key with `gradectl keys create`, the admin-free path an operator uses."""

    def make(role: str, course: str | None = None, student: str | None = None) -> Key:
        args = ["keys", "create", "--role", role, "--name", f"e2e {role}"]
        args += ["--course", course] if course else []
        args += ["--student", student] if student else []
        done = gradectl(*args, env=service_env)
        assert done.returncode == 0, done.stderr.decode()
        data = json.loads(done.stdout)
        return Key(
            data["id"],
            data["key"],
            data["role"],
            data["course"],
            data["student_id"],
            data["webhook_secret"],
        )

    return make


@pytest.fixture(scope="session")
def keys(make_key, service_env: dict[str, str]) -> dict[str, Key]:
    """One key per role the tests act as; `revoked` is revoked with `gradectl keys revoke`."""
    wanted = {
        "instructor_a": ("instructor", "course-a", None),
        "instructor_b": ("instructor", "course-b", None),
        "lms_a": ("lms", "course-a", None),
        "lms_b": ("lms", "course-b", None),
        "alice": ("student", "course-a", "alice"),
        "bob": ("student", "course-a", "bob"),
        "revoked": ("lms", "course-a", None),
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        made = dict(zip(wanted, pool.map(lambda w: make_key(*w), wanted.values()), strict=True))
    done = gradectl("keys", "revoke", made["revoked"].id, env=service_env)
    assert done.returncode == 0, done.stderr.decode()
    return made


@pytest.fixture(scope="session")
def admin_key() -> str:
    return ADMIN_KEY


@pytest.fixture(scope="session")
def client(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=60) as c:
        yield c


def auth(key: str | Key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.key if isinstance(key, Key) else key}"}


def wait_for(
    client: httpx.Client, path: str, key: str | Key, done: Callable[[dict], bool], timeout_s: float
) -> dict:
    """Poll a GET until `done(body)` holds; fail with the last body otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(path, headers=auth(key))
        assert response.status_code == 200, response.text
        body = response.json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not settle in {timeout_s} s: {body}")
        time.sleep(0.5)


def post_spec(client: httpx.Client, key: str | Key, spec_yaml: str, **params) -> httpx.Response:
    return client.post(
        "/v1/tasks",
        content=spec_yaml.encode(),
        params=params,
        headers={**auth(key), "Content-Type": "application/yaml"},
    )


def choice_spec(task_id: str, max_attempts: int | None = None) -> str:
    """A small multiple-choice spec: ready as soon as it is posted, graded without a sandbox."""
    limit = f"max_attempts: {max_attempts}\n" if max_attempts else ""
    return (
        f"id: {task_id}\nkind: choice\ntitle: Which call freezes a model?\ndifficulty: easy\n"
        f"prompt: Pick the call that freezes every parameter.\n{limit}"
        "options: {A: model.requires_grad_(False), B: model.eval(), C: model.freeze()}\n"
        "answer: A\nexplanation: requires_grad_(False) turns autograd off for every parameter.\n"
    )


def children_of(pid: int) -> set[int]:
    """The pids whose parent is `pid`, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found
