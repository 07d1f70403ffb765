"""Load test: a burst of submissions through the API, graded by worker processes, then counted
in the database. Nothing accepted may be lost or graded twice; this prints whether it was.

Starts, on 127.0.0.1 only and all of its own: a PostgreSQL database (dropped at the end), a
redis-server on a free port, `gradectl serve` and WORKERS `gradectl worker` processes (each
runs the reaper, taking turns). Sends SUBMISSIONS answers at once from the task bank's bundled
examples (right and wrong; mostly code, some multiple choice), waits until every accepted
one is completed or TIMEOUT_S passes, and counts from the database: accepted, completed,
by outcome, duplicates (more than one row for one request, or a student's attempt
counter differing from their charged submissions), lost (accepted, never completed) and
graded unexpectedly (an example scored against its expectation). Prints a table and
writes the figures as JSON under bench/results/. A script, not a test.

With `--chaos-every-s S`, until the burst is drained, one grading-side process is SIGKILLed
at random every S seconds or so: a worker's pool process, the main process of the worker
whose reaper ran last, a sandbox container, or any worker's main process; a killed main
process is started again two seconds later, as a supervisor would. It then also counts what
the kills cost: answers charged for our failure (an `internal_error` charged, or an outcome
other than the one the same answer got everywhere else in the run) and, for every try
killed mid-job, how long after the kill its submission was claimed again, beyond the grace.

    .venv/bin/python -m bench.load_test [--submissions 1000] [--workers 2] [--timeout-s 5400]
        [--concurrency N] [--chaos-every-s 5 --grace-s 10 --reaper-interval-s 2]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import httpx
import redis
from sqlalchemy import create_engine, text

from core.settings import PROJECT_ROOT
from db.session import temporary_database
from sandbox.docker_backend import OWNER_LABEL, SANDBOX_LABEL
from services import queue
from services.queue import REAPER_LAST_RUN_KEY, REAPER_TURN_KEY
from services.taskbank import load_examples, load_tasks

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
START_TIMEOUT_S = 120
SELF_TESTS_TIMEOUT_S = 1800  # the bank's self-tests, on a loaded 2-core machine
CHOICE_SHARE = 0.1  # the rest are code answers (free-form code or filled-in blanks)
RESTART_DELAY_S = 2.0  # a supervisor's (scripts/run.sh)
CHAOS_KINDS = ("pool process", "reaper's main process", "sandbox container", "main process")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A subprocess in its own process group, logged to a file, stopped with its children."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env, self.log_dir = name, argv, env, log_dir
        self.log = (log_dir / f"{name}.log").open("ab")
        self.popen = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def stop(self, grace_s: float = 30.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self.log.close()


@contextlib.contextmanager
def database() -> Iterator[str]:
    with temporary_database(POSTGRES_ADMIN_URL, "grader_load") as url:
        yield url


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    server = subprocess.Popen(
        [*argv, "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait(lambda: _pings(url), 10, "redis-server")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def wait(condition, timeout_s: float, what: str, every_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout_s:.0f} s")
        time.sleep(every_s)


def answers(n: int, seed: int) -> list[dict]:
    """`n` request bodies from the bundled examples, code and choice mixed; each with its
    expectation (`full` or `partial`) and a student of its own (attempt limits are per student)."""
    rng = random.Random(seed)
    code, choice = [], []
    for spec in load_tasks(PROJECT_ROOT / "taskbank" / "tasks").values():
        for ex in load_examples(spec.id):
            body = {"task_id": spec.id}
            if ex.answer.code is not None:
                body["code"] = ex.answer.code
            elif ex.answer.blanks is not None:
                body["blanks"] = {str(k): v for k, v in ex.answer.blanks.items()}
            else:
                body["choice"] = ex.answer.choice
            (choice if "choice" in body else code).append((body, ex.expect))
    picked = [
        rng.choice(choice if rng.random() < CHOICE_SHARE else code) for _ in range(n)
    ]  # fmt: skip
    return [body | {"student_id": f"load-{i}", "_expect": expect} for i, (body, expect) in
            enumerate(picked)]  # fmt: skip


def send_burst(
    api_url: str, key: str, bodies: list[dict]
) -> tuple[dict[str, dict], Counter, float]:
    """POST every body at once (16 connections); returns accepted id → body, status counts, time."""
    accepted: dict[str, dict] = {}
    statuses: Counter = Counter()

    def post(body: dict) -> tuple[int, dict | None]:
        payload = {k: v for k, v in body.items() if not k.startswith("_")}
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": body["student_id"]}
        try:
            response = client.post("/v1/submissions", json=payload, headers=headers)
        except httpx.HTTPError:
            return 0, None
        return response.status_code, response.json() if response.status_code == 202 else None

    started = time.monotonic()
    limits = httpx.Limits(max_connections=16)
    with httpx.Client(base_url=api_url, timeout=60, limits=limits) as client, \
            ThreadPoolExecutor(16) as pool:  # fmt: skip
        for body, (status, reply) in zip(bodies, pool.map(post, bodies), strict=True):
            statuses[status] += 1
            if reply is not None:
                accepted[reply["id"]] = body
    return accepted, statuses, time.monotonic() - started


def _pids_of_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


class Chaos:
    """Kills one grading-side process at random about every `every_s` seconds, until stopped;
    restarts a killed worker main process after RESTART_DELAY_S. `kills` records each kill
    (when, what, and the submissions whose try the killed process held)."""

    def __init__(
        self, workers: list[Service], db_url: str, redis_url: str, every_s: float, seed: int
    ) -> None:
        self.workers, self.every_s = workers, every_s
        self.retired: list[
            Service
        ] = []  # killed mains' services: their orphans, stopped at the end
        self.kills: list[dict] = []
        self.seen: set[int] = set()  # pool processes seen: whose sandboxes are this run's
        self.rng = random.Random(seed)
        self.engine = create_engine(db_url)
        self.redis = redis.Redis.from_url(redis_url)
        self.docker = docker.from_env()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=60)
        self.engine.dispose()
        self.docker.close()

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(0.5, 1.5) * self.every_s):
            kind = self.rng.choice(CHAOS_KINDS)
            try:
                self.kills.append({"at": time.time(), "kind": kind, **self._kill(kind)})
            except Exception as exc:  # noqa: BLE001 (a process gone meanwhile: the next kill)
                self.kills.append({"at": time.time(), "kind": kind, "error": str(exc)})

    def _held_by(self, pids: list[int]) -> list[str]:
        """Submissions running under a try of one of `pids` (this host's)."""
        if not pids:
            return []
        owners = [f"{socket.gethostname()}:{pid}"[:200] for pid in pids]
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, claimed_by FROM submissions WHERE status = 'running'")
            ).all()
        return [r.id for r in rows if r.claimed_by in owners]

    def _kill(self, kind: str) -> dict:
        if kind == "sandbox container":  # this run's: others may share the engine
            mine = {c for w in self.workers for c in _pids_of_children(w.popen.pid)}
            self.seen |= mine
            running = [
                c for c in self.docker.containers.list(filters={"label": f"{SANDBOX_LABEL}=1"})
                if _owner_pid(c.labels) in mine
            ]  # fmt: skip
            if not running:
                return {"skipped": "no sandbox running"}
            victim = self.rng.choice(running)
            victim.kill()
            return {"container": victim.id[:12]}
        if kind == "pool process":
            children = [c for w in self.workers for c in _pids_of_children(w.popen.pid)]
            self.seen |= set(children)
            if not children:
                return {"skipped": "no pool process"}
            pid = self.rng.choice(children)
            held = self._held_by([pid])
            os.kill(pid, signal.SIGKILL)
            return {"pid": pid, "held": held}
        index = self.rng.randrange(len(self.workers))
        if kind == "reaper's main process":
            last = self.redis.get(REAPER_LAST_RUN_KEY)
            by = int(json.loads(last)["by"].rsplit(":", 1)[1]) if last else None
            index = next((i for i, w in enumerate(self.workers) if w.popen.pid == by), index)
        old = self.workers[index]
        self.seen |= set(_pids_of_children(old.popen.pid))
        held = self._held_by(_pids_of_children(old.popen.pid))
        os.kill(old.popen.pid, signal.SIGKILL)
        old.popen.wait(timeout=10)
        self.retired.append(old)
        time.sleep(RESTART_DELAY_S)
        self.workers[index] = Service(old.name, old.argv, old.env, old.log_dir)
        return {"pid": old.popen.pid, "held": held, "restarted": self.workers[index].popen.pid}


