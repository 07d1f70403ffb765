"""The Docker backend: it grades, every container is locked down as designed, orphans are reaped.

The tests that need an engine skip without one (and fail under GRADER_REQUIRE_SERVICES=1);
the request-building tests run against an offline client and need no engine.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid

import docker
import pytest

from core.settings import PROJECT_ROOT
from sandbox.base import MIB, Limits, RunRequest, harness_env
from sandbox.docker_backend import (
    BACKEND_LABEL,
    EXPIRES_LABEL,
    GPU_SHM_BYTES,
    SANDBOX_LABEL,
    DockerBackend,
    engine_answers,
)
from sandbox.errors import BackendUnavailable, SandboxError
from sandbox.local_image import HOST_RUNTIME, RUNTIME_LABEL
from services.grading import sandbox_limits
from services.taskbank import get_task
from tests.conftest import gradectl, require_or_skip

CORRECT = "model.requires_grad_(False)\n"


@pytest.fixture(scope="session")
def docker_backend(settings):
    require_or_skip(engine_answers(), "Docker engine")
    return DockerBackend.from_settings(settings)


@pytest.fixture
def engine(docker_backend):
    return docker_backend.client


def containers_of(backend: DockerBackend) -> list[dict]:
    return backend.client.containers(
        all=True, filters={"label": f"{BACKEND_LABEL}={backend.instance_id}"}
    )


@pytest.mark.docker
def test_docker_backend_grades_a_correct_answer_fully(grade_answer, docker_backend):
    result = grade_answer("finetune-freeze", CORRECT, backend=docker_backend)
    assert (result.outcome, result.score, result.max_score) == ("passed", 10.0, 10.0), result.error
    assert (result.backend, result.isolated) == ("docker", True)
    assert containers_of(docker_backend) == []


@pytest.mark.docker
def test_running_container_is_locked_down(
    grade_answer, docker_backend, engine, settings, monkeypatch
):
    canary = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("GRADER_SECRET_TOKEN", canary)
    seen: list[dict] = []

    def inspect_while_running() -> None:
        for _ in range(300):
            for c in containers_of(docker_backend):
                details = engine.inspect_container(c["Id"])
                if details["State"]["Running"]:
                    seen.append(details)
                    return
            time.sleep(0.1)

    spy = threading.Thread(target=inspect_while_running)
    spy.start()
    result = grade_answer(
        "finetune-freeze", "import time\ntime.sleep(3)\n" + CORRECT, backend=docker_backend
    )
    spy.join()
    assert result.outcome == "passed", result.error
    assert seen, "no running sandbox container was seen"
    host, config = seen[0]["HostConfig"], seen[0]["Config"]
    limits = sandbox_limits(get_task(settings.tasks_dir, "finetune-freeze"), gpu=False)

    assert host["NetworkMode"] == "none" and config.get("NetworkDisabled") is True
    assert config["User"] == "65534:65534"
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert host["ReadonlyRootfs"] is True
    tmpfs = host["Tmpfs"]["/tmp"]
    assert f"size={limits.scratch_bytes}" in tmpfs and f"nr_inodes={limits.scratch_inodes}" in tmpfs
    assert host["Memory"] == host["MemorySwap"] == limits.memory_bytes
    assert host["NanoCpus"] == int(limits.cpus * 1e9)
    assert host["PidsLimit"] == limits.pids
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    assert ulimits == {
        "nofile": (limits.open_files, limits.open_files),
        "fsize": (limits.file_size_bytes, limits.file_size_bytes),
        "core": (0, 0),
        "data": (limits.memory_bytes, limits.memory_bytes),
    }
    assert host["Init"] is True
    assert host["LogConfig"]["Type"] == "none"
    assert not host.get("DeviceRequests")

    env = dict(item.split("=", 1) for item in config["Env"])
    allowed = harness_env(
        limits, pythonpath="/sandbox/lib", torch_home="/sandbox/torch_home", tmpdir="/tmp"
    )
    assert set(env) <= set(allowed), f"variables outside the allow-list: {set(env) - set(allowed)}"
    assert canary not in json.dumps(seen[0])

    labels = config["Labels"]
    assert labels[SANDBOX_LABEL] == "1" and labels[BACKEND_LABEL] == docker_backend.instance_id
    assert labels["grader.task"] == "finetune-freeze" and float(labels[EXPIRES_LABEL]) > time.time()

    mounts = seen[0]["Mounts"]
    assert all(m["Type"] == "bind" and m["RW"] is False for m in mounts), mounts
    sources = {m["Source"] for m in mounts}
    assert str(PROJECT_ROOT) not in sources
    assert not any((PROJECT_ROOT / "taskbank").is_relative_to(s) for s in sources)
    assert not any(s.startswith(("/run", "/var/run")) or s.endswith(".sock") for s in sources)
    assert containers_of(docker_backend) == []


@pytest.mark.docker
def test_sweep_removes_expired_sandbox_containers_only(docker_backend, engine):
    def make(expires: float) -> str:
        return engine.create_container(
            docker_backend.image, command=["true"], network_disabled=True,
            labels={SANDBOX_LABEL: "1", EXPIRES_LABEL: f"{expires:.0f}", "grader.test": "sweep"},
        )["Id"]  # fmt: skip

    expired, live = make(time.time() - 5), make(time.time() + 600)
    try:
        assert docker_backend.sweep_orphans() >= 1
        ids = {c["Id"] for c in engine.containers(all=True, filters={"label": "grader.test=sweep"})}
        assert expired not in ids and live in ids
    finally:
        for cid in (expired, live):
            with contextlib.suppress(docker.errors.NotFound):
                engine.remove_container(cid, force=True)


@pytest.mark.docker
def test_missing_image_is_an_internal_error_not_the_students(
    grade_answer, docker_backend, settings
):
    broken = DockerBackend.from_settings(settings)
    broken.image = f"ml-grader-sandbox:missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SandboxError, match="image is missing"):
        broken.run(RunRequest(stdin=b"{}", limits=Limits()))
    result = grade_answer("finetune-freeze", CORRECT, backend=broken)
    assert result.outcome == "internal_error" and result.score == 0


@pytest.mark.docker
def test_gradectl_grades_on_the_docker_backend(docker_backend, tmp_answer):
    proc = gradectl(
        "grade", "--backend", "docker", "finetune-freeze", str(tmp_answer(CORRECT)), "--json"
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    result = json.loads(proc.stdout)
    assert (result["outcome"], result["score"], result["backend"]) == ("passed", 10.0, "docker")


class OfflineClient(docker.APIClient):
    """Builds host configs like the real client, answers the backend's few queries from fixtures."""

    def __init__(
        self, *, runtimes: tuple[str, ...] = ("runc",), labels: dict | None = None
    ) -> None:
        super().__init__(base_url="unix:///nonexistent/docker.sock", version="1.41")
        self.runtimes, self.labels = runtimes, labels or {}

    def inspect_image(self, image):
        return {"Config": {"Labels": self.labels}}

    def info(self):
        return {"Runtimes": dict.fromkeys(self.runtimes, {})}

    def containers(self, **filters):
        return []


