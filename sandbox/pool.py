"""Warm sandboxes: started ahead of demand, torch imported and limits applied.

The harness imports torch and torchvision before it reads its job, so a sandbox started
early sits blocked on stdin with start-up already paid. `WarmPool` wraps a backend that
can start sandboxes that way: it keeps `size` of them per set of limits, hands one to
each job whose limits are exactly those it was started under, and starts a replacement
in a background thread.

With `jobs` at 1 a sandbox runs one job and is removed. Above 1 (the fast path, where
the backend supports it) a sandbox is a fork server that runs each job in a fresh child
of its own; it comes back to the pool after a job that ended cleanly, and is replaced
after `jobs` jobs or after any job that did not (`Sandbox.reusable()` says which).
Sandboxes older than `max_idle_s` are never handed a job and are replaced, which keeps
them inside the expiry their labels carry; the rest are removed by `close()`, at
process exit, or (when their owner dies without it) by an engine's orphan sweep.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import threading
import time

from sandbox.base import Limits, RunRequest, RunResult, Sandbox, StartableBackend
from sandbox.errors import SandboxError

log = logging.getLogger(__name__)

WARM_LABEL = "grader.warm"
RETRY_AFTER_FAILURE_S = 5.0
START_WAIT_S = 30.0  # how long a job waits for the sandbox the pool is starting for it


class WarmPool:
    """A sandbox backend that runs each job in a sandbox started before the job arrived."""

    def __init__(
        self,
        backend: StartableBackend,
        size: int,
        *,
        max_idle_s: float = 600.0,
        prewarm: tuple[Limits, ...] = (),
        jobs: int = 1,
    ) -> None:
        self.backend = backend
        self.jobs = jobs
        self.name = backend.name
        self.isolated = backend.isolated
        self.gpu_available = backend.gpu_available
        self.size = size
        self.max_idle_s = max_idle_s
        self._idle: dict[Limits, list[Sandbox]] = {}
        self._lent: dict[Limits, int] = {}  # sandboxes running a job now
        self._wanted: dict[Limits, float] = dict.fromkeys(prewarm, time.monotonic())
        self._changed = threading.Condition()
        self._closed = False
        self._owner_pid = os.getpid()  # a forked copy of the pool must not remove its sandboxes
        self._retry_at = 0.0  # after a failed start, the next try waits until then
        self._starting: Limits | None = None  # the limits of the sandbox being started now
        self._refiller = threading.Thread(target=self._refill, name="warm-pool", daemon=True)
        self._refiller.start()
        # Runs at interpreter exit and when a pool child process (Celery's prefork) ends.
        multiprocessing.util.Finalize(self, self.close, exitpriority=0)

    def describe(self) -> str:
        reuse = f", up to {self.jobs} jobs each through a fork server" if self.jobs > 1 else ""
        return f"{self.backend.describe()}; {self.size} warm sandbox(es) per set of limits{reuse}"

    def run(self, request: RunRequest) -> RunResult:
        limits = request.limits
        with self._changed:
            self._wanted[limits] = time.monotonic()
            idle = self._idle.setdefault(limits, [])
            # One being started now is nearer ready than a cold one, and starting both
            # would pay the import twice for one job under sustained load.
            deadline = time.monotonic() + START_WAIT_S
            while not idle and self._starting == limits and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            taken = idle.pop(0) if idle else None  # the oldest has had longest to import
            self._lent[limits] = self._lent.get(limits, 0) + 1
        try:
            while taken is not None and not (self._fresh(taken) and taken.alive()):
                _discard(taken)
                with self._changed:
                    taken = idle.pop(0) if idle else None
            sandbox = taken or self.backend.start(
                limits, labels=request.labels, idle_s=self.max_idle_s, jobs=self.jobs
            )
        except BaseException:
            with self._changed:
                self._lent[limits] -= 1
                self._changed.notify_all()
            raise
        try:
            return sandbox.run(request)
        finally:
            # The replacement's imports start once the job is done, not against its clock.
            with self._changed:
                self._lent[limits] -= 1
                keep = (
                    not self._closed
                    and sandbox.reusable()
                    and self._fresh(sandbox)
                    and len(idle) + self._lent[limits] < self.size
                )
                if keep:
                    idle.append(sandbox)
                self._changed.notify_all()
            if not keep and sandbox.reusable():
                _discard(sandbox)

    def _fresh(self, sandbox: Sandbox) -> bool:
        """Young enough for a job: its expiry leaves room for one more whole run."""
        return time.monotonic() - sandbox.started_at <= self.max_idle_s

    def waiting(self, limits: Limits | None = None) -> list[Sandbox]:
        """The warm sandboxes waiting for a job now (for `limits`, or for any), oldest first."""
        with self._changed:
            if limits is not None:
                return list(self._idle.get(limits, []))
            return [sandbox for idle in self._idle.values() for sandbox in idle]

    def wait_warm(self, limits: Limits, timeout_s: float) -> bool:
        """Block until a full set of sandboxes for `limits` is waiting (True) or time runs out."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            self._wanted.setdefault(limits, time.monotonic())
            self._changed.notify_all()
            while len(self._idle.get(limits, [])) < self.size:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._changed.wait(left)
            return True

    def close(self) -> None:
        """Stop refilling and remove every warm sandbox; idempotent."""
        if os.getpid() != self._owner_pid:
            return
        with self._changed:
            self._closed = True
            idle = [sandbox for pool in self._idle.values() for sandbox in pool]
            for pool in self._idle.values():
                pool.clear()  # a job holding one of these lists must find it empty
            self._changed.notify_all()
        for sandbox in idle:
            _discard(sandbox)
        if self._refiller is not threading.current_thread():
            self._refiller.join(timeout=30)

    def _refill(self) -> None:
        while True:
            stale: list[Sandbox] = []
            with self._changed:
                if self._closed:
                    return
                now = time.monotonic()
                for idle in self._idle.values():
                    stale += [s for s in idle if now - s.started_at > self.max_idle_s]
                    idle[:] = [s for s in idle if now - s.started_at <= self.max_idle_s]
                for limits, last in list(self._wanted.items()):
                    if now - last > self.max_idle_s:
                        del self._wanted[limits]
                short = [
                    limits
                    for limits in self._wanted
                    if len(self._idle.setdefault(limits, [])) + self._lent.get(limits, 0)
                    < self.size
                ]
                if now < self._retry_at:
                    short = []
                if not short and not stale:
                    wake = self._retry_at - now if now < self._retry_at else self.max_idle_s / 4
                    self._changed.wait(timeout=wake)
                    continue
            for sandbox in stale:
                _discard(sandbox)
            if short:
                self._start_one(short[0])

    def _start_one(self, limits: Limits) -> None:
        with self._changed:
            self._starting = limits
        try:
            sandbox = self.backend.start(
                limits, labels={WARM_LABEL: "1"}, idle_s=self.max_idle_s, jobs=self.jobs
            )
        except SandboxError as exc:
            log.warning("could not start a warm sandbox: %s", exc)
            with self._changed:
                self._starting = None
                self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE_S
                self._changed.notify_all()
            return
        with self._changed:
            self._starting = None
            if not self._closed:
                self._idle.setdefault(limits, []).append(sandbox)
                self._changed.notify_all()
                return
        _discard(sandbox)


def _discard(sandbox: Sandbox) -> None:
    try:
        sandbox.discard()
    except SandboxError as exc:
        log.warning("could not remove a warm sandbox: %s", exc)
