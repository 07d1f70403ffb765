"""The process backend: a child process with rlimits, for development and engine-less machines.

Weaker than a container, and it says so (`isolated = False`). What it does:

- rlimits: CPU seconds, data segment (memory), file size, open files, processes, no core;
- its own session, killed as a whole process group at the wall-clock deadline;
- an allow-listed environment and a private scratch directory, removed afterwards;
- a pids cgroup of its own where the host allows one (root on cgroup v1): a process and
  thread cap, and a list of everything the job started, all killed when it ends;
- with bubblewrap (when installed): new user, pid, network, ipc and uts namespaces, the
  answer running as uid 65534 with no capabilities; a filesystem holding only the Python
  runtime, the harness package and the stand-in checkpoints, read-only, plus a
  size-capped tmpfs; the pid namespace dies with its first process, taking every
  daemon the answer started with it.

Without bubblewrap the child sees the host's filesystem and network: use it only for
trusted development.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sandbox.base import (
    HARNESS_MODULE,
    MIB,
    NOBODY,
    SANDBOX_LIB,
    SANDBOX_PACKAGES,
    SANDBOX_TORCH_HOME,
    Limits,
    RunRequest,
    RunResult,
    harness_env,
)
from sandbox.cgroup import PidsCgroup
from sandbox.errors import SandboxError
from sandbox.streams import pump, wait_two_phase


class ProcessBackend:
    name = "process"
    isolated = False
    gpu_available = False

    def __init__(
        self, *, project_root: Path, torch_home: Path, use_bwrap: bool | None = None
    ) -> None:
        self.project_root = project_root
        self.torch_home = torch_home
        self.bwrap = shutil.which("bwrap") if use_bwrap is not False else None
        if use_bwrap and not self.bwrap:
            raise SandboxError("bubblewrap was requested but `bwrap` is not installed")

    def describe(self) -> str:
        if self.bwrap:
            return (
                "process backend with bubblewrap namespaces (no network, private filesystem, rlimits): "
                "weaker than the Docker sandbox (no cgroup memory or pid limits, shared kernel uid)"
            )
        return (
            "process backend WITHOUT namespaces (rlimits and a private temp dir only; the answer can "
            "read the host's files and reach its network): for trusted development only"
        )

    def _command(self, scratch: str, limits: Limits) -> tuple[list[str], dict[str, str], str]:
        python = [sys.executable, "-B", "-m", HARNESS_MODULE]
        if not self.bwrap:
            env = harness_env(
                limits,
                pythonpath=str(self.project_root),
                torch_home=str(self.torch_home),
                tmpdir=scratch,
            )
            return python, env, scratch
        runtime = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
        cmd = [
            self.bwrap, "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY),
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
            "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
            "--proc", "/proc", "--dev", "/dev",
            # bwrap's /dev is an uncapped tmpfs: keep it read-only, with Docker's 64 MiB /dev/shm
            "--size", str(64 * MIB), "--perms", "1777", "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            # /tmp before the runtime: a checkout (and its .venv) may itself live under /tmp
            "--size", str(limits.scratch_bytes), "--perms", "1777", "--tmpfs", "/tmp",
        ]  # fmt: skip
        for path in sorted(runtime):
            cmd += ["--ro-bind", str(path), str(path)]
        for package in SANDBOX_PACKAGES:
            cmd += ["--ro-bind", str(self.project_root / package), f"{SANDBOX_LIB}/{package}"]
        cmd += [
            "--ro-bind", str(self.torch_home), SANDBOX_TORCH_HOME,
            "--remount-ro", "/",  # bwrap's root is an uncapped tmpfs: only /tmp may be written
            "--chdir", "/tmp",
        ]  # fmt: skip
        env = harness_env(
            limits, pythonpath=SANDBOX_LIB, torch_home=SANDBOX_TORCH_HOME, tmpdir="/tmp"
        )
        return cmd + ["--", *python], env, "/tmp"

    def run(self, request: RunRequest) -> RunResult:
        return self.start(request.limits).run(request)

    def start(
        self,
        limits: Limits,
        *,
        labels: dict[str, str] | None = None,
        idle_s: float = 0.0,
        jobs: int = 1,
    ) -> ProcessSandbox:
        """A started harness blocked on reading its job, under every limit of the run.

        Labels and `idle_s` matter to engines that sweep what they started; a process
        sandbox dies with the pipe to its owner. It always runs one job: the fork-server
        fast path (`jobs`) is the Docker backend's.
        """
        scratch = tempfile.mkdtemp(prefix="grader-sandbox-")
        os.chmod(scratch, 0o1777)
        cmd, env, _ = self._command(scratch, limits)
        cgroup = PidsCgroup.create(limits.pids)

        def apply_limits() -> None:
            cpu = int(limits.timeout_s + limits.startup_timeout_s) + 5
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
            resource.setrlimit(
                resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes)
            )
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.pids, limits.pids))
            if cgroup is not None:
                cgroup.join()

        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=scratch, env=env, start_new_session=True, preexec_fn=apply_limits, close_fds=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            if cgroup is not None:
                cgroup.destroy()
            raise SandboxError(f"could not start the sandbox process: {exc}") from exc
        notes = [] if self.bwrap else ["process backend without namespaces: not isolated"]
        return ProcessSandbox(proc, scratch, cgroup, limits, notes)


class ProcessSandbox:
    """One started harness process, blocked on reading its job: it runs one job, then is gone."""

    def __init__(
        self,
        proc: subprocess.Popen,
        scratch: str,
        cgroup: PidsCgroup | None,
        limits: Limits,
        notes: list[str],
    ) -> None:
        self.proc = proc
        self.scratch = scratch
        self.cgroup = cgroup
        self.limits = limits
        self.notes = notes
        self.started_at = time.monotonic()
        self.used = False

    def reusable(self) -> bool:
        return False

    def alive(self) -> bool:
        """True while the harness runs: one that died waiting must not be handed a job."""
        return self.proc.poll() is None

    def discard(self) -> None:
        """Kill everything the sandbox started and remove its scratch dir."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left in its session
        if self.cgroup is not None:
            self.cgroup.destroy()  # and anything that left the session (setsid daemons)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def run(self, request: RunRequest) -> RunResult:
        if self.used or request.limits != self.limits:
            raise SandboxError("a sandbox runs one job, under the limits it was started with")
        self.used = True
        limits, proc = request.limits, self.proc

        def kill_group() -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

        out, err = bytearray(), bytearray()
        overflow, log_overflow, ready = threading.Event(), threading.Event(), threading.Event()
        readers = [
            threading.Thread(target=pump, args=(proc.stdout.read1, limits.max_channel_bytes, out, overflow, kill_group, request.ready_marker, ready), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr.read1, limits.max_log_bytes, err, log_overflow, lambda: None), daemon=True),
        ]  # fmt: skip
        for r in readers:
            r.start()
        started = time.monotonic()
        try:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(request.stdin)
                proc.stdin.close()
            if not request.ready_marker:
                ready.set()
            timed_out = wait_two_phase(lambda: proc.poll() is not None, ready, limits)
        finally:
            kill_group()  # whatever the answer left running in its session dies with the job
            if self.cgroup is not None:
                self.cgroup.destroy()  # and so does anything that left the session
            proc.wait()
            for r in readers:
                r.join(timeout=5)
            self.discard()
        return RunResult(
            exit_code=proc.returncode,
            stdout=bytes(out),
            stderr=bytes(err),
            duration_s=time.monotonic() - started,
            timed_out=timed_out,
            channel_overflow=overflow.is_set(),
            notes=list(self.notes),
        )
