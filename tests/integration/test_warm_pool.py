"""Warm sandboxes: each job gets one started before it, used once, replaced, and nothing of it
reaches the next; the adversarial attacks are contained by pooled sandboxes as by cold ones;
closing the pool leaves no container, process or scratch dir behind.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from graders.result import GradeResult
from sandbox.base import RunRequest
from sandbox.docker_backend import BACKEND_LABEL, DockerBackend, engine_answers
from sandbox.docker_sandbox import DockerSandbox
from sandbox.errors import SandboxError
from sandbox.pool import WARM_LABEL, WarmPool
from sandbox.process_backend import ProcessSandbox
from services.answers import Answer
from services.grading import grade, run_code, sandbox_limits
from services.taskbank import get_task, load_spec_file, shipped_setups
from services.validation import validate
from tests.adversarial.test_attacks import (
    ATTACKS,
    MARKER,
    assert_contained,
    children_of_this_process,
    processes_with,
    raced,
    spec_for,
)
from tests.conftest import require_or_skip

SPEC_PATH = Path(__file__).parent.parent / "adversarial" / "specs" / "freeze-attacks.yaml"
CORRECT = "model.requires_grad_(False)\n"
WARM_WAIT_S = 120

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def spec():
    return load_spec_file(SPEC_PATH)


@pytest.fixture(scope="module")
def limits(spec):
    return sandbox_limits(spec, gpu=False)


@pytest.fixture(scope="module")
def expected(spec, settings, process_backend):
    report = validate(spec, backend=process_backend, settings=settings)
    assert report.ok, report.text()
    return report.expected


@pytest.fixture(scope="module", params=["process", "docker"])
def pool(request, spec, settings, process_backend, limits, canary, scratch_root):
    """A pool of one warm sandbox per set of limits, over each isolating backend."""
    if request.param == "docker":
        require_or_skip(engine_answers(), "Docker engine")
        backend = DockerBackend.from_settings(settings)
    else:
        # Without bubblewrap the process backend is for trusted code only: no attacks on it.
        require_or_skip(bool(process_backend.bwrap), "bubblewrap (bwrap)")
        backend = process_backend
    # The attacks that end at a limit of their own run under a longer time limit: a sandbox
    # for those limits waits too.
    pool = WarmPool(backend, 1, prewarm=(limits, sandbox_limits(raced(spec), gpu=False)))
    assert pool.wait_warm(limits, WARM_WAIT_S)
    yield pool
    pool.close()
    assert pool.waiting() == []
    assert_only_waiting_left(pool, scratch_root)


def run(pool, spec, expected, settings, code: str) -> GradeResult:
    return grade(spec, Answer(code=code), backend=pool, expected=expected, settings=settings)


def assert_only_waiting_left(pool: WarmPool, scratch_root: Path) -> None:
    """Nothing of a finished job remains: only the sandboxes still waiting for one."""
    waiting = pool.waiting()
    assert processes_with(MARKER) == []
    if isinstance(pool.backend, DockerBackend):
        found = pool.backend.client.containers(
            all=True, filters={"label": f"{BACKEND_LABEL}={pool.backend.instance_id}"}
        )
        containers = {s.container for s in waiting if isinstance(s, DockerSandbox)}
        assert {c["Id"] for c in found} <= containers
    else:  # only a process pool starts local sandboxes; another pool of this file may hold
        # some of its own while a Docker pool is torn down
        processes = {s.proc.pid for s in waiting if isinstance(s, ProcessSandbox)}
        scratches = {s.scratch for s in waiting if isinstance(s, ProcessSandbox)}
        assert set(children_of_this_process()) <= processes
        assert {str(p) for p in scratch_root.glob("grader-sandbox-*")} <= scratches


def test_a_job_takes_the_waiting_sandbox_and_a_fresh_one_replaces_it(
    pool, spec, expected, settings, limits, scratch_root
):
    assert pool.wait_warm(limits, WARM_WAIT_S)
    [before] = pool.waiting(limits)
    assert before.alive()
    result = run(pool, spec, expected, settings, CORRECT)
    assert (result.outcome, result.score) == ("passed", result.max_score), result.error
    assert not before.alive(), "the sandbox that ran the job was not removed"
    assert pool.wait_warm(limits, WARM_WAIT_S)
    [after] = pool.waiting(limits)
    assert after is not before and after.alive()
    assert_only_waiting_left(pool, scratch_root)


@pytest.mark.parametrize("pool", ["docker"], indirect=True)  # labels are Docker's
def test_warm_containers_are_locked_down_and_labelled_for_the_sweep(pool, limits):
    assert pool.wait_warm(limits, WARM_WAIT_S)
    [sandbox] = pool.waiting(limits)
    details = pool.backend.client.inspect_container(sandbox.container)
    host, labels = details["HostConfig"], details["Config"]["Labels"]
    assert details["State"]["Running"] and details["Config"]["User"] == "65534:65534"
    assert host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"]
    assert host["Memory"] == host["MemorySwap"] == limits.memory_bytes
    assert labels[WARM_LABEL] == "1" and labels[BACKEND_LABEL] == pool.backend.instance_id
    assert float(labels["grader.expires"]) > time.time() + pool.max_idle_s
    assert_ipc_bounded(host, limits)


def assert_ipc_bounded(host: dict, limits) -> None:
    """The container's own IPC namespace, its System V memory within the job's limit."""
    sysctls = host["Sysctls"]
    assert host["IpcMode"] == "private" and sysctls["kernel.shm_rmid_forced"] == "1"
    assert int(sysctls["kernel.shmmax"]) <= limits.memory_bytes
    assert int(sysctls["kernel.shmall"]) * os.sysconf("SC_PAGE_SIZE") <= limits.memory_bytes
    assert int(sysctls["kernel.msgmnb"]) * int(sysctls["kernel.msgmni"]) <= limits.memory_bytes


def test_a_sandbox_runs_one_job_only(pool, spec, expected, settings, limits):
    assert pool.wait_warm(limits, WARM_WAIT_S)
    [sandbox] = pool.waiting(limits)
    run(pool, spec, expected, settings, CORRECT)
    with pytest.raises(SandboxError, match="one job"):
        sandbox.run(RunRequest(stdin=b"{}", limits=limits))
    assert pool.wait_warm(limits, WARM_WAIT_S)


def test_nothing_of_one_job_reaches_the_next(pool, spec, expected, settings, limits):
    name = f"left_{uuid.uuid4().hex[:8]}"
    first = run(
        pool, spec, expected, settings,
        f"import os, subprocess, sys, torch\nopen('/tmp/{name}', 'w').write('x')\n"
        f"os.environ['{name}'] = '1'\ntorch.{name} = 1\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', {MARKER!r}],"
        " start_new_session=True)\nprint('LEFT')\n",
    )  # fmt: skip
    assert "LEFT" in first.stdout, first.error
    assert pool.wait_warm(limits, WARM_WAIT_S)
    second = run(
        pool, spec, expected, settings,
        f"import os, torch\nprint(os.path.exists('/tmp/{name}'), '{name}' in os.environ,"
        f" hasattr(torch, '{name}'), 'SEEN')\n",
    )  # fmt: skip
    assert "False False False SEEN" in second.stdout, second.stdout
    assert processes_with(MARKER) == []


def test_a_sandbox_that_died_waiting_is_not_handed_a_job(pool, spec, expected, settings, limits):
    assert pool.wait_warm(limits, WARM_WAIT_S)
    [sandbox] = pool.waiting(limits)
    if isinstance(sandbox, DockerSandbox):
        pool.backend.client.kill(sandbox.container)
    else:
        os.killpg(sandbox.proc.pid, 9)
        sandbox.proc.wait()
    result = run(pool, spec, expected, settings, CORRECT)
    assert (result.outcome, result.score) == ("passed", result.max_score), result.error
    assert pool.wait_warm(limits, WARM_WAIT_S)


# What a sandbox started ahead of its job adds to a cold one: the pool's own state (a
# replacement to start, the other waiting sandboxes, what the host keeps of each). The attacks
# that end their sandbox at a limit or leave something behind test that; those that work
# inside the process (frames, ctypes, patches) meet the same harness as in a cold sandbox,
# where tests/adversarial runs every attack on every backend.
WARM_ATTACKS = [
    next(a for a in ATTACKS if a.id == attack_id)  # a renamed attack fails here, not silently
    for attack_id in (
        "infinite-loop",
        "memory-bomb",
        "output-flood",
        "channel-flood",
        "disk-fill",
        "fork-bomb",
        "fd-exhaustion",
        "read-secrets",
        "find-socket-and-reference",
        "write-outside-scratch",
        "ignore-sigterm",
        "setsid-daemon",
        "zombies",
        "kill-init",
        "sys-exit",
        "forged-stdout",
    )
]


@pytest.mark.parametrize("attack", WARM_ATTACKS, ids=[a.id for a in WARM_ATTACKS])
def test_attack_in_a_warm_sandbox_is_contained(
    attack, pool, spec, expected, settings, canary, limits, scratch_root
):
    attack_spec = spec_for(attack, pool.name, spec)
    attack_limits = sandbox_limits(attack_spec, gpu=False)
    assert pool.wait_warm(attack_limits, WARM_WAIT_S)
    result = run(pool, attack_spec, expected, settings, attack.code)
    assert_contained(result, attack, pool.name, canary)
    assert pool.wait_warm(attack_limits, WARM_WAIT_S)
    assert_only_waiting_left(pool, scratch_root)


def test_a_job_under_other_limits_gets_a_sandbox_of_its_own(pool, spec, expected, settings, limits):
    other = spec.model_copy(update={"limits": spec.limits.model_copy(update={"cpus": 0.5})})
    assert pool.wait_warm(limits, WARM_WAIT_S)
    [sandbox] = pool.waiting(limits)
    result = run(pool, other, expected, settings, CORRECT)
    assert (result.outcome, result.score) == ("passed", result.max_score), result.error
    assert sandbox.alive(), "a sandbox started under other limits ran the job"


@pytest.fixture(scope="module")
def fork_pool(settings, limits, canary, scratch_root):
    """The fast path: one warm fork server that serves three jobs, then is replaced."""
    require_or_skip(engine_answers(), "Docker engine")
    pool = WarmPool(DockerBackend.from_settings(settings), 1, prewarm=(limits,), jobs=3)
    assert pool.wait_warm(limits, WARM_WAIT_S)
    yield pool
    pool.close()
    assert pool.waiting() == []
    assert_only_waiting_left(pool, scratch_root)


def server_with_jobs_left(fork_pool, spec, expected, settings, limits, jobs: int):
    """The waiting fork server, once it has `jobs` jobs left (an earlier test may have used
    some of them: correct answers use them up until a fresh server waits)."""
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)
    [server] = fork_pool.waiting()
    while server.jobs_left < jobs:
        run(fork_pool, spec, expected, settings, CORRECT)
        assert fork_pool.wait_warm(limits, WARM_WAIT_S)
        [server] = fork_pool.waiting()
    return server


WHO = "import os\nprint('WHO', os.getuid(), os.getgid(), os.getgroups(), os.getsid(0) == os.getpid())\n"


def test_a_fork_server_runs_each_job_under_a_fresh_uid_then_is_replaced(
    fork_pool, spec, expected, settings, limits, scratch_root
):
    server = server_with_jobs_left(fork_pool, spec, expected, settings, limits, 3)
    seen = []
    for _ in range(3):
        result = run(fork_pool, spec, expected, settings, WHO)
        uid, gid, groups, leader = result.stdout.split("WHO ")[1].split(" ", 3)
        assert (groups, leader.strip(), uid) == ("[]", "True", gid), result.stdout
        assert int(uid) not in (0, 65534)
        seen.append(int(uid))
    assert len(set(seen)) == 3
    assert not server.alive(), "the server was not replaced after its last job"
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)
    [fresh] = fork_pool.waiting()
    assert fresh is not server and fresh.alive()
    assert_only_waiting_left(fork_pool, scratch_root)


@pytest.mark.parametrize(
    "code,outcome",
    [("while True:\n    pass\n", "time_limit"), ("x = b'x' * (8 * 2**30)\n", "memory_limit")],
    ids=["time-limit", "memory-limit"],
)
def test_a_fork_server_is_replaced_after_a_job_that_hit_a_limit(
    code, outcome, fork_pool, spec, expected, settings, limits, scratch_root
):
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)
    [server] = fork_pool.waiting()
    result = run(fork_pool, spec, expected, settings, code)
    assert result.outcome == outcome, result.model_dump_json(exclude={"stdout", "stderr"})
    after = run(fork_pool, spec, expected, settings, CORRECT)
    assert (after.outcome, after.score) == ("passed", after.max_score), after.error
    if outcome == "time_limit":  # killed at the deadline: the whole container goes
        assert not server.alive()
    assert_only_waiting_left(fork_pool, scratch_root)


def test_fork_server_containers_hold_only_what_the_server_needs(fork_pool, limits):
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)
    [server] = fork_pool.waiting()
    details = fork_pool.backend.client.inspect_container(server.container)
    host = details["HostConfig"]
    assert details["Config"]["User"] == "0:0" and host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == ["CHOWN", "SETGID", "SETUID"]
    assert "no-new-privileges" in host["SecurityOpt"] and host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] and host["Memory"] == host["MemorySwap"] > limits.memory_bytes
    assert float(details["Config"]["Labels"]["grader.expires"]) > time.time() + fork_pool.max_idle_s
    assert_ipc_bounded(host, limits)


# In a child interpreter (the harness refuses ctypes to an answer, not to its children): a
# System V segment holding a secret, a queue holding it as a message and a semaphore set,
# each mode 0666 and handed to uid 0 with IPC_SET; a POSIX queue and a /dev/shm file too.
# The child then stays, attached to the segment, until the job's clean-up kills it.
PLANT_IPC = """
import ctypes, os, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
rt = libc if hasattr(libc, "mq_open") else ctypes.CDLL("librt.so.1", use_errno=True)
key, secret = int(sys.argv[1]), sys.argv[2].encode()
IPC_CREAT, IPC_SET, IPC_STAT, IPC_NOWAIT = 0o1000, 1, 2, 0o4000
libc.shmat.restype = ctypes.c_void_p

