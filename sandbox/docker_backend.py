"""The Docker backend: one locked-down container per job, killed at the deadline, always removed.

Every container runs with no network, as uid 65534 with no capabilities and
no-new-privileges, on a read-only root with a size- and inode-capped tmpfs at /tmp,
under cgroup limits (memory equal to memory+swap, a CPU quota, a pids limit), with
nofile/fsize/core/data ulimits, in an IPC namespace of its own whose System V limits
keep shared memory within the job's memory limit (`ipc_sysctls`), with an init process,
an allow-listed environment and no logs kept by the engine. The job goes in on stdin
and the facts come back on stdout, both over the attach stream, read with a cap;
nothing is shared through a writable mount.
The fast path's containers (`start(..., jobs=N)`) differ only where their fork server
needs it: see `container_config` and `sandbox/fork_sandbox.py`. A started container is
supervised by `sandbox/docker_sandbox.py` (one job) or the fork sandbox, both through the
engine plumbing of `sandbox/docker_engine.py`.

Two kinds of image work: the production image (sandbox/Dockerfile) holds Python, torch
and the in-sandbox code; the registry-free image from `sandbox.local_image` holds nothing,
and this backend mounts the host's Python runtime, virtual environment, the packages that
run in the sandbox (contract/, sandboxed/) and stand-in checkpoints into it read-only, at
the paths the runtime expects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path

import docker
import docker.errors
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from core.settings import PROJECT_ROOT, Settings
from sandbox.base import (
    FORK_SERVER_MODULE,
    HARNESS_MODULE,
    NOBODY,
    SANDBOX_LIB,
    SANDBOX_PACKAGES,
    SANDBOX_TORCH_HOME,
    Limits,
    RunRequest,
    RunResult,
    harness_env,
)
from sandbox.docker_engine import (
    ENGINE_ERRORS,
    ENGINE_TIMEOUT_S,
    EXPIRY_GRACE_S,
    connect,
    engine_call,
)
from sandbox.docker_sandbox import DockerSandbox
from sandbox.errors import BackendUnavailable
from sandbox.fork_sandbox import DockerForkSandbox
from sandbox.local_image import HOST_RUNTIME, MERGED_USR_LINKS, RUNTIME_LABEL

log = logging.getLogger(__name__)

SANDBOX_LABEL = "grader.sandbox"
BACKEND_LABEL = "grader.backend"
EXPIRES_LABEL = "grader.expires"  # unix time after which a sweep may kill the container
# The process that made it: a sweep on its host removes it once that process is gone.
OWNER_LABEL = "grader.owner"
GPU_SHM_BYTES = 1024 * 1024 * 1024  # data loaders' workers share batches through /dev/shm
HOST_FILES = ("/etc/ld.so.cache", "/etc/alternatives")
# The fast path's server: what it needs to give each job's child a uid and /tmp of its own.
SERVER_CAPABILITIES = ("CHOWN", "SETUID", "SETGID")
SERVER_MEMORY_BYTES = 768 * 1024 * 1024  # torch imported, shared copy-on-write with the job
SERVER_PIDS = 8  # init, the server, its clean-up helper, a seed for the next zygote
# A zygote: the copy-on-write pages a task's setup writes (a ResNet-18 and its checkpoint)
ZYGOTE_MEMORY_BYTES = 256 * 1024 * 1024
# System V IPC limits, per IPC namespace. kernel.shmall counts pages of the engine's
# kernel: this machine's page size stands for it (the engine runs beside the worker).
SHM_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MSG_QUEUE_BYTES = 16 * 1024  # kernel.msgmnb: the kernel's default
MSG_QUEUES = 256  # kernel.msgmni: 4 MiB of messages in all
SEMAPHORES = "250 8192 32 128"  # kernel.sem: per set, in all, per semop call, sets


def ipc_sysctls(memory_bytes: int) -> dict[str, str]:
    """The sysctls of a container's own IPC namespace: System V shared memory, one segment
    or all together, fits in `memory_bytes` (RLIMIT_DATA does not count shared mappings),
    a segment goes when its last process detaches or exits, and message queues and
    semaphores stay small."""
    pages = memory_bytes // SHM_PAGE_BYTES
    return {
        "kernel.shm_rmid_forced": "1",
        "kernel.shmmax": str(pages * SHM_PAGE_BYTES),
        "kernel.shmall": str(pages),
        "kernel.msgmnb": str(MSG_QUEUE_BYTES),
        "kernel.msgmni": str(MSG_QUEUES),
        "kernel.sem": SEMAPHORES,
    }


def engine_answers(timeout_s: float = 2.0) -> bool:
    """True when a Docker engine answers a ping within `timeout_s`."""
    try:
        client = connect(timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except ENGINE_ERRORS:
        return False


class DockerBackend:
    name = "docker"
    isolated = True

    def __init__(
        self,
        client: docker.APIClient,
        *,
        image: str,
        packages_root: Path,
        torch_home: Path,
        gpu: str = "auto",
        zygotes: int = 0,
    ) -> None:
        self.client = client
        self.image = image
        self.zygotes = zygotes  # a fork server's shared setups (sandboxed/fork_server.py)
        self.instance_id = uuid.uuid4().hex[:16]
        with engine_call("inspecting the Docker engine"):
            try:
                labels = client.inspect_image(image)["Config"].get("Labels") or {}
            except docker.errors.ImageNotFound as exc:
                raise BackendUnavailable(
                    f"sandbox image {image!r} not found: run scripts/ensure_docker.sh "
                    "(registry-free image) or build sandbox/Dockerfile"
                ) from exc
            runtimes = client.info().get("Runtimes") or {}
        self.host_runtime = labels.get(RUNTIME_LABEL) == HOST_RUNTIME
        self.mounts = host_runtime_mounts(packages_root, torch_home) if self.host_runtime else []
        self.python = sys.executable if self.host_runtime else "python"
        self.gpu_available = gpu != "off" and "nvidia" in runtimes
        if gpu == "on" and not self.gpu_available:
            raise BackendUnavailable(
                "GRADER_GPU=on but this Docker engine has no nvidia runtime "
                f"(runtimes: {', '.join(sorted(runtimes)) or 'none'})"
            )
        self.sweep_orphans()

    @classmethod
    def from_settings(cls, settings: Settings) -> DockerBackend:
        try:
            client = connect(ENGINE_TIMEOUT_S)
        except ENGINE_ERRORS as exc:
            where = os.environ.get("DOCKER_HOST", "the local socket")
            raise BackendUnavailable(f"no Docker engine answers at {where}: {exc}") from exc
        return cls(
            client,
            image=settings.docker_image,
            packages_root=PROJECT_ROOT,
            torch_home=settings.torch_home,
            gpu=settings.gpu,
            zygotes=settings.fork_server_zygotes,
        )

    def describe(self) -> str:
        runtime = (
            "host Python runtime mounted read-only" if self.host_runtime else "self-contained image"
        )
        gpu = "GPU available" if self.gpu_available else "no GPU"
        return (
            f"docker backend, image {self.image} ({runtime}; {gpu}): no network, uid {NOBODY}, "
            "no capabilities, read-only root, cgroup memory/CPU/pids limits"
        )

    def sweep_orphans(self) -> int:
        """Remove sandbox containers left by a process that died (a worker killed mid-job,
        its warm sandboxes): at once when that process ran on this host and is gone, else
        past their expiry."""
        now = time.time()
        removed = 0
        with engine_call("listing sandbox containers"):
            found = self.client.containers(all=True, filters={"label": f"{SANDBOX_LABEL}=1"})
        for container in found:
            labels = container.get("Labels") or {}
            try:
                expires = float(labels.get(EXPIRES_LABEL, ""))
            except ValueError:
                expires = 0.0
            if expires > now and not owner_gone(labels.get(OWNER_LABEL, "")):
                continue
            with contextlib.suppress(*ENGINE_ERRORS):
                self.client.remove_container(container["Id"], force=True)
                removed += 1
        if removed:
            log.warning("removed %d orphaned sandbox container(s)", removed)
        return removed

    def container_config(self, request: RunRequest, idle_s: float = 0.0, jobs: int = 1) -> dict:
        """The create_container arguments: every limit and restriction is here.

        One job: the harness as uid 65534 with no capabilities. More (the fast path): the
        fork server as root with CHOWN, SETUID and SETGID only, which runs each job's
        child under a uid of its own, with the job's rlimits (sandboxed/fork_server.py);
        memory and pids get the server's share, and its zygotes', on top of the job's.
        Either way the IPC namespace is the container's own (`private`: no other
        container may join it), which is what lets its System V limits be set.
        """
        limits = request.limits
        serving = jobs > 1
        zygotes = self.zygotes if serving else 0
        extra_memory = SERVER_MEMORY_BYTES + zygotes * ZYGOTE_MEMORY_BYTES if serving else 0
        host_config = self.client.create_host_config(
            network_mode="none",
            cap_drop=["ALL"],
            cap_add=list(SERVER_CAPABILITIES) if serving else None,
            security_opt=["no-new-privileges"],
            read_only=True,
            tmpfs={
                "/tmp": f"rw,nosuid,nodev,size={limits.scratch_bytes},"
                f"nr_inodes={limits.scratch_inodes},mode={'0711' if serving else '1777'}"
            },
            mem_limit=limits.memory_bytes + extra_memory,
            memswap_limit=limits.memory_bytes + extra_memory,
            nano_cpus=int(limits.cpus * 1e9),
            pids_limit=limits.pids + (SERVER_PIDS + zygotes if serving else 0),
            ulimits=[
                Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
                Ulimit(name="fsize", soft=limits.file_size_bytes, hard=limits.file_size_bytes),
                Ulimit(name="core", soft=0, hard=0),
                # An allocation past the memory limit fails at once (MemoryError), rather
                # than paging in up to the cgroup's limit first and racing the deadline.
                Ulimit(name="data", soft=limits.memory_bytes, hard=limits.memory_bytes),
            ],
            init=True,
            ipc_mode="private",
            sysctls=ipc_sysctls(limits.memory_bytes),
            log_config=LogConfig(type=LogConfig.types.NONE),
            mounts=self.mounts,
            **self._gpu_options(limits),
        )
        expires = (
            time.time() + idle_s + limits.startup_timeout_s + limits.timeout_s + EXPIRY_GRACE_S
        )
        labels = {
            **request.labels,
            SANDBOX_LABEL: "1",
            BACKEND_LABEL: self.instance_id,
            EXPIRES_LABEL: f"{expires:.0f}",
            OWNER_LABEL: owner(os.getpid()),
        }
        entrypoint = [self.python, "-B", "-m", HARNESS_MODULE]
        if serving:
            entrypoint = [
                self.python, "-B", "-m", FORK_SERVER_MODULE, "--jobs", str(jobs),
                "--cpu-s", str(int(limits.timeout_s + limits.startup_timeout_s) + 5),
                "--data-bytes", str(limits.memory_bytes), "--nproc", str(limits.pids),
                "--zygotes", str(zygotes),
            ]  # fmt: skip
        return {
            "image": self.image,
            "entrypoint": entrypoint,
            "command": [],
            "user": "0:0" if serving else f"{NOBODY}:{NOBODY}",
            "working_dir": "/tmp",
            "hostname": "sandbox",
            "environment": harness_env(
                limits, pythonpath=SANDBOX_LIB, torch_home=SANDBOX_TORCH_HOME, tmpdir="/tmp"
            ),
            "labels": labels,
            "stdin_open": True,
            "network_disabled": True,
            "host_config": host_config,
        }

    def _gpu_options(self, limits: Limits) -> dict:
        if not (limits.gpu and self.gpu_available):
            return {}
        return {
            "device_requests": [DeviceRequest(count=1, capabilities=[["gpu"]])],
            "shm_size": GPU_SHM_BYTES,
        }

    def run(self, request: RunRequest) -> RunResult:
        return self.start(request.limits, labels=request.labels).run(request)

    def start(
        self,
        limits: Limits,
        *,
        labels: dict[str, str] | None = None,
        idle_s: float = 0.0,
        jobs: int = 1,
    ) -> DockerSandbox:
        """A started container blocked on reading its job, which may wait `idle_s` for it.

        With `jobs` above 1 it is a fork server that runs up to that many jobs, one at a
        time, each in a child of its own (the fast path).
        """
        template = RunRequest(stdin=b"", limits=limits, labels=labels or {})
        with engine_call("creating the sandbox container"):
            container = self.client.create_container(
                **self.container_config(template, idle_s=idle_s, jobs=jobs)
            )["Id"]
        if jobs > 1:
            sandbox: DockerSandbox = DockerForkSandbox(self.client, container, limits, jobs)
        else:
            sandbox = DockerSandbox(self.client, container, limits)
        try:
            with engine_call("attaching to the sandbox container"):
                sandbox.attached = self.client.attach_socket(
                    container, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
                )
            with engine_call("starting the sandbox container"):
                self.client.start(container)
        except BaseException:
            sandbox.discard()
            raise
        return sandbox


def owner(pid: int) -> str:
    """Who made a container, as its label says: this host, its pid namespace, the process's
    pid and start time (a pid the kernel gave again to another process is not its owner)."""
    return f"{socket.gethostname()}|{_pid_namespace()}|{pid}|{_started(pid)}"


def owner_gone(label: str) -> bool:
    """True when `label` (`owner`'s) names a process of this host's pid namespace that no
    longer runs; False for another host's or namespace's, which only the expiry removes."""
    try:
        host, namespace, pid, started = label.split("|")
        pid_number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname() or namespace != _pid_namespace() or not started:
        return False
    return _started(pid_number) != started


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat), "" when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def host_runtime_mounts(packages_root: Path, torch_home: Path) -> list[Mount]:
    """Read-only mounts that let an image without Python run this host's interpreter.

    The runtime and the virtual environment keep their absolute paths (the environment's
    interpreter is a link to the runtime's); the packages that run in the sandbox
    (`SANDBOX_PACKAGES` under `packages_root`) and the checkpoints go where the production
    image keeps them. The project root is never mounted (it holds the reference
    solutions), nor the host's own packages (`graders/`, the services).
    """
    sources: list[tuple[str, str]] = [("/usr", "/usr")]
    sources += [(f"/{name}", f"/{name}") for name in MERGED_USR_LINKS if _real_dir(f"/{name}")]
    sources += [(path, path) for path in HOST_FILES if os.path.exists(path)]
    for prefix in sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}):
        if not any(prefix.is_relative_to(src) for src, _ in sources):
            sources.append((str(prefix), str(prefix)))
    sources += [
        (str((packages_root / package).resolve()), f"{SANDBOX_LIB}/{package}")
        for package in SANDBOX_PACKAGES
    ]
    sources.append((str(torch_home.resolve()), SANDBOX_TORCH_HOME))
    return [Mount(target, source, type="bind", read_only=True) for source, target in sources]


def _real_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)
