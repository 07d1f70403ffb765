"""The Docker backend's one-job sandbox: a started container, blocked on reading its job,
that runs one job under a two-phase deadline and is then removed (see sandbox/docker_backend.py
for how its container is made, sandbox/fork_sandbox.py for the fast path's)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import docker
import docker.errors

from sandbox.base import Limits, RunRequest, RunResult
from sandbox.docker_engine import (
    ENGINE_ERRORS,
    ENGINE_TIMEOUT_S,
    EXPIRY_GRACE_S,
    Demux,
    close_attached,
    engine_call,
    raw_socket,
)
from sandbox.errors import SandboxError
from sandbox.streams import pump, wait_two_phase


class DockerSandbox:
    """One started container, blocked on reading its job: it runs one job, then is removed."""

    def __init__(self, client: docker.APIClient, container: str, limits: Limits) -> None:
        self.client = client
        self.container = container
        self.limits = limits
        self.started_at = time.monotonic()
        self.attached = None
        self.used = False

    def reusable(self) -> bool:
        """A one-job container is removed after its job."""
        return False

    def alive(self) -> bool:
        """True while the container runs: one that died waiting must not be handed a job."""
        try:
            return bool(self.client.inspect_container(self.container)["State"].get("Running"))
        except ENGINE_ERRORS:
            return False

    def run(self, request: RunRequest) -> RunResult:
        if self.used or request.limits != self.limits:
            raise SandboxError("a sandbox runs one job, under the limits it was started with")
        self.used = True
        sock = raw_socket(self.attached)
        try:
            return self._supervise(sock, request, time.monotonic())
        finally:
            self.discard()

    def discard(self) -> None:
        """Close the attach stream and remove the container, whatever state it is in."""
        attached, self.attached = self.attached, None
        if attached is not None:
            close_attached(attached)
        with (
            engine_call("removing the sandbox container"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self.client.remove_container(self.container, force=True)

    def _supervise(self, sock: socket.socket, request: RunRequest, started: float) -> RunResult:
        container = self.container
        limits = request.limits
        demux = Demux(sock, limits.max_log_bytes)
        out = bytearray()
        overflow, ready, exited = threading.Event(), threading.Event(), threading.Event()

        def kill() -> None:
            with contextlib.suppress(*ENGINE_ERRORS):
                self.client.kill(container)

        def kill_from_reader() -> None:
            # The engine finishes a kill only once the container's output is drained, and
            # the reader is what drains it: it must not wait for the kill itself.
            threading.Thread(target=kill, daemon=True).start()

        def feed_stdin() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(request.stdin)
                sock.shutdown(socket.SHUT_WR)

        def wait_exit() -> None:
            with contextlib.suppress(*ENGINE_ERRORS):
                self.client.wait(
                    container, timeout=limits.startup_timeout_s + limits.timeout_s + EXPIRY_GRACE_S
                )
            exited.set()

        reader = threading.Thread(
            target=pump,
            args=(
                demux.read,
                limits.max_channel_bytes,
                out,
                overflow,
                kill_from_reader,
                request.ready_marker,
                ready,
            ),
            daemon=True,
        )
        threads = [
            reader,
            threading.Thread(target=feed_stdin, daemon=True),
            threading.Thread(target=wait_exit, daemon=True),
        ]
        for thread in threads:
            thread.start()
        if not request.ready_marker:
            ready.set()
        timed_out = wait_two_phase(exited.is_set, ready, limits)
        if timed_out:
            kill()
        exited.wait(timeout=ENGINE_TIMEOUT_S)
        reader.join(timeout=5)
        duration = time.monotonic() - started
        return self._stopped_result(out, demux.stderr, duration, timed_out, overflow.is_set())

    def _stopped_result(
        self, out: bytearray, err: bytearray, duration: float, timed_out: bool, overflow: bool
    ) -> RunResult:
        """The result of a run whose container has stopped: exit code and OOM from the engine."""
        with engine_call("inspecting the stopped sandbox container"):
            state = self.client.inspect_container(self.container)["State"]
        if state.get("Running"):
            raise SandboxError(f"sandbox container {self.container[:12]} did not stop after a kill")
        return RunResult(
            exit_code=state.get("ExitCode"),
            stdout=bytes(out),
            stderr=bytes(err),
            duration_s=duration,
            timed_out=timed_out,
            oom_killed=bool(state.get("OOMKilled")),
            channel_overflow=overflow,
        )