def check(value, what):
    if value == -1:
        sys.exit(f"{what}: errno {ctypes.get_errno()}")
    return value

def give_to_root(ctl, ident, *semnum):
    ds = ctypes.create_string_buffer(512)  # each *id_ds starts with its ipc_perm
    check(ctl(ident, *semnum, IPC_STAT, ds), "IPC_STAT")
    ds[4:8] = struct.pack("I", 0)  # ipc_perm.uid, after the key
    check(ctl(ident, *semnum, IPC_SET, ds), "IPC_SET")

shm = check(libc.shmget(key, 4096, IPC_CREAT | 0o666), "shmget")
give_to_root(libc.shmctl, shm)
ctypes.memmove(libc.shmat(shm, None, 0), secret, len(secret))
msg = check(libc.msgget(key, IPC_CREAT | 0o666), "msgget")
check(libc.msgsnd(msg, struct.pack("l", 1) + secret, len(secret), IPC_NOWAIT), "msgsnd")
give_to_root(libc.msgctl, msg)
sem = check(libc.semget(key, 1, IPC_CREAT | 0o666), "semget")
give_to_root(libc.semctl, sem, 0)
mq = check(rt.mq_open(b"/" + secret, os.O_CREAT | os.O_RDWR, 0o666, None), "mq_open")
check(rt.mq_send(mq, secret, len(secret), 0), "mq_send")
with open("/dev/shm/" + secret.decode(), "wb") as f:
    f.write(secret)
