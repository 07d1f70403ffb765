"""The single entry point a sandbox runs: setup, the student's code, the observers; facts out.

Usage inside a sandbox: `python -m sandboxed.harness < job.json`. The job arrives on stdin
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
  audit hooks, reading process memory, and importing the grader's own modules (its
  packages, `GRADER_PACKAGES`, which are dropped from `sys.modules` first, so they
  cannot be patched either);
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
import gc
import os
import signal
import sys
import time
import traceback
import types
from time import sleep as _sleep
from typing import Any

ANSWER_FILENAME = "<answer>"
SETUP_FILENAME = "<setup>"
# The grader's packages: what runs here (the contract with the host and the in-sandbox
# code) and the host's own, which a sandbox does not hold (a process sandbox without
# namespaces can reach it): none of them is the answer's to import.
GRADER_PACKAGES = ("contract", "sandboxed", "graders")
SERVER_MODULE = "sandboxed.fork_server"
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


# What runs in a thread beside the answer's code (the answer's own thread, the one that
# flushes the streams it may have replaced) is compiled into a namespace of its own, with
# its own copy of the builtins: the frames the answer's code can walk up to, and their
# globals, lead to this namespace and to C functions, never to the harness's module.
_ISOLATED = """
def thread_main(fn, args, box, release, base_exception):
    try:
        box.append(fn(*args))
    except base_exception as exc:
        box.append(exc)
    finally:
        release()


def exception_line(exc):
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:4000] if text else type(exc).__name__


def trimmed_traceback(exc, code):
    # The traceback restricted to the answer's own lines, with their source.
    lines = code.splitlines()
    out = ["Traceback (most recent call last, your code only):"]
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename != ANSWER_FILENAME:
            continue
        out.append(f"  line {frame.lineno}, in {frame.name}")
        if frame.lineno and 0 < frame.lineno <= len(lines):
            out.append(f"    {lines[frame.lineno - 1].strip()}")
    out.append(exception_line(exc))
    return "\\n".join(out)


def is_out_of_memory(exc):
    # MemoryError, or torch's allocator failing under the memory limit (a RuntimeError).
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text
    )


def run_answer(code, scope, source):
    # Returns (status, message, traceback, note).
    try:
        exec(code, scope)
    except SystemExit:
        return ("ok", "", "", "your code called sys.exit(); the checks ran on the state at that point")
    except BaseException as exc:
        status = "memory_limit" if is_out_of_memory(exc) else "runtime_error"
        return status, exception_line(exc), trimmed_traceback(exc, source), ""
    return "ok", "", "", ""


