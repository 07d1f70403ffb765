"""The fast path's server: one sandbox, torch imported once, each job in a fresh forked child.

Usage inside a sandbox: `python -m sandboxed.fork_server --jobs N --cpu-s S --data-bytes B
--nproc P`. It runs as root with three capabilities (CHOWN, SETUID, SETGID) and
no-new-privileges, imports everything the harness needs, then for each job:

1. gives /tmp to a uid no process has used (a random base per sandbox, plus a
   counter), forks a child that starts a new session, drops to that uid (which clears
   every capability), applies the job's rlimits (CPU seconds, data segment, processes
   of its uid), raises its own OOM score so the kernel picks it before the server, and
   waits on a pipe for its job;
2. reads the next request from stdin: `JOB <length> <token> <shared length>`, the shared
   setup's bytes (none unless the setup is the service's own) and the job's; the token
   arrives only after the fork, so the child cannot know it; the child gets the job on
   its pipe and runs `sandboxed.harness.main()`, which writes the frame to stdout; the
   server then overwrites its copy of the job;
3. when the child exits, a helper running as the job's uid (forked by a small cleaner
   process the server started before its imports) kills every process of that uid and
   empties /tmp; then every System V IPC object, and every entry of /dev/shm and
   /dev/mqueue, that was not there when the server started is removed, whoever owns it
   now (see "Shared objects" below); the server takes /tmp back, checks that no process
   of the uid remains, that /tmp holds what it held and that the IPC objects and shared
   entries are exactly those it started with, and writes
   `\\nGRADER-JOB-END <token> <fields>\\n`.

A job that hit a limit (its child killed or exiting non-zero: the harness exits with
`LIMIT_EXIT` after a memory or output limit) or left anything it could not clean ends
the server after its end line (`recycle=1`), as does the last of its N jobs: the host
then replaces the whole sandbox. The server itself never runs a line of any answer, and no
process of one job is alive, nor any of its files or IPC objects left, when the next
job's child is given its uid.

With `--zygotes N`, a job sent with a shared setup is forked instead from a zygote that
ran that setup once (see "Zygotes" below); its child is made as in step 1, the same
clean-up and end line follow.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import resource
import secrets
import shutil
import signal
import stat
import sys
import time

from contract.fork_wire import MAX_REQUEST_LINE, end_line, parse_request_header
from contract.job import MAX_JOB_BYTES

SCRATCH = "/tmp"
SHARED_DIRS = ("/dev/shm", "/dev/mqueue")
SYSV_IPC = ("/proc/sysvipc/shm", "/proc/sysvipc/msg", "/proc/sysvipc/sem")
OOM_CONTROL = (
    "/sys/fs/cgroup/memory/memory.oom_control",  # cgroup v1
    "/sys/fs/cgroup/memory.events",  # cgroup v2
)
UID_LOW, UID_HIGH = 1 << 20, 1 << 30  # far above any uid an image or a host assigns
PR_SET_DUMPABLE = 4
KILL_ROUNDS = 1000  # with 2 ms between rounds: 2 s or more
IPC_RMID = 0  # <sys/ipc.h>
SharedObjects = frozenset[tuple[str, str, str]]  # see "Shared objects" below


def _read_line(fd: int) -> bytes | None:
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte or len(line) > MAX_REQUEST_LINE:
            return None
        line += byte
    return bytes(line[:-1])


def _read_exact(fd: int, size: int) -> bytearray | None:
    """`size` bytes, read into one buffer of that size (no copies left behind: see _wipe)."""
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if not count:
            view.release()
            _wipe(data)
            return None
        got += count
    view.release()
    return data


def _wipe(data: bytearray) -> None:
    """Overwrite a job's bytes in place once delivered: a process forked later (the next
    job's child, a zygote) must not find one answer's code in the memory it inherits."""
    data[:] = bytes(len(data))


def _read_request(fd: int) -> tuple[str, bytes, bytearray] | None:
    """The next request: its token, the setup it may share (or b""), and its job, read
    byte-exact; None at the end or on a malformed request."""
    line = _read_line(fd)
    header = parse_request_header(line) if line is not None else None
    if header is None:
        return None
    length, token, shared_length = header
    if length > MAX_JOB_BYTES or shared_length > MAX_JOB_BYTES:
        return None
    shared = _read_exact(fd, shared_length)
    job = _read_exact(fd, length) if shared is not None else None
    return (token, bytes(shared), job) if shared is not None and job is not None else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _oom_kills() -> int:
    for path in OOM_CONTROL:
        with contextlib.suppress(OSError, ValueError), open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


def _become(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to a plain uid: every capability is gone


def _set_dumpable() -> None:
    """Changing uid marks a process undumpable, which hides its own /proc files from it;
    a child of a fresh sandbox would see them, so this one does too."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def _child(job_fd: int, uid: int, args: argparse.Namespace, prepared, settled: int) -> None:
    """The job's process: its own session, uid and limits, in /tmp (then a byte on `settled`);
    then the harness (from a zygote: with its setup done). Never returns."""
    try:
        os.setsid()
        os.dup2(job_fd, 0)
        os.dup2(settled, 3)
        os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        with open(f"/proc/{os.getpid()}/oom_score_adj", "w") as f:
            f.write("1000")  # under memory pressure the kernel kills the job, not the server
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        _become(uid)
        _set_dumpable()
        resource.setrlimit(resource.RLIMIT_CPU, (args.cpu_s, args.cpu_s))
        resource.setrlimit(resource.RLIMIT_DATA, (args.data_bytes, args.data_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (args.nproc, args.nproc))
        os.chdir(SCRATCH)
        os.write(3, b"1")
        os.close(3)
        from sandboxed import harness

        harness.main(prepared)
    finally:
        os._exit(70)


class _Cleaner:
    """A small process, forked before the server imports torch, that runs each job's
    clean-up helper: forking it copies a few megabytes, where a fork of the server would
    copy the page tables of a gigabyte, once more per job."""

    def __init__(self, baseline: SharedObjects) -> None:
        requests_in, self._requests = os.pipe()
        self._results, results_out = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(self._requests)
                os.close(self._results)
                with os.fdopen(requests_in, "rb", buffering=0) as requests:
                    for line in requests:
                        os.write(results_out, b"1" if _clean(int(line), baseline) else b"0")
                code = 0
            finally:
                os._exit(code)
        os.close(requests_in)
        os.close(results_out)

    def clean(self, uid: int) -> bool:
        """Kill every process of `uid`, remove its files and every shared object not in the
        baseline; False if killing or emptying /tmp failed."""
        _write_all(self._requests, b"%d\n" % uid)
        return os.read(self._results, 1) == b"1"

    def close(self) -> None:
        os.close(self._requests)  # the cleaner reads the end of its requests and exits
        os.close(self._results)
        os.waitpid(self.pid, 0)


def _clean(uid: int, baseline: SharedObjects) -> bool:
    """In the cleaner: `uid`'s processes and files, then every shared object not in
    `baseline`, as `uid` (which created what a job left) and then as root."""
    cleaned = _clean_as(uid, baseline)
    _remove_shared(baseline, os.getuid())
    return cleaned


def _clean_as(uid: int, baseline: SharedObjects) -> bool:
    """In a helper running as `uid`: kill all its processes, remove all its files and the
    shared objects not in `baseline` that it may remove."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _become(uid)
            me = os.getpid()
            for _ in range(KILL_ROUNDS):
                # kill(-1) reaches every process this uid may signal, but it succeeds even
                # when that is none: /proc says when none is left.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(-1, signal.SIGKILL)
                if not [pid for pid in _processes_of(uid) if pid != me]:
                    break
                time.sleep(0.002)
            else:
                os._exit(1)
            _empty(SCRATCH, uid)
            _remove_shared(baseline, uid)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _layout(directory: str) -> dict[str, tuple[int, int, int]]:
    """The entries a directory holds, by name: inode, owner, mode. /tmp may hold the
    mount points of a runtime that lives under /tmp on the host."""
    found = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                found[entry.name] = (info.st_ino, info.st_uid, info.st_mode)
    return found


def _empty(directory: str, uid: int, keep: frozenset[str] = frozenset()) -> None:
    """Remove every entry of `directory` that `uid` owns, except the names in `keep`."""

    def writable_again(function, path, _exc) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            function(path)

    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if info.st_uid != uid or entry.name in keep:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    os.chmod(entry.path, 0o700)
                    shutil.rmtree(entry.path, onerror=writable_again)
                else:
                    os.unlink(entry.path)


def _processes_of(uid: int) -> list[int]:
    """The live (not zombie) processes whose real uid is `uid`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, KeyError, ValueError):
            with open(f"{entry.path}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            if status["State"].split()[0] not in "ZX" and int(status["Uid"].split()[0]) == uid:
                found.append(int(entry.name))
    return found


def _leftovers(
    uid: int, layout: dict[str, tuple[int, int, int]], baseline: SharedObjects
) -> list[str]:
    """What survived a job's clean-up: a process of `uid`, a change to what /tmp held when
    the sandbox started, or any difference from the shared objects it started with."""
    left = [f"process {pid}" for pid in _processes_of(uid)]
    now = _layout(SCRATCH)
    left += [f"file {SCRATCH}/{name}" for name in now if name not in layout]
    if {name: now.get(name) for name in layout} != layout:
        left.append(f"a change to {SCRATCH}'s own entries")
    objects = _shared_objects()
    left += [_describe(thing) for thing in sorted(objects - baseline)]
    left += [f"the removal of {_describe(thing)}" for thing in sorted(baseline - objects)]
    return left


# Shared objects: what one job could leave for the next through the container's own IPC
# namespace and its two shared file systems: System V shared memory, message queues and
# semaphore sets (as `(kind, id, key)`), and the entries of /dev/shm and /dev/mqueue (as
# `(directory, name, inode)`). The server lists them before its first job; after each job
# every other one is removed, whoever owns it now. Removing one needs no capability, only
# to be its owner or creator (System V) or the owner of the entry (sticky directories):
# a job can hand a System V object to another uid with IPC_SET, but its creator stays the
# job's uid, and without CHOWN it cannot give away a file; what the server or a zygote's
# setup made is root's. So the job's uid, then root, can remove each one that a job, a
# zygote or the server left, and anything else is a leftover: the container is replaced.


def _sysv_lines(table: str) -> list[str]:
    """The rows of a /proc/sysvipc table, its header left out (none if it cannot be read)."""
    with contextlib.suppress(OSError), open(table) as f:
        return f.read().splitlines()[1:]
    return []


def _sysv_objects() -> list[tuple[str, str, str]]:
    """Every System V IPC object of the namespace as (kind, id, key): each table's first
    two columns are the key and the id."""
    found = []
    for table in SYSV_IPC:
        for words in map(str.split, _sysv_lines(table)):
            if len(words) >= 2:
                found.append((os.path.basename(table), words[1], words[0]))
    return found


def _shared_objects() -> SharedObjects:
    """The System V objects and shared entries there are now."""
    return frozenset(
        _sysv_objects()
        + [
            (directory, name, str(inode))
            for directory in SHARED_DIRS
            for name, (inode, _, _) in _layout(directory).items()
        ]
    )


def _describe(thing: tuple[str, str, str]) -> str:
    kind, name, _ = thing
    return f"file {kind}/{name}" if kind in SHARED_DIRS else f"ipc {kind} {name}"


def _remove_shared(baseline: SharedObjects, uid: int) -> None:
    """Remove every shared object not in `baseline` that this process (running as `uid`)
    may remove; the others refuse (EPERM), and the leftover check sees what remains."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    remove = {
        "shm": lambda id_: libc.shmctl(id_, IPC_RMID, None),
        "msg": lambda id_: libc.msgctl(id_, IPC_RMID, None),
        "sem": lambda id_: libc.semctl(id_, 0, IPC_RMID),
    }
    for thing in _sysv_objects():
        kind, name, _ = thing
        if thing not in baseline and name.isdigit():
            remove[kind](int(name))
    for directory in SHARED_DIRS:
        keep = frozenset(name for kind, name, _ in baseline if kind == directory)
        _empty(directory, uid, keep=keep)


def serve(args: argparse.Namespace) -> int:
    baseline = _shared_objects()  # before anything ran: what every job must leave as it is
    cleaner = _Cleaner(baseline)  # forked first, while this process is still small
    try:
        return _serve(args, cleaner, baseline)
    finally:
        cleaner.close()


def _give_scratch(uid: int) -> None:
    """/tmp to `uid` alone (taken back first: a job may have changed its mode)."""
    os.chown(SCRATCH, 0, 0)
    os.chmod(SCRATCH, 0o700)
    os.chown(SCRATCH, uid, uid)


def _fork_child(uid: int, args: argparse.Namespace, prepared=None) -> tuple[int, int]:
    """A job's child under `uid`, waiting for its job: (pid, the write end of its job pipe).
    Returns once the child is in /tmp, so /tmp may then change hands before its job."""
    _give_scratch(uid)
    read_end, write_end = os.pipe()
    settled_in, settled_out = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_end)
        os.close(settled_in)
        _child(read_end, uid, args, prepared, settled_out)
    os.close(read_end)
    os.close(settled_out)
    os.read(settled_in, 1)  # a byte once it is in /tmp; end-of-file if it died first
    os.close(settled_in)
    return pid, write_end


def _deliver(write_end: int, job: bytearray) -> None:
    """The job to its child, which may have died meanwhile (its exit status will say)."""
    with _no_sigpipe(), contextlib.suppress(BrokenPipeError):
        _write_all(write_end, job)
    os.close(write_end)


def _serve(args: argparse.Namespace, cleaner: _Cleaner, baseline: SharedObjects) -> int:
    # Everything a job needs is imported now, once: each child starts with it done.
    from sandboxed import harness

    layout = _layout(SCRATCH)  # before anything ran: only mount points, if anything
    harness.preload()
    _empty(SCRATCH, os.getuid(), keep=frozenset(layout))  # what the imports wrote (a cache dir)
    # A uid no process has used for every child: at most one per job, one more per zygote
    # found gone, and one for a child left waiting.
    span = 2 * args.jobs + 2
    base = UID_LOW + secrets.randbelow(UID_HIGH - UID_LOW - span)
    uids = iter(range(base, base + span))
    # What the server holds now (torch's modules: a million objects) is never collected by a
    # child: a child's first full collection would otherwise walk and write to all of it, a
    # fifth of a second and a copy of every page it touches, in every job.
    gc.collect()
    gc.freeze()
    zygotes = _Zygotes(args.zygotes)
    waiting: tuple[int, int, int] | None = None  # a job's child, forked before its request
    seed: _Seed | None = None  # a process that may become a zygote, forked before the request
    try:
        for number in range(args.jobs):
            if waiting is None:
                uid = next(uids)
                waiting = (*_fork_child(uid, args), uid)
            if seed is None and zygotes.limit:
                seed = _Seed(args)
            request = _read_request(0)
            if request is None:  # the host is gone, or spoke out of turn: nothing more to serve
                pid, _, uid = waiting
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                cleaner.clean(uid)
                return 0
            token, shared, job = request
            del request
            try:
                status, uid, lost = None, 0, False
                key = zygotes.key_of(shared)
                zygote = zygotes.get(key) if key is not None else None
                if zygote is None and seed is not None and zygotes.may_start(key):
                    # /tmp as the server had it for its imports: the runtime may be mounted
                    # under it; what the setup writes there is checked and removed
                    os.chown(SCRATCH, 0, 0)
                    os.chmod(SCRATCH, 0o711)
                    zygote, seed = seed.become(shared), None
                    zygotes.add(key, zygote)
                # Counted from here: a kill before the job (a zygote's setup out of memory,
                # say) is not the job's doing.
                oom_before = _oom_kills()
                if zygote is not None:
                    uid = next(uids)  # the zygote gives it /tmp as it forks the child
                    if zygote.deliver(uid, job):
                        status = zygote.wait()
                        if status is None:  # the zygote died: the job's end is unknown
                            zygotes.drop(key)
                            status, lost = signal.SIGKILL, True
                    else:  # it was gone before the job: the waiting child takes it
                        zygotes.drop(key)
                if status is None:
                    pid, write_end, uid = waiting
                    waiting = None
                    ended, status = os.waitpid(pid, os.WNOHANG)
                    lost = ended != 0  # it died waiting (killed out of memory): not the job
                    if not lost:
                        _give_scratch(uid)
                        _deliver(write_end, job)
                        _, status = os.waitpid(pid, 0)
                    else:
                        os.close(write_end)
            finally:
                _wipe(job)
                del job
            cleaned = cleaner.clean(uid)
            os.chown(SCRATCH, 0, 0)  # back to the server, which can now list what is left
            left = _leftovers(uid, layout, baseline)
            oom_now = _oom_kills()
            code = os.waitstatus_to_exitcode(status)
            fields = {
                "job": number + 1,
                "exit": code if code >= 0 else 128 - code,  # as a shell reports a signal
                "signal": -code if code < 0 else 0,
                "oom": int(oom_now > oom_before),
                "clean": int(cleaned and not left),
            }
            if lost:  # the host grades nothing of it: the sandbox failed, not the answer
                fields["lost"] = 1
            # A job that hit a limit (killed, out of memory, too much output: a non-zero exit)
            # or left something behind is the sandbox's last, as is the last of its N.
            recycle = fields["oom"] or not fields["clean"] or code != 0 or number + 1 == args.jobs
            fields["recycle"] = int(bool(recycle))
            if left:
                print(f"fork server: job {number + 1} left {', '.join(left[:5])}", file=sys.stderr)
            _write_all(1, end_line(token, fields))
            if recycle:
                return 0
        return 0
    finally:
        zygotes.close()
        if seed is not None:
            seed.close()


# Zygotes: a setup the service ships (a task bank's: the host sends it apart from the job,
# with the task's checks) runs once per sandbox, in a zygote forked from the server, and the
# checks are prepared after it (a training loop's batches copied, its loss measured, its
# instrumentation installed); each job of that setup and those checks is forked from the
# zygote: its child starts where the setup and the preparation left off, as it would have
# after running them. A zygote is as trusted as the server (it runs no line of any answer and never
# holds one, only the service's own setup code), runs as root like it, and forks each job's
# child exactly as the server does: a fresh uid, its own session, rlimits, scratch; the same
# clean-up follows. A setup that fails, prints, starts a thread or a process, keeps a file
# open, maps shared memory or writes a file is not shared: its jobs run it themselves.
ZYGOTE_OOM_SCORE = 500  # the kernel picks a job (1000) first, then a zygote, not the server


def _keep_only(*fds: int) -> None:
    """Close every descriptor but stdout, stderr and `fds`; stdin reads nothing."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def _no_sigpipe():
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGPIPE, previous)