os.chmod("/dev/shm/" + secret.decode(), 0o666)
print("MADE", flush=True)
time.sleep(60)
"""
# What another job finds: the rows of /proc/sysvipc (what `ipcs` reads), as (key, id, mode,
# owner uid), and the entries of /dev/mqueue and /dev/shm.
LIST_IPC = """
import json, os
seen = {}
for kind, owner in (("shm", 7), ("msg", 7), ("sem", 4)):
    with open(f"/proc/sysvipc/{kind}") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    seen[kind] = [row[:3] + [row[owner]] for row in rows]
for path in ("/dev/mqueue", "/dev/shm"):
    seen[path] = sorted(os.listdir(path))
print("IPC", json.dumps(seen))
"""


def seen_ipc(result: GradeResult) -> dict[str, list]:
    return json.loads(result.stdout.split("IPC ", 1)[1].splitlines()[0])


def test_ipc_objects_of_one_job_are_gone_for_the_next_whoever_owns_them(
    fork_pool, spec, expected, settings, limits, scratch_root
):
    """System V objects handed to root, a POSIX queue and a /dev/shm file are removed after
    the job that made them: the next job (another uid, the same container) finds none, and
    the one after it is graded as ever."""
    server = server_with_jobs_left(fork_pool, spec, expected, settings, limits, 3)
    key, secret = random.randrange(1, 2**31), f"ipc-{uuid.uuid4().hex}"
    plant = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {PLANT_IPC!r}, '{key}', '{secret}'],"
        " stdout=subprocess.PIPE, start_new_session=True)\n"
        "print(child.stdout.readline().decode().strip())\n" + LIST_IPC
    )
    first = run(fork_pool, spec, expected, settings, plant)
    assert "MADE" in first.stdout, first.model_dump_json()
    made = seen_ipc(first)
    for kind in ("shm", "msg", "sem"):  # root's, readable and writable by every uid
        [(row_key, _, mode, owner)] = made[kind]
        assert (int(row_key), mode, owner) == (key, "666", "0"), made
    assert made["/dev/mqueue"] == made["/dev/shm"] == [secret], made
    assert fork_pool.waiting() == [server] and server.jobs_left == 2  # the same container
    second = run(fork_pool, spec, expected, settings, LIST_IPC)
    nothing = {"shm": [], "msg": [], "sem": [], "/dev/mqueue": [], "/dev/shm": []}
    assert seen_ipc(second) == nothing, second.stdout
    assert fork_pool.waiting() == [server] and server.jobs_left == 1
    third = run(fork_pool, spec, expected, settings, CORRECT)
    assert (third.outcome, third.score) == ("passed", third.max_score), third.error
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)
    assert_only_waiting_left(fork_pool, scratch_root)


# A segment larger than the job's memory limit (kernel.shmmax), then two that fit alone but
# not together (kernel.shmall): whether shmget made each, and its errno.
MAKE_SHM = """
import subprocess, sys
code = '''
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
limit = int(sys.argv[1])
for size in (limit + 4096, limit // 2 + 4096, limit // 2 + 4096):
    made = libc.shmget(0, ctypes.c_size_t(size), 0o1600)
    print("SHMGET", made >= 0, 0 if made >= 0 else ctypes.get_errno())
'''
made = subprocess.run([sys.executable, "-c", code, "{limit}"], capture_output=True, text=True)
print(made.stdout, made.stderr)
"""


def assert_shared_memory_bounded(pool, spec, expected, settings, limits) -> None:
    result = run(pool, spec, expected, settings, MAKE_SHM.format(limit=limits.memory_bytes))
    made = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("SHMGET")]
    assert made == [
        ["False", str(errno.EINVAL)],
        ["True", "0"],
        ["False", str(errno.ENOSPC)],
    ], result.stdout


def test_a_fork_server_job_cannot_make_shared_memory_beyond_its_memory_limit(
    fork_pool, spec, expected, settings, limits
):
    assert_shared_memory_bounded(fork_pool, spec, expected, settings, limits)


@pytest.mark.parametrize("pool", ["docker"], indirect=True)
def test_a_one_job_sandbox_cannot_make_shared_memory_beyond_its_memory_limit(
    pool, spec, expected, settings, limits
):
    assert_shared_memory_bounded(pool, spec, expected, settings, limits)


# Who forked the job: the grandparent of a zygote's child is the server, that of the server's
# own child is the container's init (pid 1).
ANCESTRY = (
    "import os\nwith open(f'/proc/{os.getppid()}/status') as f:\n"
    "    grandparent = [line.split()[1] for line in f if line.startswith('PPid:')][0]\n"
    "print('FORKED-BY', os.getppid(), grandparent)\n"
)


def forked_by(result: GradeResult) -> tuple[str, str]:
    parent, grandparent = result.stdout.split("FORKED-BY ")[1].split()[:2]
    return parent, grandparent


def test_a_shipped_setup_runs_once_and_each_job_forks_from_it(
    fork_pool, spec, expected, settings, limits, scratch_root
):
    """The spec's setup is the task bank's: one zygote ran it, and every job of it is a
    fresh child of that zygote, under a uid of its own, starting from the untouched setup."""
    assert spec.setup in shipped_setups(settings.tasks_dir)
    touch = ANCESTRY + (
        "print('SEEN', os.getuid(), float(model.fc.weight.sum()), getattr(model, 'mark', None))\n"
        "model.mark = 'touched'\nmodel.fc.weight.data.zero_()\n"
    )
    server_with_jobs_left(fork_pool, spec, expected, settings, limits, 2)  # both in one server
    seen = []
    for _ in range(2):
        result = run(fork_pool, spec, expected, settings, touch)
        uid, weights, mark = result.stdout.split("SEEN ")[1].split()[:3]
        seen.append((forked_by(result), uid, weights, mark))
    (first, second) = seen
    assert first[0] == second[0] and first[0][1] != "1", seen  # one zygote, not the server
    assert first[1] != second[1] and first[3] == second[3] == "None", seen
    assert first[2] == second[2] != "0.0", seen  # the second saw the setup's weights again
    after = run(fork_pool, spec, expected, settings, CORRECT)
    assert (after.outcome, after.score) == ("passed", after.max_score), after.error
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)  # a replacement may be starting
    assert_only_waiting_left(fork_pool, scratch_root)


def test_a_setup_the_bank_does_not_ship_runs_in_each_job(
    fork_pool, spec, expected, settings, limits, scratch_root
):
    """An instructor's setup runs in the job's own child, after its uid dropped, every time."""
    own = spec.model_copy(update={"setup": spec.setup + "print('SETUP RAN', os.getuid())\n"})
    own = own.model_copy(update={"setup": "import os\n" + own.setup})
    assert own.setup not in shipped_setups(settings.tasks_dir)
    for _ in range(2):
        result = run(fork_pool, own, expected, settings, ANCESTRY + "print('UID', os.getuid())\n")
        assert forked_by(result)[1] == "1", result.stdout
        ran_as = result.stdout.split("SETUP RAN ")[1].split()[0]
        assert ran_as == result.stdout.split("UID ")[1].split()[0] != "0", result.stdout
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)  # a replacement may be starting
    assert_only_waiting_left(fork_pool, scratch_root)


def test_a_shipped_setup_that_prints_is_run_in_each_job_instead(
    fork_pool, spec, expected, settings, limits, scratch_root, tmp_path
):
    """A zygote shares only a quiet setup: one that prints (so each job's output would lack
    it) runs in every job, as any other setup does."""
    loud = spec.model_copy(update={"setup": spec.setup + "print('SETUP SAID HELLO')\n"})
    (tmp_path / "loud.yaml").write_text(loud.model_dump_json(), encoding="utf-8")
    bank = settings.model_copy(update={"tasks_dir": tmp_path})
    assert loud.setup in shipped_setups(tmp_path)
    for _ in range(2):
        result = run(fork_pool, loud, expected, bank, ANCESTRY)
        assert "SETUP SAID HELLO" in result.stdout and forked_by(result)[1] == "1", result.stdout
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)  # a replacement may be starting
    assert_only_waiting_left(fork_pool, scratch_root)


DRAWS = (
    "import random, numpy, torch\n"
    "print('DRAWS', random.random(), numpy.random.rand(), float(torch.rand(1)), float(torch.randn(1)))\n"
)


def test_a_job_forked_from_a_zygote_draws_what_a_run_of_its_own_draws(
    fork_pool, process_backend, spec, expected, settings, limits, scratch_root
):
    """Every generator (Python's, NumPy's, torch's) is where the setup left it, as in a run
    that did the setup itself; Python's would otherwise be reseeded by the fork."""
    shared = run(fork_pool, spec, expected, settings, ANCESTRY + DRAWS)
    assert forked_by(shared)[1] != "1", shared.stdout  # a zygote forked it
    own = grade(
        spec, Answer(code=ANCESTRY + DRAWS), backend=process_backend, expected=expected,
        settings=settings,
    )  # fmt: skip
    draws = [r.stdout.split("DRAWS ")[1].split()[:4] for r in (shared, own)]
    assert draws[0] == draws[1], draws
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)
    assert_only_waiting_left(fork_pool, scratch_root)