def offline_backend(settings, **client_args) -> DockerBackend:
    gpu = client_args.pop("gpu", "auto")
    return DockerBackend(
        OfflineClient(**client_args), image="sandbox:test", packages_root=PROJECT_ROOT,
        torch_home=settings.torch_home, gpu=gpu,
    )  # fmt: skip


def test_gpu_request_adds_one_device_and_a_larger_shm(settings):
    backend = offline_backend(settings, runtimes=("runc", "nvidia"))
    assert backend.gpu_available
    host = backend.container_config(RunRequest(stdin=b"", limits=Limits(gpu=True)))["host_config"]
    [request] = host["DeviceRequests"]
    assert (request["Count"], request["Capabilities"], request["DeviceIDs"]) == (1, [["gpu"]], [])
    assert host["ShmSize"] == GPU_SHM_BYTES
    cpu_host = backend.container_config(RunRequest(stdin=b"", limits=Limits()))["host_config"]
    assert "DeviceRequests" not in cpu_host and "ShmSize" not in cpu_host


def test_gpu_setting_and_engine_runtimes_decide_gpu_availability(settings):
    assert not offline_backend(settings, runtimes=("runc",)).gpu_available
    assert not offline_backend(settings, runtimes=("runc", "nvidia"), gpu="off").gpu_available
    off = offline_backend(settings, runtimes=("runc", "nvidia"), gpu="off")
    host = off.container_config(RunRequest(stdin=b"", limits=Limits(gpu=True)))["host_config"]
    assert "DeviceRequests" not in host
    with pytest.raises(BackendUnavailable, match="nvidia"):
        offline_backend(settings, runtimes=("runc",), gpu="on")


def test_host_runtime_image_gets_read_only_runtime_mounts_and_never_the_project(settings):
    """Of the project, only the code that runs in the sandbox: the contract and sandboxed/,
    not the host's graders/ (the judge), the task bank or the expected facts."""
    backend = offline_backend(settings, labels={RUNTIME_LABEL: HOST_RUNTIME})
    config = backend.container_config(
        RunRequest(stdin=b"", limits=Limits(memory_bytes=512 * MIB), labels={SANDBOX_LABEL: "0"})
    )
    mounts = config["host_config"]["Mounts"]
    assert mounts and all(m["ReadOnly"] and m["Type"] == "bind" for m in mounts)
    targets = {m["Target"]: m["Source"] for m in mounts}
    assert targets["/sandbox/lib/contract"] == str(PROJECT_ROOT / "contract")
    assert targets["/sandbox/lib/sandboxed"] == str(PROJECT_ROOT / "sandboxed")
    assert [t for t in targets if t.startswith("/sandbox/lib/")] == [
        "/sandbox/lib/contract",
        "/sandbox/lib/sandboxed",
    ]
    assert targets["/sandbox/torch_home"] == str(settings.torch_home.resolve())
    for source in targets.values():
        assert not (PROJECT_ROOT / "taskbank").is_relative_to(source)
        assert not settings.expected_dir.is_relative_to(source)
        assert not (PROJECT_ROOT / "graders").is_relative_to(source)
    assert config["entrypoint"][1:] == ["-B", "-m", "sandboxed.harness"]
    assert config["labels"][SANDBOX_LABEL] == "1", "a request cannot relabel its container"


def test_self_contained_image_gets_no_mounts(settings):
    backend = offline_backend(settings)
    config = backend.container_config(RunRequest(stdin=b"", limits=Limits()))
    assert config["host_config"].get("Mounts", []) == []
    assert config["entrypoint"] == ["python", "-B", "-m", "sandboxed.harness"]
