"""The contract every sandbox backend implements, the values that cross it, and what every
sandbox gets whichever backend starts it (its paths, its uid, its environment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

MIB = 1024 * 1024
# Where an isolating backend puts the packages that run inside the sandbox and the stand-in
# checkpoints, and the uid the harness runs as there (a fork server gives each job a uid of
# its own instead). A sandbox holds the contract and the in-sandbox code, never the host's
# packages (the judge, the services), and never the rest of the project.
SANDBOX_LIB = "/sandbox/lib"
SANDBOX_PACKAGES = ("contract", "sandboxed")
HARNESS_MODULE = "sandboxed.harness"
FORK_SERVER_MODULE = "sandboxed.fork_server"
SANDBOX_TORCH_HOME = "/sandbox/torch_home"
NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    """Everything one run may use. Units live in the names."""

    timeout_s: float = 60.0  # the answer's own time, counted from the harness's ready marker
    startup_timeout_s: float = 90.0  # interpreter start, imports and the task's setup
    memory_bytes: int = 3 * 1024 * MIB
    cpus: float = 1.0
    pids: int = 256
    max_channel_bytes: int = 80 * MIB
    max_log_bytes: int = 256 * 1024
    scratch_bytes: int = 256 * MIB
    scratch_inodes: int = 4096
    file_size_bytes: int = 64 * MIB
    open_files: int = 256
    gpu: bool = False


@dataclass(frozen=True)
class RunRequest:
    stdin: bytes
    limits: Limits
    ready_marker: bytes = b""  # seen on stdout when the answer starts: its clock starts then
    # The job's setup, seed and device (JSON) when its setup is code the service ships: a
    # fork server may run it once and fork the job from it (sandboxed/fork_server.py). Sent
    # apart from the job, so that what runs it never holds an answer. Others ignore it.
    shared_setup: bytes = b""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    """What the backend saw. `stdout` is the harness's channel, capped; `stderr` is for logs."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    duration_s: float
    timed_out: bool = False
    oom_killed: bool = False
    channel_overflow: bool = False
    notes: list[str] = field(default_factory=list)


def harness_env(limits: Limits, *, pythonpath: str, torch_home: str, tmpdir: str) -> dict[str, str]:
    """The whole environment a sandbox gets: an allow-list, never the service's own."""
    threads = str(max(1, int(limits.cpus)))
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": tmpdir,
        "TMPDIR": tmpdir,
        "LANG": "C.UTF-8",
        "PYTHONPATH": pythonpath,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONNOUSERSITE": "1",
        "TORCH_HOME": torch_home,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        # torch backs allocations of 2 MiB and more with huge pages (madvise): a job's
        # model and checkpoint cost a tenth of the page faults, and its exit less to unmap
        "THP_MEM_ALLOC_ENABLE": "1",
    }


class SandboxBackend(Protocol):
    name: str
    isolated: bool  # False for development backends that are weaker than a container
    gpu_available: bool

    def run(self, request: RunRequest) -> RunResult: ...

    def describe(self) -> str:
        """One line for logs, `gradectl` and health reports, saying how strong the isolation is."""
        ...


class Sandbox(Protocol):
    """A started sandbox blocked on reading its job, limits applied.

    Most run one job and are removed; a fork server (the fast path) runs several, one
    at a time, each in a fresh child, while `reusable()` says it may take another.
    """

    limits: Limits
    started_at: float  # time.monotonic() when it was started

    def alive(self) -> bool: ...

    def reusable(self) -> bool:
        """True when it may run another job: never for a one-job sandbox."""
        ...

    def run(self, request: RunRequest) -> RunResult:
        """Write the job and supervise it to the end; remove the sandbox unless reusable."""
        ...

    def discard(self) -> None:
        """Remove the sandbox and everything it started, job or not."""
        ...


class StartableBackend(SandboxBackend, Protocol):
    """A backend that can start a sandbox before its job exists, so a pool can keep it warm."""

    def start(
        self,
        limits: Limits,
        *,
        labels: dict[str, str] | None = None,
        idle_s: float = 0.0,
        jobs: int = 1,
    ) -> Sandbox:
        """`jobs` above 1 asks for a fork server; a backend without one starts a one-job sandbox."""
        ...