def flush_streams():
    # The answer may have replaced sys.stdout with anything: a broken stream is its problem.
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
"""
_isolated: dict[str, Any] = {
    "__builtins__": dict(builtins.__dict__),
    "traceback": traceback,
    "sys": sys,
    "ANSWER_FILENAME": ANSWER_FILENAME,
}
exec(compile(_ISOLATED, "<harness>", "exec"), _isolated)
_exception_line = _isolated["exception_line"]


def _compile_answer(code: str) -> tuple[Any, str | None]:
    try:
        return compile(code, ANSWER_FILENAME, "exec", dont_inherit=True), None
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        source = (exc.text or "").rstrip()
        return None, f"SyntaxError: {exc.msg} ({where})" + (f"\n    {source}" if source else "")
    except ValueError as exc:  # null bytes
        return None, _exception_line(exc)


def _observe(observe, ctx: ObserveContext, check, encode, observation_error) -> tuple:
    """Runs in an observer's thread: one check's facts as JSON text, and its tensors."""
    try:
        body: dict[str, Any] = {"facts": observe(ctx, check)}
    except observation_error as exc:
        reason = exc.reason
        body = {"error": str(exc)[:2000], "reason": reason if type(reason) is str else None}
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
        # the dtype by its one-letter code, read in C (a dtype's name is numpy's Python code)
        dtype = DTYPE_CODES.get(values.dtype.char, "?")
        tensors.append((str(name), dtype, tuple(int(n) for n in values.shape), values.tobytes()))
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
    protected: frozenset,
    main_thread: int,
    get_ident,
    identity,
    exact_type,
    error,
    refused,
):
    """The audit hook. It looks nothing up at call time: every name is a captured cell.

    Memory is refused by name: whatever path names a file `mem` (`/proc/self/mem` however
    spelt: bytes, `./`, relative to a directory descriptor) or `mem` through a link is not
    opened, and no link may be made while the answer runs. In the main thread, which
    never runs answer code on purpose, frames are refused too."""
    exact_str, exact_bytes, exact_tuple, exact_int = str, bytes, tuple, int
    ends_str, ends_bytes = str.endswith, bytes.endswith
    starts = str.startswith

    def names_memory(path) -> bool:
        kind = exact_type(path)
        if kind is exact_str:
            return path == "mem" or ends_str(path, "/mem") or ends_str(path, "/mem/")
        if kind is exact_bytes:
            return path == b"mem" or ends_bytes(path, b"/mem") or ends_bytes(path, b"/mem/")
        return kind is not exact_int  # a path-like object the hook cannot read is refused

    def hook(event: str, args: tuple) -> None:
        if not armed[0]:
            return
        if event == "sys.addaudithook":
            raise refused("audit hooks are not available to answers")  # the hook is not added
        if event in denied or starts(event, "ctypes."):
            raise error(f"{event} is not available to answers")
        if exact_type(args) is not exact_tuple:
            return
        if event == "import":
            name = args[0:1]
            if (
                name
                and exact_type(name[0]) is exact_str
                and (name[0] in GRADER or starts(name[0], GRADER_PREFIX))
            ):
                raise error("the grader's own modules are not available to answers")
        elif event == "open":
            path = args[0:1]
            if path and names_memory(path[0]):
                raise error("reading process memory is not available to answers")
        elif event in LINKS:
            raise error("making links is not available to answers")
        elif event == "object.__setattr__":
            name = args[1:2]
            if (
                name
                and exact_type(name[0]) is exact_str
                and name[0] in CODE_ATTRIBUTES
                and identity(args[0]) in protected
            ):
                raise error(
                    "changing the code of the grader or of torch is not available to answers"
                )
        if (
            event in FRAMES
            and get_ident() == main_thread
            and (event != "object.__getattr__" or args[1:2] and args[1] in FRAME_ATTRIBUTES)
        ):
            raise error("frames of the grader's main thread are not available to answers")

    GRADER = frozenset(GRADER_PACKAGES)  # noqa: N806
    GRADER_PREFIX = tuple(package + "." for package in GRADER_PACKAGES)  # noqa: N806
    CODE_ATTRIBUTES = frozenset({"__code__", "__defaults__", "__kwdefaults__"})  # noqa: N806
    LINKS = frozenset({"os.symlink", "os.link"})  # noqa: N806
    FRAMES = frozenset({"sys._getframe", "sys._getframemodulename", "object.__getattr__"})  # noqa: N806
    FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})  # noqa: N806
    return hook


DTYPE_CODES = {
    "f": "float32",
    "d": "float64",
    "l": "int64",
    "q": "int64",
    "i": "int32",
    "?": "bool",
}
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

    from contract.job import Job  # noqa: F401
    from sandboxed import integrity, introspect  # noqa: F401
    from sandboxed.observe import OBSERVERS  # noqa: F401

    # Seeding goes through torch's lazy per-device paths, which record the caller's stack
    # (reading the source of every frame) the first time: done here, once for a fork server.
    torch.manual_seed(0)
    # torch's thread count is the sandbox's (OMP_NUM_THREADS, from its CPU limit): a job's
    # `torch.set_num_threads(4)` would start pool threads that no check could tell from
    # threads the answer left running, so it changes nothing.
    torch.set_num_threads = torch._C.set_num_threads = _threads_fixed
    _grader_state()


def _threads_fixed(n: int) -> None:
    """What `torch.set_num_threads` is in a sandbox: the request is ignored."""


def make_encoder():
    """JSON text from plain values, by the C encoder (no attribute of the value is consulted)."""
    return _json.make_encoder(
        None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, True
    )


READS, RUNS_TORCH, EXECUTES_ANSWER = 0, 1, 2


def _kind_of(module) -> int:
    """What a check's observer does, which orders them: reads only, computes with torch
    (trusting it as the setup left it), or runs the answer's own code (last)."""
    if getattr(module, "EXECUTES_ANSWER", False):
        return EXECUTES_ANSWER
    return RUNS_TORCH if getattr(module, "RUNS_TORCH", False) else READS


