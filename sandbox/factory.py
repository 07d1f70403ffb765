"""Pick a sandbox backend by name. A new backend is one module and one branch here."""

from __future__ import annotations

import logging

from core.settings import PROJECT_ROOT, Settings
from sandbox.base import SandboxBackend
from sandbox.errors import BackendUnavailable
from sandbox.process_backend import ProcessBackend

log = logging.getLogger(__name__)


def docker_available(settings: Settings) -> bool:
    try:
        from sandbox.docker_backend import engine_answers
    except ImportError:
        return False
    return engine_answers()


def get_backend(name: str, settings: Settings) -> SandboxBackend:
    """`docker`, `process`, or `auto` (Docker when an engine answers, else the process backend)."""
    if name == "auto":
        name = "docker" if docker_available(settings) else "process"
    if name == "docker":
        try:
            from sandbox.docker_backend import DockerBackend
        except ImportError as exc:
            raise BackendUnavailable(f"the Docker backend is not available: {exc}") from exc
        return DockerBackend.from_settings(settings)
    if name == "process":
        backend = ProcessBackend(project_root=PROJECT_ROOT, torch_home=settings.torch_home)
        log.warning("sandbox: %s", backend.describe())
        return backend
    raise BackendUnavailable(f"unknown sandbox backend {name!r}: use auto, docker or process")


def describe_configured_backend(settings: Settings) -> dict:
    """For health reports: which backend grading uses, whether it answers and whether it isolates."""
    name = settings.sandbox_backend
    if name == "auto":
        name = "docker" if docker_available(settings) else "process"
    if name == "docker":
        ok = docker_available(settings)
        return {
            "ok": ok,
            "backend": "docker",
            "isolated": True,
            "detail": "Docker engine answers" if ok else "no Docker engine answers",
        }
    backend = ProcessBackend(project_root=PROJECT_ROOT, torch_home=settings.torch_home)
    return {"ok": True, "backend": "process", "isolated": False, "detail": backend.describe()}