def test_a_training_epoch_forked_from_a_zygote_observes_what_a_run_of_its_own_does(
    fork_pool, process_backend, settings, scratch_root
):
    """The training loop's check is prepared in the zygote, after the setup (the batches
    copied, the loss measured, the data loader, backward and the optimizer instrumented):
    a job forked from it observes the epoch as a run that prepared it itself does."""
    epoch = get_task(settings.tasks_dir, "finetune-train-epoch")
    assert epoch.setup in shipped_setups(settings.tasks_dir)
    code = ANCESTRY + epoch.reference
    pool = WarmPool(fork_pool.backend, 1, jobs=3)  # its own: the task's limits are other
    try:
        (_, shared), (_, own) = (
            run_code(epoch, code, backend, settings) for backend in (pool, process_backend)
        )
    finally:
        pool.close()
    assert pool.waiting() == []
    assert_only_waiting_left(fork_pool, scratch_root)
    assert shared is not None and own is not None
    assert shared.manifest.stdout.split("FORKED-BY ")[1].split()[1] != "1"  # a zygote's child
    for name in ("all-batches", "step-order", "loss-decreases", "final-weights"):
        ours, theirs = (f.manifest.observations[name].facts for f in (shared, own))
        assert ours["batches_total"] == theirs["batches_total"] == 8
        assert ours["events"] == theirs["events"] and ours["events"].count("s") == 8
        for loss in ("loss_before", "loss_after"):
            assert ours[loss] == pytest.approx(theirs[loss], rel=1e-4)
        assert ours["loss_after"] < ours["loss_before"]