class _Seed:
    """A process forked from the server before it reads a request (so it holds no request's
    token, and no answer: the server wipes each job once delivered), waiting to become a
    zygote; it is only ever sent a setup, never a job, before it is one."""

    def __init__(self, args: argparse.Namespace) -> None:
        commands_in, self._commands = os.pipe()
        self._results, results_out = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                _keep_only(commands_in, results_out)
                _zygote(commands_in, results_out, args)
            finally:
                os._exit(0)
        os.close(commands_in)
        os.close(results_out)

    def become(self, shared: bytes) -> _Zygote | None:
        """Run the setup in the seed: a zygote, or None when the setup is not shared."""
        with _no_sigpipe(), contextlib.suppress(BrokenPipeError):
            _write_all(self._commands, b"%d\n" % len(shared) + shared)
        answer = _read_line(self._results) or b"DECLINED the zygote ended"
        if answer == b"READY":
            return _Zygote(self.pid, self._commands, self._results)
        reason = answer.removeprefix(b"DECLINED ").decode(errors="replace")
        print(f"fork server: setup not shared: {reason}", file=sys.stderr)
        self.close()
        return None

    def close(self) -> None:
        os.close(self._commands)  # it reads the end of its commands and exits
        os.close(self._results)
        os.waitpid(self.pid, 0)


