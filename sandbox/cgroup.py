"""A pids cgroup per process-backend job, where the host lets us make one (cgroup v1, root).

It caps how many processes and threads the answer may start (RLIMIT_NPROC does not bind
root, and counts across jobs), and it lists every process the job started, daemons
included, so that all of them can be killed when the job ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

PIDS_ROOT = Path("/sys/fs/cgroup/pids")


class PidsCgroup:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, max_pids: int) -> PidsCgroup | None:
        """A fresh cgroup limited to `max_pids`, or None when this host does not allow it."""
        path = PIDS_ROOT / f"grader-{uuid.uuid4().hex[:16]}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_pids))
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            return None
        return cls(path)

    def join(self) -> None:
        """Called in the child before exec: move this process into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return []

    def destroy(self) -> None:
        """Kill every process in the cgroup, then remove it."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        with contextlib.suppress(OSError):
            self.path.rmdir()
