"""The single entry point a sandbox runs: setup, the student's code, the observers; facts out.

Usage inside a sandbox: `python -m graders.harness < job.json`. The job arrives on stdin
(then stdin is closed). The student's stdout and stderr go to scratch files; the
harness's own stdout carries exactly one frame: a header naming the job's nonce, a JSON
manifest and a safetensors blob. Nothing here decides a score: the host judges the
facts, and treats the frame as untrusted data.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import signal
import sys
import time
import traceback
from typing import Any

ANSWER_FILENAME = "<answer>"
SETUP_FILENAME = "<setup>"


class ObserveContext:
    """What observers see: the scope after the student's code, the seed, shared state, a tensor sink."""

    def __init__(self, scope: dict[str, Any], seed: int) -> None:
        self.scope = scope
        self.seed = seed
        self.shared: dict[Any, Any] = {}
        self.tensors: dict[str, Any] = {}
        self._prefix = ""

    def add_tensor(self, name: str, values: Any) -> None:
        self.tensors[f"{self._prefix}/{name}"] = values


def _trimmed_traceback(exc: BaseException, code: str) -> str:
    """The traceback restricted to the student's own lines, with their source."""
    lines = code.splitlines()
    out = ["Traceback (most recent call last, your code only):"]
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename != ANSWER_FILENAME:
            continue
        out.append(f"  line {frame.lineno}, in {frame.name}")
        if frame.lineno and 0 < frame.lineno <= len(lines):
            out.append(f"    {lines[frame.lineno - 1].strip()}")
    out.append(_exception_line(exc))
    return "\n".join(out)


def _exception_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:4000] if text else type(exc).__name__


def _is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or torch's allocator failing under the memory limit (a RuntimeError)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text
    )


def _read_head(fd: int, limit: int) -> tuple[str, int]:
    size = os.fstat(fd).st_size
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, min(size, limit)) if size else b""
    return data.decode("utf-8", errors="replace"), size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    from graders.job import MAX_JOB_BYTES, Job, frame_header, ready_marker

    raw = sys.stdin.buffer.read(MAX_JOB_BYTES + 1)
    job = Job.model_validate_json(raw[:MAX_JOB_BYTES])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)

    # Everything the observers rely on is imported (and its accessors captured) now,
    # before any student code exists in this process.
    import numpy as np
    import torch
    import torchvision  # noqa: F401  (imported once, here, so its cost is not the student's)
    from safetensors.numpy import save as save_tensors

    from graders import introspect  # noqa: F401
    from graders.checks import REGISTRY
    from graders.checks.base import ObservationError

    channel = os.dup(1)
    scratch = os.environ.get("TMPDIR", "/tmp")
    out_fd = os.open(os.path.join(scratch, ".stdout"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    err_fd = os.open(os.path.join(scratch, ".stderr"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full output file is an error, not a kill

    manifest: dict[str, Any] = {"schema_version": 1, "status": "ok", "error": None, "notes": []}
    timings: dict[str, float] = {}
    observations: dict[str, Any] = {}
    ctx = ObserveContext({"__name__": "__main__", "__builtins__": builtins}, job.seed)
    torch.manual_seed(job.seed)
    np.random.seed(job.seed)
    import random

    random.seed(job.seed)
    if job.device == "cuda":
        ctx.scope["device"] = torch.device("cuda")
    else:
        ctx.scope["device"] = torch.device("cpu")

    def phase(name: str, started: float) -> None:
        timings[name] = round(time.perf_counter() - started, 4)

    started = time.perf_counter()
    try:
        exec(compile(job.setup, SETUP_FILENAME, "exec", dont_inherit=True), ctx.scope)
    except BaseException as exc:  # the task's own setup failing is the grader's fault
        manifest["status"] = "setup_error"
        manifest["error"] = {
            "message": _exception_line(exc),
            "traceback": traceback.format_exc()[-8000:],
        }
    phase("setup_s", started)

    if manifest["status"] == "ok":
        for check in job.checks:
            prepare = getattr(REGISTRY[check.type], "prepare", None)
            if prepare is None:
                continue
            ctx._prefix = check.name
            try:
                prepare(ctx, check)
            except BaseException as exc:
                observations[check.name] = {"error": f"could not prepare: {_exception_line(exc)}"}

        saved_builtins = dict(builtins.__dict__)
        _write_all(channel, ready_marker(job.nonce))
        started = time.perf_counter()
        try:
            code = compile(job.code, ANSWER_FILENAME, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            manifest["status"] = "compile_error"
            if isinstance(exc, SyntaxError):
                where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
                source = (exc.text or "").rstrip()
                message = f"SyntaxError: {exc.msg} ({where})" + (
                    f"\n    {source}" if source else ""
                )
            else:
                message = _exception_line(exc)
            manifest["error"] = {"message": message, "traceback": message}
            code = None
        if code is not None:
            try:
                exec(code, ctx.scope)
            except SystemExit:
                manifest["notes"].append(
                    "your code called sys.exit(); the checks ran on the state at that point"
                )
            except BaseException as exc:
                manifest["status"] = "memory_limit" if _is_out_of_memory(exc) else "runtime_error"
                manifest["error"] = {
                    "message": _exception_line(exc),
                    "traceback": _trimmed_traceback(exc, job.code),
                }
        phase("student_s", started)

        started = time.perf_counter()
        sys.settrace(None)
        sys.setprofile(None)
        builtins.__dict__.update(saved_builtins)  # a rebound `isinstance` must not break the frame
        if manifest["status"] != "compile_error":
            for check in job.checks:
                if check.name in observations:
                    continue
                ctx._prefix = check.name
                try:
                    facts = REGISTRY[check.type].observe(ctx, check)
                    observations[check.name] = {"facts": facts}
                except ObservationError as exc:
                    observations[check.name] = {"error": str(exc)[:2000]}
                except BaseException as exc:
                    observations[check.name] = {
                        "error": f"could not observe: {_exception_line(exc)}"[:2000]
                    }
        phase("observe_s", started)

    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(BaseException):
            stream.flush()
    manifest["stdout"], manifest["stdout_bytes"] = _read_head(out_fd, job.max_output_bytes)
    manifest["stderr"], manifest["stderr_bytes"] = _read_head(err_fd, job.max_output_bytes)
    manifest["observations"] = observations
    manifest["timings"] = timings
    manifest["device"] = job.device

    body = json.dumps(manifest, allow_nan=True).encode()
    tensors = save_tensors(ctx.tensors) if ctx.tensors else b""
    _write_all(channel, frame_header(job.nonce, len(body), len(tensors)) + body + tensors)
    # Leave at once: no atexit hook, finaliser or thread of the student's runs after the frame.
    os._exit(0)


if __name__ == "__main__":
    main()
