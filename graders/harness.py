"""The single entry point a sandbox runs: setup, the student's code, the observers; facts out.

Usage inside a sandbox: `python -m graders.harness < job.json`. The job arrives on stdin
(then stdin is closed). The student's stdout and stderr go to scratch files; the
harness's own stdout carries exactly one frame: a header naming the job's nonce, a JSON
manifest and a safetensors blob. Nothing here decides a score: the host judges the
facts, and treats the frame as untrusted data.

The answer shares this interpreter, so the harness keeps what matters out of its reach:

- the answer runs in a thread of its own, so no frame of the harness's main thread is on
  its stack; each observer runs in a fresh thread too, those that call the answer's
  code (a module's forward) last;
- an audit hook, which the answer cannot remove, refuses while the answer and the
  observers run: other threads' frames, walks of the object graph (gc), ctypes, new
  audit hooks, reading process memory, and importing the grader's own modules (which
  are dropped from `sys.modules` first, so they cannot be patched either);
- after the answer starts, the main thread — which alone holds the nonce — calls only
  C-level functions it captured beforehand, checks the exact type of everything the
  threads hand back, and writes the frame with a JSON encoder captured before the
  answer existed; each check's facts travel as an escaped string, so one observer
  cannot write another's facts.

What remains possible is forging the facts of a check whose observer runs the answer's
own code, or digging through the training-loop instrumentation's event log; the judge
compares those facts with a correct run's, so a forgery has to look like the right answer.
"""

from __future__ import annotations

import _json
import _thread
import builtins
import contextlib
import os
import re
import signal
import sys
import time
import traceback
from typing import Any

ANSWER_FILENAME = "<answer>"
SETUP_FILENAME = "<setup>"
GRADER_PACKAGE = "graders"
MAX_OBSERVATION_CHARS = 4 * 1024 * 1024
DENIED_EVENTS = frozenset(
    {
        "sys._current_frames",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
    }
)
LIMIT_EXIT = 3  # the frame was written, and the answer hit its memory or output limit
PROCESS_MEMORY = re.compile(r"^/proc/(self|thread-self|\d+)(/task/\d+)?/mem$")


class ObserveContext:
    """What observers see: the scope after the student's code, the seed, shared state, the
    tamper-resistant readers (`ti`), and a sink for this check's tensors."""

    def __init__(self, scope: dict[str, Any], seed: int, ti: Any, shared: dict) -> None:
        self.scope = scope
        self.seed = seed
        self.ti = ti
        self.shared = shared
        self.tensors: dict[str, Any] = {}

    def add_tensor(self, name: str, values: Any) -> None:
        self.tensors[name] = values


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


def _compile_answer(code: str) -> tuple[Any, str | None]:
    try:
        return compile(code, ANSWER_FILENAME, "exec", dont_inherit=True), None
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        source = (exc.text or "").rstrip()
        return None, f"SyntaxError: {exc.msg} ({where})" + (f"\n    {source}" if source else "")
    except ValueError as exc:  # null bytes
        return None, _exception_line(exc)


def _run_answer(code: Any, scope: dict[str, Any], source: str) -> tuple[str, str, str, str]:
    """Runs in the answer's own thread. Returns (status, message, traceback, note)."""
    try:
        exec(code, scope)
    except SystemExit:
        return (
            "ok",
            "",
            "",
            "your code called sys.exit(); the checks ran on the state at that point",
        )
    except BaseException as exc:
        status = "memory_limit" if _is_out_of_memory(exc) else "runtime_error"
        return status, _exception_line(exc), _trimmed_traceback(exc, source), ""
    return "ok", "", "", ""