def test_a_check_the_zygote_cannot_prepare_is_prepared_in_each_job(
    fork_pool, settings, scratch_root, tmp_path
):
    """A check whose preparation fails in the zygote (here: its data loader is missing)
    might not fail under a job's own limits: the zygote declines, each job runs the setup
    and prepares the check itself, and the check's error is the job's own."""
    epoch = get_task(settings.tasks_dir, "finetune-train-epoch")
    checks = [
        c.model_copy(update={"dataloader": "missing_loader"}) if c.type == "training_loop" else c
        for c in epoch.checks
    ]
    broken = epoch.model_copy(update={"checks": checks})
    (tmp_path / "broken.yaml").write_text(broken.model_dump_json(), encoding="utf-8")
    bank = settings.model_copy(update={"tasks_dir": tmp_path})
    pool = WarmPool(fork_pool.backend, 1, jobs=3)
    try:
        summary, facts = run_code(broken, ANCESTRY + epoch.reference, pool, bank)
    finally:
        pool.close()
    assert facts is not None, summary
    assert facts.manifest.stdout.split("FORKED-BY ")[1].split()[1] == "1"  # the server's child
    error = facts.manifest.observations["all-batches"].error or ""
    assert "could not prepare" in error and "missing_loader" in error, error
    assert_only_waiting_left(fork_pool, scratch_root)


