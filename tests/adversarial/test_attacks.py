"""Hostile answers, on every isolating backend: each is contained, graded, and leaves nothing behind.

Every attack is an answer to a short-limit copy of `finetune-freeze` that does not do
the work, so none may get full marks; each names the outcome it must get on each
backend, and strings that must never reach the result (a leaked secret, a file found,
a connection made). After each run no sandbox container, process or scratch dir of
this session may remain, and the backend must still grade a correct answer fully.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from core.settings import PROJECT_ROOT
from graders.result import GradeResult
from graders.spec import CodeTask
from sandbox.docker_backend import BACKEND_LABEL, DockerBackend
from sandbox.pool import WarmPool
from services.answers import Answer
from services.grading import grade

pytestmark = [pytest.mark.slow]

MARKER = f"grader-daemon-{uuid.uuid4().hex}"
EVIL_NAME = f"grader_evil_{uuid.uuid4().hex[:8]}"
BACKENDS = ("process", "docker", "fork")


@dataclass(frozen=True)
class Attack:
    id: str
    code: str
    outcomes: dict[str, str]  # backend (the `backend` fixture's id) -> the outcome it must give
    absent: tuple[str, ...] = ()  # never in the result's stdout, stderr or error
    present: tuple[str, ...] = ()  # in the student's stdout: proof the attack ran


def on(outcome: str, **per_backend: str) -> dict[str, str]:
    return {name: per_backend.get(name, outcome) for name in BACKENDS}


ATTACKS = [
    Attack("infinite-loop", "while True:\n    pass\n", on("time_limit")),
    Attack("long-sleep", "import time\ntime.sleep(600)\n", on("time_limit")),
    Attack(
        "read-stdin",
        "import os, sys\nprint('STDIN', sys.stdin.buffer.read()[:200], os.read(0, 200))\n",
        on("failed"),
        absent=('"setup"', '"checks"', "nonce"),
        present=("STDIN b'' b''",),
    ),
    Attack("memory-bomb", "x = b'x' * (8 * 2**30)\n", on("memory_limit")),
    Attack(
        "memory-growth",
        "chunks = []\nwhile True:\n    chunks.append(b'x' * 2**24)\n",
        on("memory_limit"),
    ),
    Attack(
        "fork-bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        on("time_limit"),
    ),
    Attack(
        "thread-bomb",
        "import threading, time\nwhile True:\n"
        "    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n",
        on("runtime_error"),
    ),
    Attack("output-flood", "while True:\n    print('x' * 1000)\n", on("output_limit")),
    Attack("huge-line", "print('x' * (16 * 2**20))\n", on("output_limit")),
    Attack(
        "channel-flood",
        "import os\nchunk = b'x' * 2**20\nfor fd in range(3, 64):\n    try:\n"
        "        if os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:'):\n"
        "            for _ in range(200):\n                os.write(fd, chunk)\n"
        "    except OSError:\n        pass\n",
        on("output_limit"),
    ),
    Attack(
        "disk-fill",
        "i = 0\nwhile True:\n    with open(f'/tmp/fill{i}', 'wb') as f:\n"
        "        f.write(b'0' * (60 * 2**20))\n    i += 1\n",
        on("runtime_error"),
    ),
    Attack(
        "inode-exhaustion",
        "i = 0\nwhile True:\n    open(f'/tmp/inode{i}', 'w').close()\n    i += 1\n",
        # bubblewrap's tmpfs caps bytes, not inodes: there the loop runs into the deadline
        on("runtime_error", process="time_limit"),
    ),
    Attack(
        "fd-exhaustion",
        "files = []\nwhile True:\n    files.append(open('/dev/null'))\n",
        on("runtime_error"),
    ),
    Attack(
        "local-services",
        "import socket\nfor port in (6379, 5432):\n    try:\n"
        "        socket.create_connection(('127.0.0.1', port), timeout=1).close()\n"
        "        print('CONNECTED', port)\n    except OSError as exc:\n"
        "        print('no connection', port, exc)\n",
        on("failed"),
        absent=("CONNECTED",),
        present=("no connection 6379", "no connection 5432"),
    ),
    Attack(
        "dns",
        "import socket\ntry:\n    print('RESOLVED', socket.getaddrinfo('pypi.org', 443))\n"
        "except OSError as exc:\n    print('no dns', exc)\n",
        on("failed"),
        absent=("RESOLVED",),
        present=("no dns",),
    ),
    Attack(
        "read-secrets",
        "import glob, os\nprint(dict(os.environ))\n"
        "for path in ['/proc/1/environ', *glob.glob('/proc/*/environ'), *glob.glob('/proc/*/cmdline')]:\n"
        "    try:\n        print(path, open(path, 'rb').read())\n"
        "    except OSError as exc:\n        print(path, exc)\n"
        "print('SEARCHED')\n",
        on("failed"),
        present=("SEARCHED",),
    ),
    Attack(
        "find-socket-and-reference",
        "import os\nfor path in ('/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock'):\n"
        "    if os.path.exists(path):\n        print('FOUND', path)\n"
        "for root, dirs, files in os.walk('/'):\n"
        "    if root in ('/proc', '/sys', '/dev', '/usr'):\n        dirs[:] = []\n        continue\n"
        "    dirs[:] = [d for d in dirs if d not in ('site-packages', '__pycache__')]\n"
        "    for name in dirs + files:\n"
        "        if name in ('taskbank', 'docker.sock', 'expected') or name.startswith(('finetune-', 'adversarial-')):\n"
        "            print('FOUND', os.path.join(root, name))\n"
        "print('SEARCHED')\n",
        on("failed"),
        absent=("FOUND",),
        present=("SEARCHED",),
    ),
    Attack(
        "write-outside-scratch",
        "import os, sys, torch\n"
        f"name = {EVIL_NAME!r}\n"
        "lib = ('/sandbox/lib/contract', '/sandbox/lib/sandboxed')\n"
        "for d in (os.path.dirname(torch.__file__), os.path.dirname(os.__file__), sys.prefix, '/etc', *lib, '/dev', '/'):\n"
        "    try:\n        with open(os.path.join(d, name), 'w') as f:\n            f.write('x')\n"
        "        print('WROTE', d)\n    except OSError as exc:\n        print('denied', d, exc.errno)\n",
        on("failed"),
        absent=("WROTE",),
        present=("denied /etc",),
    ),
    Attack(
        "ignore-sigterm",
        # The answer runs outside the main thread, so it cannot install handlers; it can
        # still block the signal, and the deadline's SIGKILL ends it all the same.
        "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})\n"
        "while True:\n    pass\n",
        on("time_limit"),
    ),
    Attack(
        "walk-frames-for-the-nonce",
        "import os, sys\nf = sys._getframe(0)\nwhile f is not None:\n"
        "    for k, v in dict(f.f_locals).items():\n"
        "        if k in ('job', 'nonce', 'channel', 'frame_start'):\n            print('LEAK', k)\n"
        "    f = f.f_back\n"
        "forged = b'\\nGRADER-FACTS/1 ' + b'0' * 32 + b' 2 0\\n{}'\n"
        "for fd in range(3, 30):\n    try:\n        os.write(fd, forged)\n    except OSError:\n        pass\n"
        "print('WALKED')\n",
        on("failed"),
        absent=("LEAK",),
        present=("WALKED",),
    ),
    Attack("walk-the-object-graph", "import gc\ngc.get_objects()\n", on("runtime_error")),
    Attack("other-threads-frames", "import sys\nsys._current_frames()\n", on("runtime_error")),
    Attack("ctypes", "import ctypes\nctypes.CDLL(None).getpid()\n", on("runtime_error")),
    Attack("read-process-memory", "open('/proc/self/mem', 'rb')\n", on("runtime_error")),
    Attack(
        "add-audit-hook",
        "import sys\nsys.addaudithook(lambda *a: print('HOOKED'))\nopen('/dev/null').close()\n"
        "print('TRIED')\n",
        on("failed"),
        absent=("HOOKED",),
        present=("TRIED",),
    ),
    Attack(
        "patch-the-grader-modules",
        "import sandboxed.introspect as ti\nti.requires_grad = lambda t: False\n",
        on("runtime_error"),
    ),
    Attack(
        "import-the-graders-packages",
        "for name in ('contract.checks.base', 'sandboxed.harness', 'graders.judge'):\n"
        "    try:\n        __import__(name)\n    except PermissionError:\n"
        "        print('REFUSED', name)\n",
        on("failed"),
        present=(
            "REFUSED contract.checks.base",
            "REFUSED sandboxed.harness",
            "REFUSED graders.judge",
        ),
    ),
    Attack(
        "patch-the-harness-and-builtins",
        "import __main__, builtins\n__main__._head = __main__.ObserveContext = None\n"
        "builtins.len = lambda x: 0\nbuiltins.all = lambda x: True\nprint('PATCHED')\n",
        on("failed"),
        present=("PATCHED",),
    ),
    Attack(
        "install-signal-handler",
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n",
        on("runtime_error"),
    ),
    Attack(
        "setsid-daemon",
        "import os, subprocess, sys, time\n"
        f"argv = [sys.executable, '-c', 'import time; time.sleep(120)', {MARKER!r}]\n"
        "p = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execv(sys.executable, argv)\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\nos.kill(p.pid, 0)\nprint('SPAWNED')\n",
        on("failed"),
        present=("SPAWNED",),
    ),
    Attack(
        "zombies",
        "import os\nfor _ in range(20):\n    if os.fork() == 0:\n        os._exit(0)\nprint('FORKED')\n",
        on("failed"),
        present=("FORKED",),
    ),
    Attack(
        "kill-init",
        # In a one-job sandbox init ignores the signal; under the fork server init and the
        # server run as other uids, so the kernel refuses the kill: both are containment.
        "import os, time\nfor pid in (1, os.getppid()):\n    try:\n        os.kill(pid, 9)\n"
        "    except PermissionError:\n        print('refused', pid)\ntime.sleep(0.5)\nprint('ALIVE')\n",
        on("failed"),
        present=("ALIVE",),
    ),
    Attack(
        "forged-stdout",
        'import os, sys\nprint(\'{"outcome": "passed", "score": 10, "max_score": 10}\')\n'
        'sys.__stdout__.write(\'{"outcome": "passed", "score": 10}\\n\')\n'
        "os.write(1, b'\\nGRADER-FACTS/1 ' + b'0' * 32 + b' 2 0\\n{}')\n",
        on("failed"),
    ),
    Attack(
        "forged-files",
        "import json, os\nfor name in ('result.json', 'facts.json', '.stdout', 'manifest.json'):\n"
        "    with open(os.path.join(os.environ.get('TMPDIR', '/tmp'), name), 'w') as f:\n"
        "        json.dump({'outcome': 'passed', 'score': 10, 'status': 'ok'}, f)\n",
        on("failed"),
    ),
    Attack("sys-exit", "import sys\nsys.exit(0)\n", on("failed")),
    Attack("os-exit", "import os\nos._exit(0)\n", on("runtime_error")),
    Attack(
        "patch-requires-grad",
        "import torch\ntorch.Tensor.requires_grad = property(lambda self: False)\n"
        "torch.nn.Parameter.requires_grad = property(lambda self: False)\n",
        on("failed"),
    ),
    Attack(
        "patch-parameters",
        "import torch\ntorch.nn.Module.parameters = lambda self, recurse=True: iter([])\n"
        "torch.nn.Module.named_parameters = lambda self, *args, **kwargs: iter([])\n",
        on("failed"),
    ),
    Attack("replace-model", "import torch\nmodel = torch.nn.Module()\n", on("failed")),
]


# Attacks on the harness's own interpreter (its frames, audit hook, modules, torch's
# classes): the same harness code meets them whatever contains the process, so they run on
# the process backend (the host's interpreter) and on the fork path (the sandbox image's,
# the one the service uses), not again in a cold container of that image.
INTERPRETER = {
    "walk-frames-for-the-nonce", "walk-the-object-graph", "other-threads-frames", "ctypes",
    "add-audit-hook", "patch-the-grader-modules", "import-the-graders-packages",
    "patch-the-harness-and-builtins", "install-signal-handler", "sys-exit",
    "patch-requires-grad", "patch-parameters", "replace-model",
}  # fmt: skip
RUNS = [
    (attack, name)
    for attack in ATTACKS
    for name in BACKENDS
    if attack.id not in INTERPRETER or name != "docker"
]

RACED_TIME_LIMIT_S = 30.0


def raced(spec: CodeTask) -> CodeTask:
    """`spec` with a time limit that a loaded machine cannot race."""
    limits = spec.limits.model_copy(update={"time_limit_s": RACED_TIME_LIMIT_S})
    return spec.model_copy(update={"limits": limits})


def spec_for(attack: Attack, backend_id: str, spec: CodeTask) -> CodeTask:
    """The spec to run `attack` under: its own, or, for an attack that ends at a limit of its
    own (memory, output, disk), one whose time limit it cannot race."""
    return spec if attack.outcomes[backend_id] == "time_limit" else raced(spec)


def run_attack(backend, spec, expected, settings, code: str) -> GradeResult:
    return grade(spec, Answer(code=code), backend=backend, expected=expected, settings=settings)


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


SANDBOX_COMMANDS = (b"bwrap", b"sandboxed.harness")


def children_of_this_process() -> list[int]:
    """Sandbox processes (bwrap, the harness) whose parent is this test process.

    Other children, such as the API and worker a session fixture of another test folder
    started in the same pytest process, are not the sandbox's leftovers.
    """
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me and any(
                word in command for word in SANDBOX_COMMANDS
            ):
                found.append(int(entry.name))
    return found


def assert_nothing_left(backend, scratch_root: Path) -> None:
    """No process, scratch dir or container of a job remains; a fork server waiting for
    the next job may, with nothing of a job's uid in it but the next job's child."""
    assert children_of_this_process() == []
    assert processes_with(MARKER) == []
    assert list(scratch_root.glob("grader-sandbox-*")) == []
    pool = backend if isinstance(backend, WarmPool) else None
    backend = pool.backend if pool else backend
    if isinstance(backend, DockerBackend):
        deadline = time.monotonic() + 60  # a replacement being started is not waiting yet
        while True:
            waiting = {sandbox.container for sandbox in pool.waiting()} if pool else set()
            left = backend.client.containers(
                all=True, filters={"label": f"{BACKEND_LABEL}={backend.instance_id}"}
            )
            extra = [c["Id"] for c in left if c["Id"] not in waiting]
            if not (extra and pool and time.monotonic() < deadline):
                break
            time.sleep(0.5)
        assert extra == []
        for container in waiting:
            # root: init, the server, its cleaner, a seed, a zygote per shared setup; one
            # process of a job's uid: the next job's child, waiting for its job
            found = backend.client.top(container, ps_args="-eo pid,uid,args")["Processes"]
            assert len([p for p in found if p[1] != "0"]) <= 1, found
            assert len(found) <= 5 + backend.zygotes, found


def evil_host_paths() -> list[Path]:
    dirs = [
        Path(torch.__file__).parent,
        Path(os.__file__).parent,
        Path(sys.prefix),
        Path("/etc"),
        PROJECT_ROOT / "contract",
        PROJECT_ROOT / "sandboxed",
        PROJECT_ROOT / "graders",
        Path("/"),
    ]
    return [d / EVIL_NAME for d in dirs]


def assert_contained(result: GradeResult, attack: Attack, backend_id: str, canary: str) -> None:
    """The attack got its outcome on this backend, no points, no secret, no host file."""
    seen = "\n".join([result.stdout, result.stderr, result.error or ""])
    assert result.outcome == attack.outcomes[backend_id], result.model_dump_json(
        exclude={"stdout", "stderr"}
    )
    assert result.score < result.max_score
    assert canary not in seen and canary not in result.model_dump_json()
    for text in attack.absent:
        assert text not in seen, f"{text!r} reached the result:\n{seen[:3000]}"
    for text in attack.present:
        assert text in result.stdout, f"the attack did not run as intended:\n{seen[:3000]}"
    assert not any(p.exists() for p in evil_host_paths())


def test_every_interpreter_attack_exists():
    assert {a.id for a in ATTACKS} >= INTERPRETER


@pytest.mark.parametrize(
    ("attack", "backend"),
    RUNS,
    ids=[f"{name}-{attack.id}" for attack, name in RUNS],
    indirect=["backend"],
)
def test_attack_is_contained(
    attack, backend, attack_spec, attack_expected, settings, canary, scratch_root, request
):
    backend_id = request.node.callspec.params["backend"]
    spec = spec_for(attack, backend_id, attack_spec)
    result = run_attack(backend, spec, attack_expected, settings, attack.code)
    assert_contained(result, attack, backend_id, canary)
    assert_nothing_left(backend, scratch_root)


def test_backend_still_grades_after_attacks(
    backend, attack_spec, attack_expected, settings, scratch_root
):
    result = run_attack(
        backend, attack_spec, attack_expected, settings, "model.requires_grad_(False)\n"
    )
    assert (result.outcome, result.score) == ("passed", result.max_score), result.model_dump_json(
        indent=2
    )
    assert_nothing_left(backend, scratch_root)


PLANT = (
    "import os, subprocess, sys, torch\n"
    "secret = {secret!r}\n"
    "for d in ('/tmp', os.environ.get('TMPDIR', '/tmp'), '/dev/shm', '/dev/mqueue'):\n"
    "    try:\n        with open(os.path.join(d, secret), 'w') as f:\n            f.write(secret)\n"
    "    except OSError as exc:\n        print('not in', d, exc.errno)\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', secret, {marker!r}],"
    " start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,"
    " stderr=subprocess.DEVNULL)\n"
    "os.environ['PLANTED'] = secret\n"
    "torch.nn.Module.planted = secret\n"
    "model.own_mark = secret\n"
    "model.fc.weight.data.fill_(7.0)\n"
    "print('PLANTED')\n"
)
LOOK = (
    "import glob, os, torch\n"
    "seen = []\n"
    "for d in ('/tmp', os.environ.get('TMPDIR', '/tmp'), '/dev/shm', '/dev/mqueue'):\n"
    "    try:\n        seen += os.listdir(d)\n    except OSError:\n        pass\n"
    "for path in glob.glob('/proc/*/cmdline') + glob.glob('/proc/*/environ'):\n"
    "    try:\n        seen.append(open(path, 'rb').read().decode(errors='replace'))\n"
    "    except OSError:\n        pass\n"
    "seen += [os.environ.get('PLANTED', ''), str(getattr(torch.nn.Module, 'planted', ''))]\n"
    "seen.append(str(getattr(model, 'own_mark', '')))\n"
    "print('FILLED', bool((model.fc.weight == 7.0).all()))\n"
    "print('LOOKED', ' '.join(seen))\n"
)


def test_no_trace_of_one_job_reaches_the_next(
    backend, attack_spec, attack_expected, settings, scratch_root
):
    """Files, daemons, environment and patched modules of one job are gone for the next;
    on the fork server both jobs run in the same container."""
    secret = f"planted-{uuid.uuid4().hex}"
    code = PLANT.format(secret=secret, marker=MARKER)
    planted = run_attack(backend, attack_spec, attack_expected, settings, code)
    assert "PLANTED" in planted.stdout, planted.model_dump_json(indent=2)
    served = [s.container for s in backend.waiting()] if isinstance(backend, WarmPool) else []
    looked = run_attack(backend, attack_spec, attack_expected, settings, LOOK)
    assert "LOOKED" in looked.stdout, looked.model_dump_json(indent=2)
    assert secret not in looked.stdout and "FILLED False" in looked.stdout, looked.stdout
    if isinstance(backend, WarmPool):
        assert [s.container for s in backend.waiting()] == served != []
    assert_nothing_left(backend, scratch_root)


def test_a_job_cannot_reach_its_fork_server(
    fork_backend, attack_spec, attack_expected, settings, scratch_root
):
    """The server, init and a zygote (the parent of a job of a shipped setup) run as other
    uids: a job can neither signal nor read them, even from a fresh interpreter without the
    harness's audit hook."""
    code = (
        "import os, subprocess, sys\nppid = os.getppid()\n"
        "with open(f'/proc/{ppid}/status') as f:\n"
        "    gpid = int([line.split()[1] for line in f if line.startswith('PPid:')][0])\n"
        "for pid in (ppid, gpid):\n"
        '    probe = f\'open("/proc/{pid}/mem", "rb").read(1); print("READ")\'\n'
        "    subprocess.run([sys.executable, '-c', probe])\n"
        "for pid in {1, ppid, gpid}:\n    try:\n        os.kill(pid, 0)\n        print('SIGNALLED', pid)\n"
        "    except PermissionError:\n        print('refused', pid)\n"
        "print('uid', os.getuid(), os.getgroups())\n"
    )
    result = run_attack(fork_backend, attack_spec, attack_expected, settings, code)
    assert "refused 1" in result.stdout and "SIGNALLED" not in result.stdout, result.stdout
    assert result.stdout.count("refused") >= 2, result.stdout
    assert "READ" not in result.stdout and "PermissionError" in result.stdout + result.stderr
    assert "uid 0" not in result.stdout and "uid 65534" not in result.stdout
    assert_nothing_left(fork_backend, scratch_root)
