"""A backend that runs nothing: a handler says what the sandbox would have seen.

For application and judge tests that need a run's outcome, not a sandbox (as httpx's
`MockTransport` stands in for a network). The handler gets the job the service built (its
nonce, code and checks) and returns the bytes the harness would write on stdout (a facts
frame: see `frame`), or a `RunResult` for a run a limit stopped or that crashed
(`timed_out`, `out_of_memory`, `crashed`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from safetensors.numpy import save as save_tensors

from contract.job import Job, frame_header
from sandbox.base import RunRequest, RunResult

Handler = Callable[[Job], bytes | RunResult]
KILLED_EXIT = 137  # what an engine reports for a container it killed (128 + SIGKILL)


def frame(
    nonce: str, manifest: Mapping[str, Any], tensors: Mapping[str, np.ndarray] | None = None
) -> bytes:
    """The frame the harness writes for the job with `nonce`.

    `manifest`'s fields go over those of a run that went well and printed nothing (give
    at least `observations`, by check name); `stdout_bytes` and `stderr_bytes` follow the
    `stdout` and `stderr` given unless set too. `tensors` are keyed `check/name`.
    """
    fields: dict[str, Any] = {
        "schema_version": 1,
        "status": "ok",
        "error": None,
        "notes": [],
        "stdout": "",
        "stderr": "",
        "observations": {},
        "timings": {},
        "device": "cpu",
        **manifest,
    }
    for stream in ("stdout", "stderr"):
        fields.setdefault(f"{stream}_bytes", len(fields[stream].encode()))
    body = json.dumps(fields).encode()
    blob = save_tensors(dict(tensors)) if tensors else b""
    return frame_header(nonce, len(body), len(blob)) + body + blob


def timed_out(duration_s: float = 0.0) -> RunResult:
    """A run stopped at its deadline: the backend killed it, no facts are read."""
    return RunResult(KILLED_EXIT, b"", b"", duration_s, timed_out=True)


def out_of_memory(duration_s: float = 0.0) -> RunResult:
    """A run the kernel killed for passing its memory limit."""
    return RunResult(KILLED_EXIT, b"", b"", duration_s, oom_killed=True)


def crashed(exit_code: int = 1, stderr: bytes = b"", duration_s: float = 0.0) -> RunResult:
    """A run that ended without writing a frame (the process died, or exited early)."""
    return RunResult(exit_code, b"", stderr, duration_s)


class FakeBackend:
    """A `SandboxBackend` whose runs are what `handler(job)` returns. `requests` keeps what
    it was asked to run, in order."""

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "fake",
        isolated: bool = True,
        gpu_available: bool = False,
    ) -> None:
        self.handler = handler
        self.name = name
        self.isolated = isolated
        self.gpu_available = gpu_available
        self.requests: list[RunRequest] = []

    def describe(self) -> str:
        return "fake backend: runs nothing, each run's output comes from a test's handler"

    def run(self, request: RunRequest) -> RunResult:
        """The handler's result; bytes are the harness's stdout after the job's ready marker,
        capped by the channel's limit (past it, killed) as a real backend caps them."""
        self.requests.append(request)
        outcome = self.handler(Job.model_validate_json(request.stdin))
        if isinstance(outcome, RunResult):
            return outcome
        stdout = request.ready_marker + bytes(outcome)
        cap = request.limits.max_channel_bytes
        overflow = len(stdout) > cap
        return RunResult(
            exit_code=KILLED_EXIT if overflow else 0,
            stdout=stdout[:cap],
            stderr=b"",
            duration_s=0.0,
            channel_overflow=overflow,
        )
