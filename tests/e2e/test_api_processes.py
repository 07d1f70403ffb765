"""`gradectl serve --workers N`: N API processes, each listening on the port with a socket of
its own; one that dies is replaced, SIGTERM stops them all, a port held by another
program is refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.settings import PROJECT_ROOT
from tests.e2e.conftest import children_of, start_api


def _listening_on(port: int) -> set[int]:
    """Pids that hold a listening socket on 127.0.0.1:port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def _wait(condition, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.2)


def test_processes_listen_each_on_the_port_and_one_that_dies_is_replaced(service_env, log_dir):
    server, url = start_api(service_env, log_dir, "api-processes", "--workers", "2")
    port = int(url.rsplit(":", 1)[1])
    try:
        _wait(lambda: len(_listening_on(port)) == 2)
        listening = _listening_on(port)
        assert listening <= children_of(server.popen.pid)  # not the supervisor itself
        with httpx.Client(base_url=url, timeout=30) as client:
            assert all(client.get("/healthz").status_code == 200 for _ in range(20))
        lost = min(listening)
        os.kill(lost, signal.SIGKILL)
        _wait(lambda: len(_listening_on(port)) == 2 and lost not in _listening_on(port))
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
        workers = _listening_on(port)
        os.kill(server.popen.pid, signal.SIGTERM)  # the supervisor alone: it stops the rest
        assert server.popen.wait(timeout=60) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        server.stop()


def test_a_port_another_program_holds_is_refused(service_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "cli.gradectl", "serve", "--port", str(port), "--workers", "2"],
            cwd=PROJECT_ROOT, env={**os.environ, **service_env}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
