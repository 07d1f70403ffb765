"""Clients that break the rules of a request still get their answer, from raw sockets: a body
far over the limit sent whole without `Expect: 100-continue` reads its 413 (not a reset), and
a body trickled a byte at a time is cut off with a 408 after the configured time, while the
API goes on answering everyone else; so are headers trickled a byte at a time, and a
connection that never sends a byte."""

from __future__ import annotations

import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from core.settings import PROJECT_ROOT
from tests.e2e.conftest import fresh_database, start_api
from tests.faults.conftest import RedisServer

pytestmark = [pytest.mark.postgres]

BODY_TIMEOUT_S = 2.0
SLOW_CLIENTS = 48  # more than the 40 threads of the API's pool for its routes
MAX_REQUEST_BYTES = 262144
ADMIN_KEY = "grk_limits_admin_" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """An API of its own (no worker: nothing here is graded) with a short body timeout."""
    root = tmp_path_factory.mktemp("limits")
    broker = RedisServer(root)
    try:
        with fresh_database("grader_limits") as database:
            env = {
                "GRADER_DATABASE_URL": database, "GRADER_REDIS_URL": broker.url,
                "GRADER_SANDBOX_BACKEND": "process", "GRADER_LOAD_TASK_BANK": "false",
                "GRADER_DATA_DIR": str(PROJECT_ROOT / "var"),
                "GRADER_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
                "GRADER_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
                "GRADER_REQUEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
            }  # fmt: skip
            server, url = start_api(env, root, "api-limits")
            try:
                where = urlsplit(url)
                yield where.hostname, where.port
            finally:
                server.stop()
    finally:
        broker.stop()


def _head(host: str, length: int, *extra: str) -> bytes:
    lines = [
        "POST /v1/submissions HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
        f"Authorization: Bearer {ADMIN_KEY}", f"Content-Length: {length}", *extra, "", "",
    ]  # fmt: skip
    return "\r\n".join(lines).encode()


def _read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict, bytes]:
    """Status, headers and body of one response; the server must close after it."""
    sock.settimeout(timeout_s)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def test_a_whole_oversized_body_sent_without_expect_reads_its_413(api):
    host, port = api
    body = b'{"task_id": "t", "student_id": "s", "code": "' + b"#" * 14_000_000 + b'"}'
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(_head(host, len(body)) + body)  # a reset would raise here or below
        status, headers, answer = _read_response(sock, 30)
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(answer)["error"]["code"] == "too_large"


def test_an_oversized_body_announced_with_expect_is_refused_before_it_is_sent(api):
    host, port = api
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(_head(host, 14_000_000, "Expect: 100-continue"))
        status, headers, answer = _read_response(sock, 10)
    assert status == 413  # and no `100 Continue` before it
    assert json.loads(answer)["error"]["code"] == "too_large"


def _trickle(host: str, port: int, give_up_s: float) -> tuple[float, int, bytes]:
    """Send a 1,000-byte body one byte every 0.1 s, reading between bytes; return when the
    server answers: seconds taken, status, body."""
    with socket.create_connection((host, port), timeout=give_up_s) as sock:
        sock.sendall(_head(host, 1000))
        started, data = time.monotonic(), b""
        while time.monotonic() - started < give_up_s:
            if select.select([sock], [], [], 0.1)[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            elif not data:
                sock.sendall(b" ")
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1]) if head else 0
        return time.monotonic() - started, status, body


def _others_are_answered(host: str, port: int) -> None:
    """Five requests of a fast client, each answered within a second meanwhile."""
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as client:
        for _ in range(5):
            started = time.monotonic()
            listed = client.get("/v1/tasks", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert listed.status_code == 200, listed.text
            assert time.monotonic() - started < 1.0


def test_a_trickled_body_is_cut_off_with_408_while_others_are_answered(api):
    host, port = api
    with ThreadPoolExecutor(max_workers=SLOW_CLIENTS) as pool:
        slow = [pool.submit(_trickle, host, port, BODY_TIMEOUT_S + 20) for _ in range(SLOW_CLIENTS)]
        time.sleep(BODY_TIMEOUT_S / 2)  # every slow client is mid-body now
        _others_are_answered(host, port)
        for future in slow:
            took_s, status, body = future.result()
            assert status == 408, body
            assert json.loads(body)["error"]["code"] == "request_timeout"
            assert BODY_TIMEOUT_S - 0.1 <= took_s < BODY_TIMEOUT_S + 3
    assert httpx.get(f"http://{host}:{port}/healthz", timeout=10).status_code == 200


def _trickle_head(host: str, port: int, give_up_s: float, every_s: float = 0.05) -> tuple:
    """Send a request's headers one byte every `every_s` s and never finish them; return when
    the server answers or closes: seconds taken, bytes sent, what came back."""
    head = _head(host, 2)[:-2] + b"X-Padding: " + b"a" * 10_000
    with socket.create_connection((host, port), timeout=give_up_s) as sock:
        started, data, sent = time.monotonic(), b"", 0
        while time.monotonic() - started < give_up_s and sent < len(head):
            if select.select([sock], [], [], every_s)[0]:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
            elif not data:
                sock.sendall(head[sent : sent + 1])
                sent += 1
        return time.monotonic() - started, sent, data


def test_trickled_headers_are_cut_off_with_408_while_others_are_answered(api):
    host, port = api
    with ThreadPoolExecutor(max_workers=SLOW_CLIENTS) as pool:
        slow = [
            pool.submit(_trickle_head, host, port, BODY_TIMEOUT_S + 20) for _ in range(SLOW_CLIENTS)
        ]  # fmt: skip
        time.sleep(BODY_TIMEOUT_S / 2)  # every slow client is mid-headers now
        _others_are_answered(host, port)
        for future in slow:
            took_s, sent, data = future.result()
            assert sent > 10  # it was mid-headers, not refused at once
            assert BODY_TIMEOUT_S - 0.1 <= took_s < BODY_TIMEOUT_S + 3, (took_s, data)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.split()[1] == b"408", data
            assert b"connection: close" in head.lower()
            assert json.loads(body)["error"]["code"] == "request_timeout"
    assert httpx.get(f"http://{host}:{port}/healthz", timeout=10).status_code == 200


def test_a_connection_that_sends_nothing_is_closed_after_the_bound(api):
    host, port = api
    with socket.create_connection((host, port), timeout=BODY_TIMEOUT_S + 20) as sock:
        started = time.monotonic()
        status, _, body = _read_response(sock, BODY_TIMEOUT_S + 20)
        took_s = time.monotonic() - started
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert BODY_TIMEOUT_S - 0.1 <= took_s < BODY_TIMEOUT_S + 3
