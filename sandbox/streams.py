"""Bounded reading of a sandbox's streams and the two-phase deadline, shared by the backends."""

from __future__ import annotations

import threading
import time

from sandbox.base import Limits


def pump(
    read,
    cap: int,
    sink: bytearray,
    overflow: threading.Event,
    on_overflow,
    marker: bytes = b"",
    seen: threading.Event | None = None,
) -> None:
    """Read a stream to its end, keeping at most `cap` bytes; signal once past the cap.

    When `marker` is given, `seen` is set the first time it appears in what was kept.
    """
    while chunk := read(65536):
        room = cap - len(sink)
        if room > 0:
            sink += chunk[:room]
        if (
            marker
            and seen is not None
            and not seen.is_set()
            and marker in sink[-(len(chunk) + len(marker)) :]
        ):
            seen.set()
        if len(chunk) > room and not overflow.is_set():
            overflow.set()
            on_overflow()


def wait_two_phase(done, ready: threading.Event, limits: Limits) -> bool:
    """Wait for `done()` within the start-up allowance, then the answer's own time limit.

    The answer's clock starts when the harness's ready marker is seen, so the cost of
    starting Python and importing torch is never charged to the student. Returns True
    when a deadline passed first.
    """
    start_deadline = time.monotonic() + limits.startup_timeout_s
    answer_deadline = None
    while not done():
        now = time.monotonic()
        if answer_deadline is None and ready.is_set():
            answer_deadline = now + limits.timeout_s
        deadline = answer_deadline if answer_deadline is not None else start_deadline
        if now >= deadline:
            return True
        ready.wait(timeout=min(0.05, deadline - now)) if answer_deadline is None else time.sleep(
            min(0.02, deadline - now)
        )
    return False


def pump_until(
    read,
    cap: int,
    sink: bytearray,
    overflow: threading.Event,
    on_overflow,
    marker: bytes,
    seen: threading.Event,
    end: bytes,
) -> bytes | None:
    """Read one job's output from a stream that outlives the job, up to its end line.

    The end line starts with `end` (which holds a secret only the sandbox's server
    knows) and runs to a newline; what follows `end` on it is returned, and `sink` keeps
    what came before. Returns None when the stream ended first, or when the output
    passed `cap` (then `on_overflow` was called and the rest was drained unread). The ready
    `marker` sets `seen`, as in `pump`.
    """
    found = -1
    while chunk := read(65536):
        before = len(sink)
        sink += chunk
        if marker and not seen.is_set() and marker in sink[max(0, before - len(marker)) :]:
            seen.set()
        if found < 0:
            found = sink.find(end, max(0, before - len(end)))
        if found >= 0:
            newline = sink.find(b"\n", found + len(end))
            if newline >= 0:
                trailer = bytes(sink[found + len(end) : newline])
                del sink[found:]
                return trailer
        elif len(sink) > cap:
            del sink[cap:]
            overflow.set()
            on_overflow()
            while read(65536):  # drained to the end: an engine finishes a kill only then
                pass
            return None
    return None