def _flush_streams() -> None:
    """Runs in a thread of its own: the answer may have replaced sys.stdout with anything."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(BaseException):  # a broken stream is the answer's own problem
            stream.flush()


def _observe(observe, ctx: ObserveContext, check, encode, observation_error) -> tuple:
    """Runs in an observer's thread: one check's facts as JSON text, and its tensors."""
    try:
        body: dict[str, Any] = {"facts": observe(ctx, check)}
    except observation_error as exc:
        body = {"error": str(exc)[:2000]}
    except BaseException as exc:
        body = {"error": f"could not observe: {_exception_line(exc)}"[:2000]}
    try:
        text = "".join(encode(body, 0))
    except BaseException as exc:
        text = "".join(
            encode({"error": f"could not record the facts: {_exception_line(exc)}"[:2000]}, 0)
        )
    tensors = []
    for name, values in ctx.tensors.items():
        tensors.append(
            (str(name), str(values.dtype), tuple(int(n) for n in values.shape), values.tobytes())
        )
    return text, tensors


def _in_thread(start, new_lock, fn, args: tuple, base_exception: type) -> list:
    """Run fn(*args) in a new thread and wait; returns [result] or [exception] (or [] if lost)."""
    lock = new_lock()
    lock.acquire()
    box: list = []

    def runner() -> None:
        try:
            box.append(fn(*args))
        except BaseException as exc:
            box.append(exc)
        finally:
            lock.release()

    try:
        start(runner, ())
    except base_exception as exc:  # no thread could start (out of memory or threads)
        return [exc]
    lock.acquire()
    return box


def _guard(
    armed: list,
    denied: frozenset,
    exact_type,
    exact_str: type,
    startswith,
    mem_path,
    error: type,
    refused: type,
):
    """The audit hook. It looks nothing up at call time: every name is a captured cell."""

    def hook(event: str, args: tuple) -> None:
        if not armed[0]:
            return
        if event == "sys.addaudithook":
            raise refused("audit hooks are not available to answers")  # the hook is not added
        if event in denied or startswith(event, "ctypes."):
            raise error(f"{event} is not available to answers")
        if event == "import" and args and exact_type(args[0]) is exact_str:
            name = args[0]
            if name == GRADER or startswith(name, GRADER_PREFIX):
                raise error("the grader's own modules are not available to answers")
        elif event == "open" and args and exact_type(args[0]) is exact_str and mem_path(args[0]):
            raise error("reading process memory is not available to answers")

    GRADER, GRADER_PREFIX = GRADER_PACKAGE, GRADER_PACKAGE + "."  # noqa: N806
    return hook


SAFETENSORS_DTYPES = {
    "float32": "F32",
    "float64": "F64",
    "int64": "I64",
    "int32": "I32",
    "bool": "BOOL",
}


def preload() -> None:
    """Import everything a job relies on; a fork server calls this once for all its jobs."""
    import random  # noqa: F401

    import numpy  # noqa: F401
    import torch
    import torchvision  # noqa: F401  (imported here, so its cost is not the student's)

    from graders import introspect  # noqa: F401
    from graders.checks import REGISTRY  # noqa: F401
    from graders.job import Job  # noqa: F401

    # Seeding goes through torch's lazy per-device paths, which record the caller's stack
    # (reading the source of every frame) the first time: done here, once for a fork server.
    torch.manual_seed(0)


def make_encoder():
    """JSON text from plain values, by the C encoder (no attribute of the value is consulted)."""
    return _json.make_encoder(
        None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, True
    )


def prepare_checks(scope: dict[str, Any], seed: int, checks: list, encode) -> tuple:
    """Each check's `prepare`, before the answer runs: (the state the checks share, the
    observers in the order they run, calls into the answer's code last, and the
    observations of the checks that could not prepare)."""
    from graders import introspect
    from graders.checks import REGISTRY

    shared: dict = {}
    observers = []  # (executes the answer's code, name, observe function, check)
    observations: dict[str, str] = {}
    for check in checks:
        module = REGISTRY[check.type]
        prepare = getattr(module, "prepare", None)
        try:
            if prepare is not None:
                prepare(ObserveContext(scope, seed, introspect, shared), check)
            observers.append(
                (getattr(module, "EXECUTES_ANSWER", False), check.name, module.observe, check)
            )
        except BaseException as exc:
            observations[check.name] = "".join(
                encode({"error": f"could not prepare: {_exception_line(exc)}"}, 0)
            )
    observers.sort(key=lambda item: item[0])
    return shared, observers, observations


class Prepared:
    """A task's setup and its checks' preparation, run once by a fork server's zygote
    (graders/fork_server.py) for all the jobs it forks: each job's child starts from this
    scope, these prepared checks and these generator states, as it would after running
    the setup and preparing the checks itself (`random` reseeds itself in a forked child,
    so every state is put back, not just left as inherited)."""

    def __init__(
        self, setup: str, seed: int, device: str, checks: list, scope: dict[str, Any]
    ) -> None:
        import random

        import numpy as np
        import torch

        self.key = (setup, seed, device)
        self.checks = list(checks)
        self.scope = scope
        self.shared, self.observers, self.observations = prepare_checks(
            scope, seed, self.checks, make_encoder()
        )
        self.states = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def serves(self, job: Any) -> bool:
        return (job.setup, job.seed, job.device) == self.key and list(job.checks) == self.checks

    def restore(self) -> None:
        import random

        import numpy as np
        import torch

        python_state, numpy_state, torch_state = self.states
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


def run_setup(setup: str, seed: int, device: str) -> tuple[str, dict | None, dict[str, Any]]:
    """Seed every generator, then run the task's setup: (status, error, scope)."""
    import random

    import numpy as np
    import torch

    scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    scope["device"] = torch.device("cuda" if device == "cuda" else "cpu")
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    try:
        exec(compile(setup, SETUP_FILENAME, "exec", dont_inherit=True), scope)
    except BaseException as exc:  # the task's own setup failing is the grader's fault
        error = {"message": _exception_line(exc), "traceback": traceback.format_exc()[-8000:]}
        return "setup_error", error, scope
    return "ok", None, scope