def host_pid(client, container: str, pid_in_container: str) -> int:
    """The host's pid of a process of the container, from its pid inside the container."""
    for row in client.top(container, ps_args="-eo pid")["Processes"]:
        with open(f"/proc/{row[0]}/status") as f:
            nspids = [line.split()[1:] for line in f if line.startswith("NSpid:")][0]
        if nspids[-1] == pid_in_container:
            return int(row[0])
    raise AssertionError(f"no process {pid_in_container} in the container")


def kill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as f:
                if "\nState:\tZ" in f.read():
                    return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} outlived SIGKILL")


def test_a_zygote_gone_between_jobs_costs_no_job(
    fork_pool, spec, expected, settings, limits, scratch_root
):
    """Its next job runs all the same (in the child the server keeps waiting), and the job
    after that gets a new zygote."""
    server = server_with_jobs_left(fork_pool, spec, expected, settings, limits, 3)
    first = run(fork_pool, spec, expected, settings, ANCESTRY)
    zygote = forked_by(first)[0]
    kill_and_wait(host_pid(fork_pool.backend.client, server.container, zygote))
    second = run(fork_pool, spec, expected, settings, ANCESTRY + CORRECT)
    assert (second.outcome, second.score) == ("passed", second.max_score), second.error
    assert forked_by(second)[1] == "1", second.stdout  # the server's own child took it
    third = run(fork_pool, spec, expected, settings, ANCESTRY + CORRECT)
    assert (third.outcome, third.score) == ("passed", third.max_score), third.error
    assert forked_by(third)[1] != "1" and forked_by(third)[0] != zygote, third.stdout
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)
    assert_only_waiting_left(fork_pool, scratch_root)


def test_a_zygote_gone_during_a_job_is_the_sandbox_failing_not_the_answer(
    fork_pool, spec, expected, settings, limits, scratch_root
):
    """An internal error (retried, never charged), and the container is replaced."""
    server = server_with_jobs_left(fork_pool, spec, expected, settings, limits, 2)
    zygote = forked_by(run(fork_pool, spec, expected, settings, ANCESTRY))[0]
    pid = host_pid(fork_pool.backend.client, server.container, zygote)
    killer = threading.Timer(0.8, kill_and_wait, (pid,))
    killer.start()
    try:
        result = run(
            fork_pool, spec, expected, settings, "import time\ntime.sleep(1.5)\n" + CORRECT
        )
    finally:
        killer.join()
    assert result.outcome == "internal_error" and "lost" in (result.error or ""), result.error
    assert not server.alive()
    assert fork_pool.wait_warm(limits, WARM_WAIT_S)
    assert_only_waiting_left(fork_pool, scratch_root)
