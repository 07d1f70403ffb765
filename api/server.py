"""Runs the API's processes: each listens on the port with a socket of its own
(SO_REUSEPORT), so the kernel spreads new connections evenly among them.

With one socket shared by all processes (uvicorn's own `--workers`), the process that
wakes first accepts every connection waiting: 50 keep-alive clients connecting at once
ended 40 on one process and 10 on the other, and the busy process's clients waited twice
as long as the idle one's. Each process here has its own accept queue, and the kernel
hashes each connection to one of them.

A process that dies is started again; SIGTERM or SIGINT stops them all (each finishes the
requests it has in flight, as uvicorn does).

Every connection the server closes is closed the lingering way (`LingeringHttpProtocol`), and
a request's headers must arrive within `GRADER_REQUEST_BODY_TIMEOUT_S` of its first byte (or
of the connection, for its first request), else 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import signal
import socket
import sys
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.settings import get_settings

log = logging.getLogger("grader.api")
STOP_GRACE_S = 30.0
BACKLOG = 2048
RESTART_AFTER_S = 10.0  # a process that lived this long is started again at once
LINGER_S = 2.0


class _LingeringTransport:
    """The connection's transport, but `close()` sends FIN, goes on reading (the protocol
    throws it away) and closes for good when the client closes its side or `LINGER_S` later."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop, self._closing = transport, loop, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._transport.can_write_eof():
            return self._transport.close()
        self._transport.write_eof()  # after what is buffered, the answer
        self._transport.resume_reading()
        self._loop.call_later(LINGER_S, self._transport.close)


class LingeringHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a lingering close (as Apache and nginx do it) and a bound
    on the time a request's headers take.

    A server that closes while the client is still sending (a 408 cut a slow body short, a
    body over the limit) has unread bytes in its socket, and the kernel answers them with a
    reset, which can destroy the answer before the client reads it. Here the client gets FIN
    after the answer, reads it, and what it still sends is read and thrown away.

    uvicorn bounds the idle time between requests (`timeout_keep_alive`) but not the time a
    request's headers take once a byte of them came, nor a new connection's wait for its
    first byte: a client sending its headers a byte at a time held a connection open for
    ever. Here a timer starts with the connection and with each request's first byte; the
    headers complete in time, or the client gets 408 and the connection is closed. A timer in
    the event loop: a slow client holds a socket, never a thread."""

    header_timeout_s: float | None = None  # None: the settings' request_body_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(_LingeringTransport(transport, self.loop))  # type: ignore[arg-type]
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if not self.transport.is_closing():
            super().data_received(data)

    def eof_received(self) -> None:
        if self.transport.is_closing():  # lingering, and the client is done: close now
            self.transport._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def _await_headers(self) -> None:
        if self._header_timer is None:
            timeout_s = self.header_timeout_s or get_settings().request_body_timeout_s
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow, timeout_s)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self, timeout_s: float) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a pipelined request's: close after the answer
            self.flow.pause_reading()
            return
        body = json.dumps({
            "error": {
                "code": "request_timeout",
                "message": f"the request headers must arrive within {timeout_s:g} s",
            }
        }).encode()  # fmt: skip
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()


def listening_socket(host: str, port: int, shared: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _process(host: str, port: int, options: dict[str, Any]) -> None:
    sock = listening_socket(host, port, shared=True)
    sock.listen(BACKLOG)
    config = uvicorn.Config(
        "api.main:create_app", factory=True, http=LingeringHttpProtocol, **options
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve(host: str, port: int, processes: int, **options: Any) -> int:
    """Serve on host:port with `processes` API processes until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    try:  # a port another program holds is an error, not a port silently shared with it
        listening_socket(host, port, shared=False).close()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return 1
    context = multiprocessing.get_context("spawn")

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_process, args=(host, port, options), daemon=False)
        process.start()
        return process

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    running = [start() for _ in range(processes)]
    started = [time.monotonic()] * processes
    log.info("API on http://%s:%d in %d processes %s", host, port, processes,
             [p.pid for p in running])  # fmt: skip
    delays, due = [0.5] * processes, [None] * processes
    while not stopping:
        now = time.monotonic()
        for i, process in enumerate(running):
            if process.is_alive():
                continue
            if due[i] is None:  # one that fails at start (no database) waits longer each time
                lived = now - started[i]
                delays[i] = 0.5 if lived > RESTART_AFTER_S else min(delays[i] * 2, 30.0)
                due[i] = now + delays[i]
                log.warning("API process %s ended (%s) after %.0f s; another in %.1f s",
                            process.pid, process.exitcode, lived, delays[i])  # fmt: skip
            elif now >= due[i]:
                running[i], started[i], due[i] = start(), now, None
        time.sleep(0.2)
    for process in running:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for process in running:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    sys.stdout.flush()
    return 0