def _owner_pid(labels: dict) -> int | None:
    """The pid of the process that made a sandbox container, from its owner label."""
    try:
        return int(labels.get(OWNER_LABEL, "").split("|")[2])
    except (IndexError, ValueError):
        return None


def chaos_figures(kills: list[dict], rows: dict, grace_s: float) -> dict:
    """What the kills did: how many of each kind, and for every try killed mid-job whose
    submission was claimed again after the kill, how long that took beyond the grace."""
    waits = []
    for kill in kills:
        for sid in kill.get("held", []):
            row = rows.get(sid)
            if row is None or row.started_at is None or row.started_at.timestamp() < kill["at"]:
                continue  # an orphaned pool process finished it, or it was never claimed again
            waits.append(row.started_at.timestamp() - kill["at"])
    return {
        "kills": dict(Counter(k["kind"] for k in kills if "skipped" not in k and "error" not in k)),
        "skipped": sum("skipped" in k or "error" in k for k in kills),
        "tries_killed_mid_job": sum(len(k.get("held", [])) for k in kills),
        "claimed_again_after_kill": len(waits),
        "longest_wait_after_kill_s": round(max(waits, default=0.0), 2),
        "longest_wait_beyond_grace_s": round(max([w - grace_s for w in waits] + [0.0]), 2),
    }