def main(prepared: Prepared | None = None) -> None:
    """Run the job read from stdin; with `prepared` (a zygote's child), its setup is done."""
    # C-level primitives, captured before anything of the answer's exists.
    read, write, exit_now, lseek, fstat = os.read, os.write, os._exit, os.lseek, os.fstat
    start_thread, new_lock = _thread.start_new_thread, _thread.allocate_lock
    exact_type, exact_str, exact_bytes, exact_int, exact_list, exact_tuple = (
        type,
        str,
        bytes,
        int,
        list,
        tuple,
    )
    length, to_str, rounded, clock = len, str, round, time.perf_counter
    encode = make_encoder()
    update_dict, builtins_dict = dict.update, builtins.__dict__
    in_thread, observe_in_thread = _in_thread, _observe

    # Everything the observers rely on is imported (and its accessors captured) now, before
    # the job is read: a warm sandbox waits here, blocked on stdin, with torch imported.
    if prepared is None:  # (a zygote imported it all, and seeding again would undo its setup)
        preload()
    from graders import introspect
    from graders.checks.base import ObservationError
    from graders.job import MAX_JOB_BYTES, Job, frame_header, ready_marker

    chunks = []
    while sum(map(len, chunks)) <= MAX_JOB_BYTES and (chunk := read(0, 1 << 20)):
        chunks.append(chunk)
    job = Job.model_validate_json(b"".join(chunks)[:MAX_JOB_BYTES])
    del chunks
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)

    channel = os.dup(1)
    scratch = os.environ.get("TMPDIR", "/tmp")
    out_fd = os.open(os.path.join(scratch, ".stdout"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    err_fd = os.open(os.path.join(scratch, ".stderr"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full output file is an error, not a kill

    notes: list[str] = []
    timings: dict[str, float] = {}
    started = clock()
    if prepared is not None and prepared.serves(job):
        prepared.restore()
        status, error, scope = "ok", None, prepared.scope
        shared, observers = prepared.shared, prepared.observers
        observations: dict[str, str] = dict(prepared.observations)
    else:
        status, error, scope = run_setup(job.setup, job.seed, job.device)
        shared, observers, observations = (
            prepare_checks(scope, job.seed, job.checks, encode) if status == "ok" else ({}, [], {})
        )
    timings["setup_s"] = rounded(clock() - started, 4)
    code, compile_message = _compile_answer(job.code) if status == "ok" else (None, None)
    if compile_message is not None:
        status, error = "compile_error", {"message": compile_message, "traceback": compile_message}
    # Everything the main thread uses from here on is a local captured now: after the
    # answer starts it looks up no global, builtin or attribute the answer could rebind.
    nonce, max_output, source, seed = job.nonce, job.max_output_bytes, job.code, job.seed
    device = "cuda" if job.device == "cuda" else "cpu"
    ready = ready_marker(nonce)
    frame_start = frame_header(nonce, 0, 0).split(nonce.encode())[0] + nonce.encode() + b" "
    run_answer, head_of, all_of, memory_view = _run_answer, _head, all, memoryview
    flush_streams = _flush_streams
    dtype_codes = dict(SAFETENSORS_DTYPES)
    base_exception, max_chars, make_context = BaseException, MAX_OBSERVATION_CHARS, ObserveContext
    saved_builtins = dict(builtins_dict)
    hook = _guard(
        armed := [False],
        DENIED_EVENTS,
        type,
        str,
        str.startswith,
        PROCESS_MEMORY.match,
        PermissionError,
        RuntimeError,
    )
    for name in [
        n for n in sys.modules if n == GRADER_PACKAGE or n.startswith(GRADER_PACKAGE + ".")
    ]:
        del sys.modules[name]
    sys.addaudithook(hook)
    armed[0] = True
    try:
        write(channel, ready)
        if code is not None:
            started = clock()
            box = in_thread(
                start_thread, new_lock, run_answer, (code, scope, source), base_exception
            )
            timings["student_s"] = rounded(clock() - started, 4)
            outcome = box[0] if length(box) == 1 else None
            parts = ["runtime_error", "the answer's thread ended abnormally", "", ""]
            if exact_type(outcome) is exact_tuple and length(outcome) == 4:
                parts = [p if exact_type(p) is exact_str else "?" for p in outcome]
            update_dict(
                builtins_dict, saved_builtins
            )  # a rebound builtin must not reach the observers
            if parts[0] != "ok":
                status = "memory_limit" if parts[0] == "memory_limit" else "runtime_error"
                error = {"message": parts[1], "traceback": parts[2]}
            if parts[3]:
                notes.append(parts[3])

        tensor_entries = []
        if code is not None and status != "memory_limit":  # out of memory: nothing to observe
            started = clock()
            for _, name, observe, check in observers:
                ctx = make_context(scope, seed, introspect, shared)
                box = in_thread(
                    start_thread,
                    new_lock,
                    observe_in_thread,
                    (observe, ctx, check, encode, ObservationError),
                    base_exception,
                )
                result = box[0] if length(box) == 1 else None
                if exact_type(result) is not exact_tuple or length(result) != 2:
                    observations[name] = "".join(
                        encode({"error": "the observer did not finish"}, 0)
                    )
                    continue
                text, tensors = result
                if exact_type(text) is exact_str and length(text) <= max_chars:
                    observations[name] = text
                else:
                    observations[name] = "".join(
                        encode({"error": "the observer's facts were malformed"}, 0)
                    )
                if exact_type(tensors) is not exact_list:
                    continue
                for entry in tensors:
                    if exact_type(entry) is not exact_tuple or length(entry) != 4:
                        continue
                    tname, dtype, shape, data = entry
                    if (
                        exact_type(tname) is exact_str
                        and exact_type(dtype) is exact_str
                        and exact_type(shape) is exact_tuple
                        and all_of([exact_type(n) is exact_int for n in shape])
                        and exact_type(data) is exact_bytes
                        and dtype in dtype_codes
                    ):
                        tensor_entries.append(
                            (name + "/" + tname, dtype_codes[dtype], exact_list(shape), data)
                        )
            timings["observe_s"] = rounded(clock() - started, 4)

        in_thread(start_thread, new_lock, flush_streams, (), base_exception)
        stdout_head, stdout_bytes = head_of(read, lseek, fstat, out_fd, max_output)
        stderr_head, stderr_bytes = head_of(read, lseek, fstat, err_fd, max_output)
        manifest = {
            "schema_version": 1, "status": status, "error": error, "notes": notes,
            "stdout": stdout_head, "stdout_bytes": stdout_bytes,
            "stderr": stderr_head, "stderr_bytes": stderr_bytes,
            "observations": observations, "timings": timings, "device": device,
        }  # fmt: skip
        body = "".join(encode(manifest, 0)).encode()
        header, offset, blobs = {}, 0, []
        for key, dtype, shape, data in tensor_entries:
            header[key] = {
                "dtype": dtype,
                "shape": shape,
                "data_offsets": [offset, offset + length(data)],
            }
            offset += length(data)
            blobs.append(data)
        tensors_blob = b""
        if header:
            head = "".join(encode(header, 0)).encode()
            head += b" " * (-length(head) % 8)
            tensors_blob = length(head).to_bytes(8, "little") + head + b"".join(blobs)
        sizes = to_str(length(body)) + " " + to_str(length(tensors_blob)) + "\n"
        view = memory_view(frame_start + sizes.encode() + body + tensors_blob)
        while view:
            view = view[write(channel, view) :]
    except base_exception:
        exit_now(70)  # no frame: the host reports that the run could not be observed
    # Leave at once: no atexit hook, finaliser or thread of the student's runs after the frame.
    # The status says whether the answer hit a limit, for a fork server that replaces its
    # sandbox after such a job; the host judges the frame, not the status.
    over_output = stdout_bytes > max_output or stderr_bytes > max_output
    exit_now(LIMIT_EXIT if status == "memory_limit" or over_output else 0)


def _head(read, lseek, fstat, fd: int, limit: int) -> tuple[str, int]:
    """The first `limit` bytes of a scratch file the answer wrote, decoded, and its size."""
    size = fstat(fd).st_size
    lseek(fd, 0, 0)
    data = read(fd, limit if size > limit else size) if size else b""
    return data.decode("utf-8", errors="replace"), size


if __name__ == "__main__":
    main()
