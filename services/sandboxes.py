"""The sandbox backends of a worker process: made on first use and kept (a warm pool keeps
its sandboxes running between jobs), removed before the process exits."""

from __future__ import annotations

import logging

from core.settings import Settings
from sandbox.base import SandboxBackend
from sandbox.checkpoints import ensure_checkpoints
from sandbox.errors import SandboxError
from sandbox.factory import get_backend
from services.grading import default_sandbox_limits

log = logging.getLogger(__name__)

_backends: dict[str, SandboxBackend] = {}
_sweepers: dict[str, SandboxBackend] = {}


def worker_backend(settings: Settings) -> SandboxBackend:
    """One sandbox backend per worker process, made on first use, keeping sandboxes warm."""
    if settings.sandbox_backend not in _backends:
        ensure_checkpoints(settings.torch_home)
        _backends[settings.sandbox_backend] = get_backend(
            settings.sandbox_backend, settings, prewarm=(default_sandbox_limits(),)
        )
    return _backends[settings.sandbox_backend]


def close_backends() -> None:
    """Remove this process's idle sandboxes (a warm pool's) before it exits: Celery's pool
    processes leave with os._exit, which runs no atexit hook."""
    for backend in _backends.values():
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    _backends.clear()


def sweep_sandboxes(settings: Settings) -> int:
    """Remove sandbox containers left behind by a worker that died mid-run (Docker only).

    Sweeps with a plain backend of its own: the grading backend may keep warm sandboxes,
    which a process that only reaps must not start."""
    try:
        if settings.sandbox_backend not in _sweepers:
            _sweepers[settings.sandbox_backend] = get_backend(settings.sandbox_backend, settings)
        backend = _sweepers[settings.sandbox_backend]
        return backend.sweep_orphans() if backend.name == "docker" else 0
    except SandboxError as exc:
        log.warning("could not sweep orphaned sandboxes: %s", exc)
        return 0
