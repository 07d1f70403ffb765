"""A service stack whose dependencies the tests can break: a private Redis server they restart,
PostgreSQL and the Docker engine behind forwarders they cut, two grading workers they kill.

Nothing here touches the machine's own Redis, PostgreSQL cluster or Docker daemon: the
services reach PostgreSQL through a TCP forwarder on 127.0.0.1 and the engine through a
Unix-socket forwarder, and "PostgreSQL down" or "the engine fails" means the forwarder
refuses new connections and drops the live ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest
import redis
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from core.settings import PROJECT_ROOT
from sandbox.docker_backend import EXPIRES_LABEL
from services.queue import LISTS, REAP
from tests.conftest import gradectl, require_or_skip
from tests.e2e.conftest import (
    Key,
    Process,
    _free_port,
    auth,
    choice_spec,
    fresh_database,
    post_spec,
    start_api,
    start_worker,
    wait_for,
)

DOCKER_SOCKET = "/var/run/docker.sock"
CONTAINER_PATH = re.compile(rb"/containers/([0-9a-f]{64})/")
GRADE_WAIT_S = 150
CODE_TASK = "faults-freeze"
CHOICE_TASK = "faults-quiz"
CORRECT = "model.requires_grad_(False)\n"
SLEEPY = "import time\ntime.sleep(5)\nmodel.requires_grad_(False)\n"
WRONG = "for p in model.fc.parameters():\n    p.requires_grad = False\n"

FAULT_SETTINGS = {
    "GRADER_SANDBOX_BACKEND": "docker",
    "GRADER_LOAD_TASK_BANK": "false",
    "GRADER_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "GRADER_WEBHOOK_TIMEOUT_S": "1",
    "GRADER_WEBHOOK_MAX_ATTEMPTS": "3",
    "GRADER_WEBHOOK_BACKOFF_S": "0.5",
    "GRADER_GRADING_MAX_RETRIES": "3",
    "GRADER_REAPER_INTERVAL_S": "1",
    "GRADER_STUCK_GRACE_S": "4",
    "GRADER_WARM_MAX_IDLE_S": "20",
}


class Forwarder:
    """Forwards connections from a listening socket to an upstream one, until cut.

    `cut()` closes the listener (new connections are refused) and every live connection;
    `restore()` listens again at the same address. Half-closes are passed on, so a client
    that shuts its side after writing (a container's stdin) still reads the answer. Docker
    container ids seen in request paths are recorded, so a test knows which containers the
    stack made.
    """

    def __init__(self, listen: str | tuple[str, int], upstream: str | tuple[str, int]) -> None:
        self.listen, self.upstream = listen, upstream
        self.family = socket.AF_UNIX if isinstance(listen, str) else socket.AF_INET
        self.containers: set[str] = set()
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(self.family, socket.SOCK_STREAM)
        if self.family == socket.AF_UNIX:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.listen)
        else:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self.listen)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self.family == socket.AF_UNIX:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.listen)
        with self._lock:
            live, self._live = self._live, set()
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.socket(self.family, socket.SOCK_STREAM)
                upstream.connect(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._live |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        tail = b""
        try:
            while chunk := src.recv(65536):
                if from_client:
                    tail = tail[-80:] + chunk
                    self.containers |= {m.decode() for m in CONTAINER_PATH.findall(tail)}
                dst.sendall(chunk)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for conn in (src, dst):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class RedisServer:
    """A redis-server of the tests' own on a free port, without persistence: a restart loses
    every message, as a crashed broker without an append-only file would."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.popen: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.workdir)]
        log = (self.workdir / "redis.log").open("ab")
        self.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        for _ in range(100):
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.05)
        pytest.fail("the tests' redis-server did not start")

    def stop(self) -> None:
        if self.popen is not None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)
            self.popen = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


