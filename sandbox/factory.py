"""Pick a sandbox backend by name. A new backend is one module and one branch here."""

from __future__ import annotations

import logging

from core.settings import PROJECT_ROOT, Settings
from sandbox.base import Limits, SandboxBackend, StartableBackend
from sandbox.errors import BackendUnavailable
from sandbox.pool import WarmPool
from sandbox.process_backend import ProcessBackend

log = logging.getLogger(__name__)


def docker_available(settings: Settings) -> bool:
    try:
        from sandbox.docker_backend import engine_answers
    except ImportError:
        return False
    return engine_answers()


def get_backend(
    name: str, settings: Settings, *, prewarm: tuple[Limits, ...] | None = None
) -> SandboxBackend:
    """`docker`, `process`, or `auto` (Docker when an engine answers, else the process backend).

    With `prewarm` (a long-lived worker's choice, not a one-shot command's) and a warm pool
    size above 0, jobs run in sandboxes started ahead of demand, starting with those limits.
    """
    if name == "auto":
        name = "docker" if docker_available(settings) else "process"
    backend: StartableBackend
    if name == "docker":
        try:
            from sandbox.docker_backend import DockerBackend
        except ImportError as exc:
            raise BackendUnavailable(f"the Docker backend is not available: {exc}") from exc
        backend = DockerBackend.from_settings(settings)
    elif name == "process":
        backend = ProcessBackend(project_root=PROJECT_ROOT, torch_home=settings.torch_home)
        log.warning("sandbox: %s", backend.describe())
    else:
        raise BackendUnavailable(f"unknown sandbox backend {name!r}: use auto, docker or process")
    if prewarm is None or settings.warm_pool_size == 0:
        return backend
    return WarmPool(
        backend,
        settings.warm_pool_size,
        max_idle_s=settings.warm_max_idle_s,
        prewarm=prewarm,
        jobs=settings.fork_server_jobs if name == "docker" else 1,
    )


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