def prepare_checks(scope: dict[str, Any], seed: int, checks: list, encode) -> tuple:
    """Each check's `prepare`, before the answer runs: (the state the checks share, the
    observers in the order they run, calls into the answer's code last, and the
    observations of the checks that could not prepare)."""
    from sandboxed import introspect
    from sandboxed.observe import OBSERVERS

    shared: dict = {}
    observers = []  # (executes the answer's code, name, observe function, check)
    observations: dict[str, str] = {}
    for check in checks:
        module = OBSERVERS[check.type]
        prepare = getattr(module, "prepare", None)
        try:
            if prepare is not None:
                prepare(ObserveContext(scope, seed, introspect, shared), check)
            observers.append((_kind_of(module), check.name, module.observe, check))
        except BaseException as exc:
            observations[check.name] = "".join(
                encode({"error": f"could not prepare: {_exception_line(exc)}"}, 0)
            )
    observers.sort(key=lambda item: item[0])
    return shared, observers, observations


class Prepared:
    """A task's setup and its checks' preparation, run once by a fork server's zygote
    (sandboxed/fork_server.py) for all the jobs it forks: each job's child starts from this
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
    from sandboxed import integrity

    # Everything the observers rely on is imported (and its accessors captured) now, before
    # the job is read: a warm sandbox waits here, blocked on stdin, with torch imported.
    if prepared is None:  # (a zygote imported it all, and seeding again would undo its setup)
        preload()
    from contract.checks.base import PROTECTED, ObservationError
    from contract.job import MAX_JOB_BYTES, Job, frame_header, ready_marker
    from sandboxed import introspect

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
    head_of, all_of, memory_view = _head, all, memoryview
    run_answer, flush_streams = _isolated["run_answer"], _isolated["flush_streams"]
    thread_main, in_isolated_thread = _isolated["thread_main"], _in_isolated_thread
    dtype_codes = dict(SAFETENSORS_DTYPES)
    base_exception, max_chars, make_context = BaseException, MAX_OBSERVATION_CHARS, ObserveContext
    thread_count, settled, gc_disable = _thread._count, _settled, gc.disable
    executes = EXECUTES_ANSWER
    copy_dict, clear_dict = dict.copy, dict.clear
    saved_builtins = dict(builtins_dict)
    # Everything a thread hands back, and every context an observer filled, stays referenced
    # here until the process exits: nothing the answer made is ever freed in the main thread
    # (so no finaliser or weakref callback of its runs here).
    kept: list = []
    keep = kept.append
    stray_threads = _stray_threads_frame(frame_start, encode, device)
    torch_before = integrity.snapshot()
    torch_changes = integrity.changes
    tampered_torch = _tampered_torch_error
    grader_before = tuple(_grader_state()) + tuple(
        integrity.namespace_entries(shared.get(PROTECTED, []))
    )
    grader_changes, grader_prims = integrity.grader_changes, integrity.GRADER_PRIMITIVES
    tampered_grader = _tampered_grader_error
    _make_undumpable()
    _forget_grader()
    hook = _guard(
        armed := [False],
        DENIED_EVENTS,
        integrity.grader_functions(grader_before)
        | integrity.torch_functions(torch_before)
        | {id(f) for f in _isolated.values() if callable(f)},
        _thread.get_ident(),
        _thread.get_ident,
        id,
        type,
        PermissionError,
        RuntimeError,
    )
    for name in [n for n in sys.modules if _is_grader_module(n)]:
        del sys.modules[name]
    baseline = thread_count()
    os_threads, os_prims = introspect.os_thread_count, introspect.OS_PRIMITIVES
    # Torch's intra-op pool may start during the answer: its threads are not the answer's.
    os_allowed = os_threads(*os_prims) + max(int(os.environ.get("OMP_NUM_THREADS") or 1) - 1, 0)
    timing = (time.monotonic, _sleep)
    sys.addaudithook(hook)
    armed[0] = True
    try:
        write(channel, ready)
        if code is not None:
            started = clock()
            box = in_isolated_thread(
                start_thread,
                new_lock,
                thread_main,
                run_answer,
                (code, scope, source),
                base_exception,
            )
            keep(box)
            timings["student_s"] = rounded(clock() - started, 4)
            if not settled(thread_count, baseline, os_threads, os_prims, os_allowed, timing):
                # A thread of the answer's still runs beside this one: write a frame made
                # before the answer started, in one call, and leave.
                write(channel, stray_threads)
                exit_now(0)
            gc_disable()  # no collection of the answer's garbage in a grader's thread
            outcome = box[0] if length(box) == 1 else None
            parts = ["runtime_error", "the answer's thread ended abnormally", "", ""]
            if exact_type(outcome) is exact_tuple and length(outcome) == 4:
                parts = [p if exact_type(p) is exact_str else "?" for p in outcome]
            # A rebound builtin must not reach the observers: the answer's values are kept
            # (so none is freed here), then the builtins are put back into an empty dict.
            keep(copy_dict(builtins_dict))
            clear_dict(builtins_dict)
            update_dict(builtins_dict, saved_builtins)
            if parts[0] != "ok":
                status = "memory_limit" if parts[0] == "memory_limit" else "runtime_error"
                error = {"message": parts[1], "traceback": parts[2]}
            if parts[3]:
                notes.append(parts[3])

        tensor_entries = []
        if code is not None and status != "memory_limit":  # out of memory: nothing to observe
            started = clock()
            changed = grader_changes(grader_before, grader_prims)
            if length(changed):
                text = "".join(
                    encode({"error": tampered_grader(changed, length), "reason": "tampered"}, 0)
                )
                for _, name, _, _ in observers:
                    observations[name] = text
                observers = []
            box = in_thread(start_thread, new_lock, torch_changes, (torch_before,), base_exception)
            keep(box)
            changed = box[0] if length(box) == 1 else None
            if exact_type(changed) is not exact_list or length(changed) != 0:
                # An answer that changed torch's own code (a method of `nn.Module`, of an
                # optimizer, a kernel) changed what training with the model does, whatever
                # its state reads as: every check fails, even those that only read.
                text = "".join(
                    encode(
                        {
                            "error": tampered_torch(changed, exact_type, exact_list, exact_str),
                            "reason": "tampered",
                        },
                        0,
                    )
                )
                for entry in observers:
                    observations[entry[1]] = text
                observers = []
            done: list = []
            for kind, name, observe, check in observers:
                ctx = make_context(scope, seed, introspect, shared)
                keep(ctx)
                box = in_thread(
                    start_thread,
                    new_lock,
                    observe_in_thread,
                    (observe, ctx, check, encode, ObservationError),
                    base_exception,
                )
                keep(box)
                if not settled(thread_count, baseline, os_threads, os_prims, os_allowed, timing):
                    write(channel, stray_threads)
                    exit_now(0)
                gc_disable()
                changed = grader_changes(grader_before, grader_prims) if kind == executes else []
                if length(changed):
                    # An observer that ran the answer's code (they run last) let it change
                    # the grader: what it and the observers after it found is not kept.
                    text = "".join(
                        encode({"error": tampered_grader(changed, length), "reason": "tampered"}, 0)
                    )
                    for _, later, _, _ in observers:
                        if later not in done:
                            observations[later] = text
                    break
                done.append(name)
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

        keep(
            in_isolated_thread(
                start_thread, new_lock, thread_main, flush_streams, (), base_exception
            )
        )
        if not settled(thread_count, baseline, os_threads, os_prims, os_allowed, timing):
            write(channel, stray_threads)
            exit_now(0)
        gc_disable()
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


def _in_isolated_thread(start, new_lock, thread_main, fn, args: tuple, base_exception) -> list:
    """fn(*args) in a new thread that starts from the isolated namespace's `thread_main`
    (no frame of the harness's below it); returns [result] or [exception] (or [] if lost)."""
    lock = new_lock()
    lock.acquire()
    box: list = []
    try:
        start(thread_main, (fn, args, box, lock.release, base_exception))
    except base_exception as exc:  # no thread could start (out of memory or threads)
        return [exc]
    lock.acquire()
    return box


def _settled(thread_count, baseline: int, os_threads, os_prims, os_allowed: int, timing) -> bool:
    """Whether only the threads there before the answer are left, within a bounded wait
    (a thread that handed back its result ends an instant later): Python's count, then the
    kernel's (a thread still clearing its state, running a finaliser, counts there). It
    looks up no global or builtin: it runs before the answer's rebound builtins are undone."""
    clock, sleep = timing
    deadline = clock() + 0.5
    while thread_count() > baseline or os_threads(*os_prims) > os_allowed:
        if clock() > deadline:
            return False
        sleep(0.0005)
    return True


def _stray_threads_frame(frame_start: bytes, encode, device: str) -> bytes:
    """The frame written when a thread the answer started is still running: made before
    the answer starts, so that the main thread writes it in one call."""
    message = (
        "your code left a thread running (or started one while it was being graded): "
        "join every thread you start before your code ends"
    )
    manifest = {
        "schema_version": 1, "status": "runtime_error",
        "error": {"message": message, "traceback": message}, "notes": [],
        "stdout": "", "stdout_bytes": 0, "stderr": "", "stderr_bytes": 0,
        "observations": {}, "timings": {}, "device": device,
    }  # fmt: skip
    body = "".join(encode(manifest, 0)).encode()
    return frame_start + f"{len(body)} 0\n".encode() + body


_GRADER_STATE: list = []


def _grader_state() -> list:
    """The grader's own state before any answer ran (`integrity.grader_snapshot`), taken once
    per process: a fork server takes it before it forks, and every job compares with it."""
    if not _GRADER_STATE:
        from sandboxed import integrity

        _GRADER_STATE.extend(
            integrity.grader_snapshot(_grader_modules(), integrity.library_modules())
        )
    return _GRADER_STATE


def _grader_modules() -> list:
    """The modules the observers run: the grader's, the harness itself included when it
    runs as `__main__` (a fork server's own code does not run again once a job started)."""
    modules = [m for n, m in sys.modules.items() if _is_grader_module(n) and n != SERVER_MODULE]
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    if spec is not None and spec.name == __spec__.name and main_module not in modules:
        modules.append(main_module)
    return modules


def _is_grader_module(name: str) -> bool:
    return name.partition(".")[0] in GRADER_PACKAGES


def _tampered_grader_error(changed: list, length) -> str:
    shown = ", ".join(changed[:4]) + (
        f" (+{length(changed) - 4} more)" if length(changed) > 4 else ""
    )
    return f"your code changed the grader's own code ({shown}): no check can be observed after that"


def _tampered_torch_error(changed, exact_type, exact_list, exact_str) -> str:
    what = "torch could not be checked"
    if exact_type(changed) is exact_list:
        names = [c for c in changed[:4] if exact_type(c) is exact_str]
        what = ", ".join(names) + (f" (+{len(changed) - 4} more)" if len(changed) > 4 else "")
    return (
        f"your code changed torch itself ({what}): that changes what training with the model "
        "does, and the checks cannot trust what torch computes, so no check passes"
    )


def _forget_grader() -> None:
    """Leave the answer no way back to the grader's code: `__main__` (the harness or the
    fork server) becomes an empty module, and no signal handler of ours stays installed."""
    main_module = types.ModuleType("__main__")
    main_module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main_module
    for sig in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, TypeError):
            handler = signal.getsignal(sig)
            if callable(handler) and handler is not signal.default_int_handler:
                signal.signal(sig, signal.SIG_DFL)


def _make_undumpable() -> None:
    """No process of the same uid (a helper the answer starts) may read this one's memory
    or attach to it: PR_SET_DUMPABLE 0."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)


def _head(read, lseek, fstat, fd: int, limit: int) -> tuple[str, int]:
    """The first `limit` bytes of a scratch file the answer wrote, decoded, and its size."""
    size = fstat(fd).st_size
    lseek(fd, 0, 0)
    data = read(fd, limit if size > limit else size) if size else b""
    return data.decode("utf-8", errors="replace"), size


if __name__ == "__main__":
    main()