@dataclass
class Stack:
    """Everything a fault test drives: the API, two grading workers (the first runs the reaper),
    the forwarders, the private Redis, a direct database connection and the keys."""

    env: dict[str, str]
    api_url: str
    client: httpx.Client
    workers: list[Process]
    database: Forwarder
    engine: Forwarder
    broker: RedisServer
    db: Engine
    admin_key: str
    lms: Key
    log_dir: Path
    tmp_dir: Path
    marker: str
    extra: list[Process] = field(default_factory=list)

    def submit(self, key: Key | None = None, **body) -> dict:
        response = self.client.post("/v1/submissions", json=body, headers=auth(key or self.lms))
        assert response.status_code == 202, response.text
        return response.json()

    def result(self, submission_id: str, timeout_s: float = GRADE_WAIT_S) -> dict:
        return wait_for(
            self.client,
            f"/v1/submissions/{submission_id}",
            self.lms,
            lambda b: b["status"] == "completed",
            timeout_s,
        )

    def row(self, submission_id: str) -> dict:
        with self.db.connect() as conn:
            found = conn.execute(
                text("SELECT * FROM submissions WHERE id = :id"), {"id": submission_id}
            )
            return dict(found.mappings().one())

    def attempts_used(self, task_id: str, student_id: str) -> int:
        with self.db.connect() as conn:
            used = conn.execute(
                text("SELECT used FROM attempt_counters WHERE task_id = :t AND student_id = :s"),
                {"t": task_id, "s": student_id},
            ).scalar()
        return used or 0

    def check_alive(self) -> None:
        for process in self.workers:
            process.check_alive()


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """Started once per test process; stopped at the end, checking nothing of it lingers."""
    require_or_skip(
        subprocess.run(["redis-server", "--version"], capture_output=True).returncode == 0,
        "redis-server binary",
    )
    root = tmp_path_factory.mktemp("faults")
    log_dir, tmp_dir, data_dir = root / "logs", root / "tmp", root / "data"
    for folder in (log_dir, tmp_dir, data_dir):
        folder.mkdir()
    for name in ("torch_home", "expected"):  # the checkpoints and expected facts are shared
        (PROJECT_ROOT / "var" / name).mkdir(parents=True, exist_ok=True)
        (data_dir / name).symlink_to(PROJECT_ROOT / "var" / name)
    marker = uuid.uuid4().hex
    with contextlib.ExitStack() as cleanup:
        database_url = cleanup.enter_context(fresh_database("grader_faults"))
        pg_port = _free_port()
        database = Forwarder(("127.0.0.1", pg_port), ("127.0.0.1", 5432))
        cleanup.callback(database.cut)
        engine = Forwarder(str(root / "docker.sock"), DOCKER_SOCKET)
        cleanup.callback(engine.cut)
        broker = RedisServer(root)
        cleanup.callback(broker.stop)
        admin_key = "grk_faults_admin_" + uuid.uuid4().hex
        env = FAULT_SETTINGS | {
            "GRADER_DATABASE_URL": database_url.replace(":5432/", f":{pg_port}/"),
            "GRADER_REDIS_URL": broker.url,
            "GRADER_DATA_DIR": str(data_dir),
            "GRADER_BOOTSTRAP_ADMIN_KEY": admin_key,
            "GRADER_FAULTS_RUN": marker,
            "TMPDIR": str(tmp_dir),
        }
        api, api_url = start_api(env, log_dir)
        cleanup.callback(api.stop)
        worker_env = env | {"DOCKER_HOST": f"unix://{root / 'docker.sock'}"}
        workers = [
            start_worker(worker_env, log_dir, "worker-1", "--beat"),
            start_worker(worker_env, log_dir, "worker-2"),
        ]
        for process in workers:
            cleanup.callback(process.stop, 30.0)
        client = cleanup.enter_context(httpx.Client(base_url=api_url, timeout=60))
        made = gradectl("keys", "create", "--role", "lms", "--course", "faults", env=env)
        assert made.returncode == 0, made.stderr.decode()
        data = yaml.safe_load(made.stdout)
        lms = Key(data["id"], data["key"], "lms", "faults", None, data["webhook_secret"])
        db = create_engine(database_url)
        cleanup.callback(db.dispose)
        instance = Stack(
            env, api_url, client, workers, database, engine, broker, db, admin_key, lms,
            log_dir, tmp_dir, marker,
        )  # fmt: skip
        _post_tasks(instance)
        yield instance
        # After every fault test this worker ran on the stack, whichever ran last.
        _assert_left_clean(instance)
    _assert_nothing_lingers(marker, tmp_dir)