def count(db_url: str, accepted: dict[str, dict]) -> dict:
    """What the database says about the run: the figures the report prints."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                text(
                    "SELECT id, student_id, task_id, status, outcome, score, max_score, charged, "
                    "tries, created_at, started_at, finished_at FROM submissions"
                )
            )
        }
        per_request = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT idempotency_key FROM submissions "
                "GROUP BY client_key_id, idempotency_key HAVING count(*) > 1) d"
            )
        ).scalar()
        counters = conn.execute(
            text(
                "SELECT count(*) FROM attempt_counters a WHERE a.used <> (SELECT count(*) "
                "FROM submissions s WHERE s.task_id = a.task_id AND s.student_id = a.student_id "
                "AND coalesce(s.course, '') = a.course AND s.charged)"
            )
        ).scalar()
    engine.dispose()
    done = [rows[i] for i in accepted if i in rows and rows[i].status == "completed"]
    unexpected = [
        r.id for r in done if r.outcome != "internal_error"
        and (r.score >= r.max_score) != (accepted[r.id]["_expect"] == "full")
    ]  # fmt: skip
    usual = {}  # each distinct answer's most common outcome in the run
    for body_key, outcomes in _outcomes_by_answer(done, accepted).items():
        usual[body_key] = Counter(outcomes).most_common(1)[0][0]
    misgraded = [
        r.id for r in done if r.charged and r.outcome != usual[_answer_key(accepted[r.id])]
    ]  # fmt: skip
    latencies = sorted((r.finished_at - r.created_at).total_seconds() for r in done)
    runs = sorted((r.finished_at - r.started_at).total_seconds() for r in done if r.started_at)
    return {
        "accepted": len(accepted),
        "stored": sum(i in rows for i in accepted),
        "completed": len(done),
        "by_outcome": dict(Counter(r.outcome for r in done).most_common()),
        "duplicates": per_request + counters,
        "lost": len(accepted) - len(done),
        "retried": sum(r.tries > 1 for r in done),
        "unexpected": len(unexpected),
        "charged_for_our_failure": sum(r.outcome == "internal_error" and r.charged for r in done)
        + len(misgraded),
        "latency_s": _quantiles(latencies),
        "grading_s": _quantiles(runs),
    }


def _answer_key(body: dict) -> str:
    return json.dumps({k: v for k, v in body.items() if k not in ("student_id", "_expect")})


def _outcomes_by_answer(done: list, accepted: dict[str, dict]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for r in done:
        found.setdefault(_answer_key(accepted[r.id]), []).append(r.outcome)
    return found


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    cut = statistics.quantiles(values, n=100) if len(values) > 1 else [values[0]] * 99
    return {"p50": round(cut[49], 2), "p95": round(cut[94], 2), "max": round(values[-1], 2)}


def leftovers(redis_url: str, tmp_dir: Path, started_at: float, pids: set[int]) -> dict:
    """What the run left behind once stopped: sandbox containers made since it started by its
    own processes (`pids`, seen while it ran; others may share the engine), job messages and
    keys in its Redis, files in its temp dir."""
    client = docker.from_env()
    try:
        containers = [
            c.id for c in client.containers.list(all=True, filters={"label": "grader.sandbox=1"})
            if datetime.datetime.fromisoformat(c.attrs["Created"]).timestamp() >= started_at
            and _owner_pid(c.labels) in pids
        ]  # fmt: skip
    finally:
        client.close()
    r = redis.Redis.from_url(redis_url)
    kept = {REAPER_LAST_RUN_KEY, REAPER_TURN_KEY, "unacked", "unacked_index"}
    keys = [
        k.decode() for k in r.keys("*")
        if not k.startswith(b"_kombu.") and k.decode() not in kept  # its bindings, the reaper's
    ]  # fmt: skip
    messages = [
        json.loads(m)["headers"]["task"] for q in queue.LISTS for m in r.lrange(q, 0, -1)
    ]  # fmt: skip
    return {
        "sandbox_containers": containers,
        "redis_keys": keys,
        "job_messages": [m for m in messages if m != "grader.reap"],
        "temp_files": sorted(p.name for p in tmp_dir.iterdir()),
    }


def held_by_killed(redis_url: str) -> int:
    """Messages a killed worker main process had taken and not acknowledged: Redis gives them
    back after its visibility timeout (an hour); their rows were recovered without them."""
    return int(redis.Redis.from_url(redis_url).hlen("unacked"))


def print_table(report: dict) -> None:
    f = report["figures"]
    rows = [
        ("submissions sent", report["sent"]),
        ("HTTP statuses", ", ".join(f"{k}: {v}" for k, v in report["http_statuses"].items())),
        ("burst time (s)", f"{report['burst_s']:.1f}"),
        ("accepted (202)", f["accepted"]),
        ("stored in the database", f["stored"]),
        ("completed", f["completed"]),
        *((f"  {outcome}", n) for outcome, n in f["by_outcome"].items()),
        ("duplicates", f["duplicates"]),
        ("lost", f["lost"]),
        ("retried (more than one try)", f["retried"]),
        ("graded unexpectedly", f["unexpected"]),
        ("charged for our failure", f["charged_for_our_failure"]),
        ("drain time (s)", f"{report['drain_s']:.1f}"),
        ("throughput (graded/s)", f"{report['throughput_per_s']:.2f}"),
        ("latency submit→result (s)", json.dumps(f["latency_s"])),
        ("claim→result (s)", json.dumps(f["grading_s"])),
        ("left behind", json.dumps({k: len(v) for k, v in report["leftovers"].items()})),
    ]
    if report.get("chaos"):
        c = report["chaos"]
        rows += [
            ("chaos: kills", json.dumps(c["kills"])),
            ("chaos: tries killed mid-job", c["tries_killed_mid_job"]),
            ("chaos: longest wait after a kill (s)", c["longest_wait_after_kill_s"]),
            ("chaos: longest wait beyond the grace (s)", c["longest_wait_beyond_grace_s"]),
            ("chaos: messages held by killed mains", c["held_by_killed_mains"]),
        ]
    width = max(len(str(k)) for k, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=5400, help="give up draining after")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--concurrency", type=int, help="per worker (default: the worker's own)")
    parser.add_argument(
        "--chaos-every-s", type=float, default=0.0,
        help="SIGKILL a grading-side process about this often while the burst drains (0: never)",
    )  # fmt: skip
    parser.add_argument("--grace-s", type=float, help="GRADER_STUCK_GRACE_S for the service")
    parser.add_argument("--reaper-interval-s", type=float, help="GRADER_REAPER_INTERVAL_S")
    args = parser.parse_args()
    if not 1 <= args.submissions <= 5000 or not 1 <= args.workers <= 8:
        parser.error("1 to 5000 submissions, 1 to 8 workers")

    def stopped(signum: int, _frame: object) -> None:  # a run stopped still stops its stack
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stopped)
    started_at = time.time()
    work = Path(tempfile.mkdtemp(prefix="grader-load-"))
    tmp_dir = work / "tmp"
    tmp_dir.mkdir()
    services: list[Service] = []
    with database() as db_url, redis_server(work) as redis_url:
        env = {
            "GRADER_DATABASE_URL": db_url,
            "GRADER_REDIS_URL": redis_url,
            "GRADER_SANDBOX_BACKEND": "docker",
            "GRADER_MAX_QUEUE_LENGTH": str(args.submissions + 100),
            "GRADER_BOOTSTRAP_ADMIN_KEY": "grk_load_" + uuid.uuid4().hex,
            "TMPDIR": str(tmp_dir),
        }
        if args.grace_s is not None:
            env["GRADER_STUCK_GRACE_S"] = str(args.grace_s)
        if args.reaper_interval_s is not None:
            env["GRADER_REAPER_INTERVAL_S"] = str(args.reaper_interval_s)
        if args.chaos_every_s:  # the killed pool processes' warm sandboxes expire sooner
            env["GRADER_WARM_MAX_IDLE_S"] = "60"
        grace_s = args.grace_s if args.grace_s is not None else 120.0
        workers: list[Service] = []
        seen: set[int] = set()  # the workers' pool processes: whose sandboxes are this run's
        chaos: Chaos | None = None
        gradectl = [sys.executable, "-m", "cli.gradectl"]
        try:
            port = free_port()
            api_url = f"http://127.0.0.1:{port}"
            services.append(Service("api", [*gradectl, "serve", "--port", str(port)], env, work))
            wait(lambda: _ready(api_url), START_TIMEOUT_S, "the API")
            concurrency = ["--concurrency", str(args.concurrency)] if args.concurrency else []
            for n in range(args.workers):
                argv = [*gradectl, "worker", *concurrency]
                workers.append(Service(f"worker-{n + 1}", argv, env, work))
            made = subprocess.run(
                [*gradectl, "keys", "create", "--role", "lms", "--course", "load"],
                env={**os.environ, **env}, capture_output=True, check=True, cwd=PROJECT_ROOT,
            )  # fmt: skip
            key = json.loads(made.stdout)["key"]
            wait(lambda: _all_ready(api_url, key), SELF_TESTS_TIMEOUT_S, "the tasks' self-tests")

            bodies = answers(args.submissions, args.seed)
            print(f"sending {len(bodies)} submissions to {args.workers} worker(s)", flush=True)
            if args.chaos_every_s:
                chaos = Chaos(workers, db_url, redis_url, args.chaos_every_s, args.seed)
                chaos.start()
            accepted, statuses, burst_s = send_burst(api_url, key, bodies)
            drain_start = time.monotonic()
            engine = create_engine(db_url)

            def drained() -> bool:
                seen.update(c for w in workers for c in _pids_of_children(w.popen.pid))
                with engine.connect() as conn:
                    left = conn.execute(
                        text("SELECT count(*) FROM submissions WHERE status <> 'completed'")
                    ).scalar()
                print(f"  {left} left after {time.monotonic() - drain_start:.0f} s", flush=True)
                return left == 0

            with contextlib.suppress(SystemExit):
                wait(drained, args.timeout_s, "the queue to drain", every_s=15)
            drain_s = time.monotonic() - drain_start
            if chaos is not None:
                chaos.stop()
                settle(redis_url, grace_s)
            engine.dispose()
            figures = count(db_url, accepted)
            held = held_by_killed(redis_url)
        finally:
            if chaos is not None:
                chaos.stop()
            for service in [*reversed(workers), *(chaos.retired if chaos else []), *services]:
                service.stop()
        report = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}",
            "sent": len(bodies),
            "workers": args.workers,
            "http_statuses": {str(k): v for k, v in sorted(statuses.items())},
            "burst_s": burst_s,
            "drain_s": drain_s,
            "throughput_per_s": figures["completed"] / drain_s if drain_s else 0.0,
            "figures": figures,
            "leftovers": leftovers(
                redis_url, tmp_dir, started_at, seen | (chaos.seen if chaos else set())
            ),
        }
        if chaos is not None:
            report["chaos"] = chaos_figures(chaos.kills, _rows(db_url), grace_s) | {
                "every_s": args.chaos_every_s,
                "grace_s": grace_s,
                "held_by_killed_mains": held,
                "log": chaos.kills,
            }
    print_table(report)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"load_{args.submissions}_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out.relative_to(PROJECT_ROOT)}")
    ok = not (
        figures["lost"]
        or figures["duplicates"]
        or figures["unexpected"]
        or figures["charged_for_our_failure"]
    )
    if ok and not any(report["leftovers"].values()):
        shutil.rmtree(work)
        return 0
    print(f"logs kept in {work}")
    return 1


def settle(redis_url: str, grace_s: float) -> None:
    """After the drain, with the workers still up: wait for the messages that came back for
    rows graded since (they find them completed), and for every sandbox that exists now to
    go: the live workers replace theirs (GRADER_WARM_MAX_IDLE_S=60), a reaper sweeps the
    killed processes' at their expiry. A few minutes at most."""
    r = redis.Redis.from_url(redis_url)
    client = docker.from_env()
    label = {"label": f"{SANDBOX_LABEL}=1"}
    now_there = {c.id for c in client.containers.list(all=True, filters=label)}

    def quiet() -> bool:
        waiting = sum(r.llen(q) for q in queue.LISTS)
        there = {c.id for c in client.containers.list(all=True, filters=label)}
        return waiting == 0 and not there & now_there

    try:
        with contextlib.suppress(SystemExit):
            wait(quiet, 2 * grace_s + 180, "the messages and the sandboxes to settle", 2)
    finally:
        client.close()


def _rows(db_url: str) -> dict:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {r.id: r for r in conn.execute(text("SELECT id, started_at FROM submissions"))}
    finally:
        engine.dispose()


def _ready(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _all_ready(api_url: str, key: str) -> bool:
    """True once every bank task passed its self-test; a task that failed it (a machine so
    loaded that a reference ran past its time limit) ends the run at once: it never will."""
    tasks = httpx.get(
        f"{api_url}/v1/tasks", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()
    failed = [
        f"{t['id']}: " + "; ".join(
            line.strip() for line in (t.get("report") or "").splitlines() if "FAIL" in line
        )
        for t in tasks if t["status"] == "invalid"
    ]  # fmt: skip
    if failed:
        raise SystemExit("self-tests failed: " + " | ".join(failed))
    return bool(tasks) and all(t["status"] == "ready" for t in tasks)


if __name__ == "__main__":
    sys.exit(main())
