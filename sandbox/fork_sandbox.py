"""The fast path, host side: one warm container that runs many jobs through its fork server.

The container runs `sandboxed.fork_server` (see there for what happens inside). The host
keeps the attach stream open and, per job, writes `JOB <length> <token> <shared length>`,
the setup it may share (`RunRequest.shared_setup`) and the job, then reads the job's
output up to the end line that carries the token, which only the server learns, after
the job's child was forked. The job's answer clock starts at the harness's ready marker,
as in a one-job sandbox. Both lines' format is contract/fork_wire.py's, which the server
uses too.

The container is removed, and a fresh one started by the pool, after its last job and
after any job that hit a limit or did not end cleanly: a deadline (the container is
killed), an output overflow (killed too), an out-of-memory kill, a child killed by a
signal, or anything left behind that the server could not remove (a process of the
job's uid, a file, a System V IPC object or POSIX queue that was not there before). The
security argument and the trade-off are in docs/sandbox.md.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

import docker

from contract.fork_wire import end_prefix, new_token, parse_end_fields, request_header
from sandbox.base import Limits, RunRequest, RunResult
from sandbox.docker_engine import ENGINE_ERRORS, ENGINE_TIMEOUT_S, Demux, raw_socket
from sandbox.docker_sandbox import DockerSandbox
from sandbox.errors import SandboxError
from sandbox.streams import pump_until, wait_two_phase


class DockerForkSandbox(DockerSandbox):
    """A started fork-server container: runs up to `jobs` jobs, one at a time."""

    def __init__(self, client: docker.APIClient, container: str, limits: Limits, jobs: int):
        super().__init__(client, container, limits)
        self.jobs_left = jobs
        self.healthy = True
        self.demux: Demux | None = None

    def reusable(self) -> bool:
        """True while the server may take another job: nothing went wrong and jobs remain."""
        return self.healthy and self.jobs_left > 0 and self.attached is not None

    def alive(self) -> bool:
        """Between jobs the server only waits for the next request, so its attach stream has
        nothing to read while the container runs; a container that stopped closes it. The
        engine is asked only before the first job, or when the stream has something to say."""
        if not self.healthy:
            return False
        if self.demux is not None and self.attached is not None:
            sock = raw_socket(self.attached)
            with contextlib.suppress(OSError, ValueError):
                if not select.select([sock], [], [], 0)[0]:
                    return True
        return super().alive()

    def run(self, request: RunRequest) -> RunResult:
        if not self.reusable() or request.limits != self.limits:
            raise SandboxError("this sandbox cannot take another job under these limits")
        self.jobs_left -= 1
        sock = raw_socket(self.attached)
        if self.demux is None:
            self.demux = Demux(sock, request.limits.max_log_bytes)
        self.demux.stderr = bytearray()
        try:
            result, fields = self._supervise_job(sock, request)
        except BaseException:
            self.healthy = False
            self.discard()
            raise
        if fields.get("recycle", 1) or not fields.get("clean", 0):
            self.healthy = False
        if not self.reusable():
            self.discard()
        if fields.get("lost"):
            raise SandboxError("the fork server lost the job's parent process (a zygote) mid-job")
        return result

    def _supervise_job(
        self, sock: socket.socket, request: RunRequest
    ) -> tuple[RunResult, dict[str, int]]:
        limits = request.limits
        token = new_token()
        out = bytearray()
        overflow, ready, ended = threading.Event(), threading.Event(), threading.Event()
        trailer: list[bytes | None] = [None]
        demux = self.demux
        assert demux is not None

        def kill() -> None:
            with contextlib.suppress(*ENGINE_ERRORS):
                self.client.kill(self.container)

        def read_job() -> None:
            try:
                trailer[0] = pump_until(
                    demux.read, limits.max_channel_bytes, out, overflow,
                    lambda: threading.Thread(target=kill, daemon=True).start(),
                    request.ready_marker, ready, end_prefix(token),
                )  # fmt: skip
            finally:
                ended.set()

        started = time.monotonic()
        reader = threading.Thread(target=read_job, daemon=True)
        reader.start()
        try:
            header = request_header(len(request.stdin), token, len(request.shared_setup))
            sock.sendall(header + request.shared_setup + request.stdin)
        except OSError as exc:
            kill()
            reader.join(timeout=ENGINE_TIMEOUT_S)
            raise SandboxError(f"could not send the job to the sandbox: {exc}") from exc
        if not request.ready_marker:
            ready.set()
        timed_out = wait_two_phase(ended.is_set, ready, limits)
        if timed_out:
            kill()
        reader.join(timeout=ENGINE_TIMEOUT_S)
        duration = time.monotonic() - started
        fields = parse_end_fields(trailer[0]) if trailer[0] is not None else {}
        if not fields:  # no end line: the container was killed or its server died
            with contextlib.suppress(*ENGINE_ERRORS):
                self.client.wait(self.container, timeout=ENGINE_TIMEOUT_S)
            stopped = self._stopped_result(
                out, demux.stderr, duration, timed_out, overflow.is_set()
            )
            if not (stopped.timed_out or stopped.channel_overflow or stopped.oom_killed):
                # Not a limit the answer hit: the job's child runs under a uid of its own and
                # cannot stop the server, so the engine, the host or an operator stopped the
                # container. Ours to retry, never the answer's runtime error.
                raise SandboxError(
                    f"the sandbox container {self.container[:12]} stopped mid-job "
                    f"(exit status {stopped.exit_code}), not by the answer's doing"
                )
            return stopped, {}
        return (
            RunResult(
                exit_code=fields.get("exit"),
                stdout=bytes(out),
                stderr=bytes(demux.stderr),
                duration_s=duration,
                timed_out=False,
                oom_killed=bool(fields.get("oom")),
                channel_overflow=False,
            ),
            fields,
        )