class _Zygote(_Seed):
    def __init__(self, pid: int, commands: int, results: int) -> None:
        self.pid, self._commands, self._results = pid, commands, results

    def deliver(self, uid: int, job: bytearray) -> bool:
        """Send a job to be forked under `uid`; False if the zygote is gone."""
        try:
            with _no_sigpipe():
                _write_all(self._commands, b"%d %d\n" % (uid, len(job)))
                _write_all(self._commands, job)
        except BrokenPipeError:
            return False
        return True

    def wait(self) -> int | None:
        """The job's wait status, or None if the zygote died first."""
        answer = _read_line(self._results)
        return int(answer) if answer and answer.isdigit() else None


class _Zygotes:
    """The server's zygotes by setup, the least recently used closed beyond `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live: dict[str, _Zygote] = {}  # in order of use
        self.declined: set[str] = set()

    def key_of(self, shared: bytes) -> str | None:
        if not (self.limit and shared):
            return None
        return hashlib.sha256(shared).hexdigest()

    def may_start(self, key: str | None) -> bool:
        return key is not None and key not in self.declined

    def get(self, key: str) -> _Zygote | None:
        zygote = self.live.pop(key, None)
        if zygote is not None:
            self.live[key] = zygote
        return zygote

    def add(self, key: str, zygote: _Zygote | None) -> None:
        if zygote is None:
            self.declined.add(key)
            return
        self.live[key] = zygote
        while len(self.live) > self.limit:
            self.drop(next(iter(self.live)))

    def drop(self, key: str) -> None:
        zygote = self.live.pop(key, None)
        if zygote is not None:
            zygote.close()

    def close(self) -> None:
        for key in list(self.live):
            self.drop(key)


def _pids() -> set[int]:
    return {int(name) for name in os.listdir("/proc") if name.isdigit()}


def _shared_mappings() -> set[str]:
    """Writable shared mappings: what a fork would share between the zygote and its jobs."""
    with open("/proc/self/maps") as f:
        lines = [(line.strip(), line.split()[1]) for line in f]
    return {line for line, perms in lines if perms[1] == "w" and perms[3] == "s"}  # rw-s


def _ipc_objects() -> list[str]:
    return [line for table in SYSV_IPC for line in _sysv_lines(table)]


SETUP_DIRS = (SCRATCH, *SHARED_DIRS)  # where a setup could leave a file for its jobs


def _state() -> tuple:
    """What a setup must leave as it found it to be shared, besides its own objects."""
    return (
        set(os.listdir("/proc/self/fd")),
        _shared_mappings(),
        _ipc_objects(),
        *(_layout(path) for path in SETUP_DIRS),
    )


def _undo(before: tuple, pids_before: set[int]) -> bool:
    """Kill the processes a setup started and remove the files it left in the shared
    directories and /tmp; whether any process was found."""
    started = False
    for _ in range(KILL_ROUNDS):
        new = _pids() - pids_before - {os.getpid()}
        if not new:
            break
        started = True
        for pid in new:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        time.sleep(0.002)
    for path, layout in zip(SETUP_DIRS, before[3:], strict=True):
        _empty(path, os.getuid(), keep=frozenset(layout))
    return started


def _zygote(commands: int, results: int, args: argparse.Namespace) -> None:
    """In a seed: wait for a setup, run it, then fork a child for each job sent."""
    header = _read_line(commands)
    if header is None or not header.isdigit() or int(header) > MAX_JOB_BYTES:
        return
    shared = _read_exact(commands, int(header))
    if shared is None:
        return
    from sandboxed import harness

    with open(f"/proc/{os.getpid()}/oom_score_adj", "w") as f:
        f.write(str(ZYGOTE_OOM_SCORE))
    fields = json.loads(bytes(shared))
    setup, seed, device = str(fields["setup"]), int(fields["seed"]), str(fields["device"])
    from pydantic import TypeAdapter

    from contract.checks import CheckSpec

    checks = TypeAdapter(list[CheckSpec]).validate_python(fields.get("checks", []))
    output = os.memfd_create("setup-output")
    saved = os.dup(1), os.dup(2)
    before, pids_before = _state(), _pids()
    os.dup2(output, 1)
    os.dup2(output, 2)
    prepared, unprepared = None, ""
    try:
        status, error, scope = harness.run_setup(setup, seed, device)
        if status == "ok" and device == "cpu":  # the checks' preparation is shared with it
            try:
                prepared = harness.Prepared(setup, seed, device, checks, scope)
            except Exception as exc:
                unprepared = f"the checks' preparation failed: {exc!r}"[:200]
            else:  # under a job's own limits it might not fail: let each job prepare them
                if prepared.observations:
                    unprepared = f"a check could not be prepared: {sorted(prepared.observations)}"
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
    changed = _state() != before
    started = _undo(before, pids_before)  # what the setup started or left goes, shared or not
    reason = ""
    if status != "ok":
        reason = f"the setup failed: {(error or {}).get('message', '')}"[:200]
    elif device != "cpu":
        reason = "CUDA does not survive a fork"
    elif unprepared:
        reason = unprepared[:200]
    elif os.fstat(output).st_size:
        reason = "the setup or the checks' preparation printed"
    elif len(os.listdir("/proc/self/task")) > 1:
        reason = "the setup or the checks' preparation started a thread"
    elif started:
        reason = "the setup or the checks' preparation started a process"
    elif changed:
        reason = (
            "the setup or the checks' preparation left a file open, a shared mapping,"
            " a shared file or an IPC object"
        )
    if reason:
        _write_all(results, b"DECLINED " + reason.encode() + b"\n")
        return
    for fd in (output, *saved):
        os.close(fd)
    del scope, fields
    gc.collect()
    gc.freeze()  # as in the server: no child walks what the setup built
    _write_all(results, b"READY\n")
    while (header := _read_line(commands)) is not None:
        words = header.split()
        if len(words) != 2 or not all(word.isdigit() for word in words):
            return
        uid, length = int(words[0]), int(words[1])
        job = _read_exact(commands, length)
        if job is None:
            return
        try:
            pid, write_end = _fork_child(uid, args, prepared)
            _deliver(write_end, job)
        finally:
            _wipe(job)
            del job
        _, status = os.waitpid(pid, 0)
        _write_all(results, b"%d\n" % status)


def main() -> None:
    parser = argparse.ArgumentParser(prog="sandboxed.fork_server")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--cpu-s", type=int, required=True)
    parser.add_argument("--data-bytes", type=int, required=True)
    parser.add_argument("--nproc", type=int, required=True)
    parser.add_argument("--zygotes", type=int, default=0, help="setups kept run, at most")
    args = parser.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(serve(args))


if __name__ == "__main__":
    main()
