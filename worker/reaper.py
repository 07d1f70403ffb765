"""The reaper, on a timer in the worker's main process: every worker runs it, so it lives as
long as any worker does, and whatever supervises the worker (scripts/run.sh, systemd, an
orchestrator) restarts it with the worker. The workers take turns (one reap per interval
across them all, `usecases.worker.reap_when_due`).

A thread of the main process, not a pool process or a beat: a pool process may be busy
grading for minutes, and a beat is one process nobody restarts. The main process forks the
pool's replacements while the thread runs; the children drop the database connections they
inherit (db/session.py) and Redis clients reconnect in a new process by themselves.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery import bootsteps

from usecases import worker
from usecases.unit_of_work import Context

log = logging.getLogger(__name__)


class Reaper(bootsteps.StartStopStep):
    """Starts with the worker (after its pool), stops at its shutdown."""

    requires = {"celery.worker.components:Pool"}
    context: Context  # set by worker/celery_app.py

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent) -> None:
        owner = f"{socket.gethostname()}:{os.getpid()}"[:200]
        self._thread = threading.Thread(target=self._run, args=(owner,), name="reaper", daemon=True)
        self._thread.start()

    def stop(self, parent) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, owner: str) -> None:
        interval_s = self.context.settings.reaper_interval_s
        while (
            True
        ):  # at once (a worker that starts after an outage recovers it), then each interval
            try:
                done = worker.reap_when_due(self.context, owner)
                if done and any(done.values()):
                    log.info("reaped: %s", done)
            except Exception:  # the database or the engine is down: the next tick tries again
                log.exception("the reaper's run failed")
            if self._stop.wait(interval_s):
                return