def _post_tasks(stack: Stack) -> None:
    """A copy of finetune-freeze with a short time limit and no known-wrong answers (a quick
    self-test), and a multiple-choice question; both in the stack's course."""
    spec = yaml.safe_load((PROJECT_ROOT / "taskbank/tasks/finetune-freeze.yaml").read_text())
    spec |= {"id": CODE_TASK, "known_wrong": [], "max_attempts": 3}
    spec["limits"] = {"time_limit_s": 20}
    for text_ in (yaml.safe_dump(spec, sort_keys=False), choice_spec(CHOICE_TASK, 3)):
        response = post_spec(stack.client, stack.admin_key, text_, course="faults")
        assert response.status_code == 202, response.text
    body = wait_for(
        stack.client,
        f"/v1/tasks/{CODE_TASK}",
        stack.admin_key,
        lambda b: b["status"] != "validating",
        GRADE_WAIT_S,
    )
    assert body["status"] == "ready", body


def _assert_nothing_lingers(marker: str, tmp_dir: Path) -> None:
    """After the stack stops: no process started with its marker, nothing in its temp dir."""
    stray = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if f"GRADER_FAULTS_RUN={marker}".encode() in (proc / "environ").read_bytes():
                stray.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:200]!r}")
    assert not stray, f"processes of the fault stack outlived it: {stray}"
    leftovers = sorted(p.name for p in tmp_dir.iterdir())
    assert not leftovers, f"temp files left by the fault stack: {leftovers}"


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    return _wait


# --- what the stack must leave behind after the faults: nothing -------------------------

SWEEP_ALLOWANCE_S = 15  # beyond a container's expiry and one reaper interval


def _unfinished(stack: Stack) -> list:
    with stack.db.connect() as conn:
        return conn.execute(
            text(
                "SELECT id, status FROM submissions WHERE status <> 'completed' "
                "UNION ALL SELECT id, status FROM webhook_deliveries WHERE status = 'pending'"
            )
        ).all()


def _job_messages(stack: Stack) -> list[str]:
    """Task names of every message waiting or unacknowledged, the reaper's own ticks excepted."""
    client = stack.broker.client()
    raw = [m for q in LISTS for m in client.lrange(q, 0, -1)]
    raw += [json.loads(v)[0] for v in client.hvals("unacked")] if client.exists("unacked") else []
    names = [(json.loads(m) if isinstance(m, bytes) else m)["headers"]["task"] for m in raw]
    return [name for name in names if name != REAP]


def _existing(engine: docker.APIClient, ids: set[str]) -> dict[str, float]:
    """The containers among `ids` that still exist, with the time their sweep may remove them."""
    found = {}
    for container in ids:
        try:
            labels = engine.inspect_container(container)["Config"]["Labels"] or {}
        except docker.errors.NotFound:
            continue
        found[container] = float(labels.get(EXPIRES_LABEL, "0"))
    return found


def _reaper_interval_s(stack: Stack) -> float:
    return float(stack.env.get("GRADER_REAPER_INTERVAL_S", "30"))


def _assert_left_clean(stack: Stack) -> None:
    """After the faults (killed workers, lost messages, cut connections): no unfinished row,
    no job message in Redis, no sandbox container (a reaper sweeps those of a killed
    worker). Run when the stack is torn down, so it holds whichever test ran last and
    however the tests were spread over pytest's workers."""
    _wait(lambda: not _unfinished(stack), 120, "every submission and webhook to settle")
    _wait(lambda: not _job_messages(stack), 60, "Redis to hold no job message")
    for process in stack.workers:
        process.stop(grace_s=30.0)
    assert _job_messages(stack) == []
    # Sandboxes of a killed pool process outlive it until their expiry; a reaper removes them.
    reaper = start_worker(stack.env | {"DOCKER_HOST": f"unix://{stack.engine.listen}"},
                          stack.log_dir, "reaper", "--beat")  # fmt: skip
    engine = docker.APIClient(version="auto")
    try:
        left = _existing(engine, stack.engine.containers)
        deadline = max(left.values(), default=0) + SWEEP_ALLOWANCE_S
        assert deadline - time.time() < 300, f"containers expiring too late: {left}"
        _wait(
            lambda: not _existing(engine, stack.engine.containers),
            max(deadline - time.time(), 0) + SWEEP_ALLOWANCE_S + _reaper_interval_s(stack),
            f"the reaper to remove the stack's sandbox containers {sorted(left)}",
        )
    finally:
        engine.close()
        reaper.stop(grace_s=30.0)
    assert stack.engine.containers, "the forwarder saw no container: the check proved nothing"
