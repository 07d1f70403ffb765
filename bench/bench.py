"""Holds the service to the hardware: what a task costs bare, and what the service adds to it.

Measures (a) the bare cost of each code task (a fresh Python: imports, then setup and the
reference solution), (b) the service end to end, one submission at a time per task (HTTP
submit to graded result), (c) a burst of mixed submissions, (d) both again with the warm
pool and the fast path off (and, on request, with warm one-job sandboxes), and (e) the
API alone (POST latency and requests/s with no worker running).
It starts its own API and worker on 127.0.0.1 with a fresh Redis DB index and a temporary
PostgreSQL database (a SQLite file when PostgreSQL does not answer), prints tables and
writes the figures as JSON. A script, not a test: nothing here asserts a target.

    .venv/bin/python -m bench.bench [--per-task 5] [--burst 300] [--out bench/results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from bench.lean_http import LeanConnection
from core.settings import PROJECT_ROOT, get_settings
from db.session import temporary_database
from graders.spec import CodeTask
from sandbox.checkpoints import ensure_checkpoints
from sandbox.docker_backend import SANDBOX_LABEL, engine_answers
from services.taskbank import load_examples, load_tasks

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/11"
ADMIN_KEY = "grk_bench_admin_" + uuid.uuid4().hex
START_TIMEOUT_S = 300
WARM_UP_REQUESTS = 3  # per client of (e), before it is measured
MODES = {  # GRADER_WARM_POOL_SIZE, GRADER_FORK_SERVER_JOBS
    "fast": ("1", str(get_settings().fork_server_jobs)),
    "warm": ("1", "1"),
    "cold": ("0", "1"),
}
BARE_SCRIPT = """
import json, sys, time
wall, cpu = time.perf_counter(), time.process_time()
import torch, torchvision
import_wall, import_cpu = time.perf_counter() - wall, time.process_time() - cpu
spec = json.load(sys.stdin)
torch.manual_seed(spec["seed"])
scope = {"__name__": "__main__", "device": torch.device("cpu")}
wall, cpu = time.perf_counter(), time.process_time()
exec(compile(spec["setup"], "<setup>", "exec"), scope)
exec(compile(spec["reference"], "<reference>", "exec"), scope)
print(json.dumps({"import_s": import_wall, "import_cpu_s": import_cpu,
                  "work_s": time.perf_counter() - wall, "work_cpu_s": time.process_time() - cpu}))
"""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with few samples, a real sample, never an interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.rjust(w) if j else c.ljust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def code_tasks() -> dict[str, CodeTask]:
    tasks = load_tasks(get_settings().tasks_dir)
    return {tid: spec for tid, spec in sorted(tasks.items()) if isinstance(spec, CodeTask)}


def bare_costs(tasks: dict[str, CodeTask], reps: int) -> dict[str, dict]:
    """(a) A fresh Python per run, one thread like a one-CPU sandbox, no sandbox at all."""
    settings = get_settings()
    ensure_checkpoints(settings.torch_home)
    env = {**os.environ, "TORCH_HOME": str(settings.torch_home), "OMP_NUM_THREADS": "1"}
    out = {}
    for tid, spec in tasks.items():
        runs = []
        for _ in range(reps):
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", BARE_SCRIPT], input=spec.model_dump_json().encode(),
                capture_output=True, env=env, check=True, cwd=tempfile.gettempdir(),
            )  # fmt: skip
            run = json.loads(proc.stdout.splitlines()[-1])
            run["total_s"] = time.perf_counter() - started
            runs.append(run)
        out[tid] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_answers() -> bool:
    engine = create_engine(POSTGRES_ADMIN_URL)
    try:
        with engine.connect():
            return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


@contextmanager
def database(sqlite: bool) -> Iterator[str]:
    """A PostgreSQL database of its own, dropped afterwards; a SQLite file without PostgreSQL."""
    if sqlite or not postgres_answers():
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    with temporary_database(POSTGRES_ADMIN_URL, "grader_bench") as url:
        yield url


class Service:
    """`gradectl serve` or `gradectl worker` in a process group of its own, logged to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.log = (log_dir / f"{name}.log").open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "cli.gradectl", *args], cwd=PROJECT_ROOT,
            env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        for sig, wait_s in ((signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


class Client:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
        )

    def submit(self, task_id: str, code: str) -> str:
        body = {"task_id": task_id, "student_id": f"bench-{uuid.uuid4().hex[:12]}", "code": code}
        response = self.http.post("/v1/submissions", json=body)
        response.raise_for_status()
        return response.json()["id"]

    def wait(self, submission_id: str, timeout_s: float = 600) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            row = self.http.get(f"/v1/submissions/{submission_id}", params={"wait_s": 30}).json()
            if row["status"] == "completed":
                return row
        raise TimeoutError(f"submission {submission_id} did not complete in {timeout_s} s")

    def grade(self, task_id: str, code: str) -> tuple[float, dict]:
        started = time.perf_counter()
        row = self.wait(self.submit(task_id, code))
        return time.perf_counter() - started, row


def wait_ready(client: Client, tasks: dict[str, CodeTask]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            listed = client.http.get("/v1/tasks").json()
            ready = {t["id"] for t in listed if t.get("status") == "ready"}
            if set(tasks) <= ready:
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(1)
    raise TimeoutError("the task bank was not ready (is the worker running?)")


def one_at_a_time(client: Client, tasks: dict[str, CodeTask], n: int, gap_s: float) -> dict:
    """(b) Each task's reference answer, one submission at a time, `gap_s` apart."""
    out = {}
    for tid, spec in tasks.items():
        times = []
        for _ in range(n):
            time.sleep(gap_s)
            seconds, row = client.grade(tid, spec.reference)
            if row.get("outcome") != "passed":
                raise RuntimeError(f"{tid}: the reference got {row.get('outcome')}: {row}")
            times.append(seconds)
        out[tid] = {"p50_s": percentile(times, 50), "p95_s": percentile(times, 95), "n": n}
    return out


def burst(client: Client, tasks: dict[str, CodeTask], n: int) -> dict:
    """(c) `n` mixed answers (references and bundled examples) posted at once, graded by all."""
    answers = [(tid, spec.reference) for tid, spec in tasks.items()]
    answers += [
        (tid, ex.answer.code) for tid in tasks for ex in load_examples(tid) if ex.answer.code
    ]
    ids = [client.submit(*answers[i % len(answers)]) for i in range(n)]
    rows = [client.wait(sid, timeout_s=3600) for sid in ids]
    created = [datetime.datetime.fromisoformat(r["created_at"]) for r in rows]
    finished = [datetime.datetime.fromisoformat(r["finished_at"]) for r in rows]
    latencies = [(f - c).total_seconds() for c, f in zip(created, finished, strict=True)]
    span = (max(finished) - min(created)).total_seconds()
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    return {
        "n": n, "span_s": span, "jobs_per_s": n / span, "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95), "outcomes": outcomes,
    }  # fmt: skip


def wait_quiet(settle_s: float = 5.0, timeout_s: float = 120.0) -> None:
    """Before (e): the stopped worker's sandboxes gone (their removal costs the engine CPU
    for seconds), then a few seconds more, so (e) measures the API and nothing else."""
    if engine_answers():
        import docker

        client = docker.APIClient()
        deadline = time.monotonic() + timeout_s
        while client.containers(all=True, filters={"label": f"{SANDBOX_LABEL}=1"}):
            if time.monotonic() > deadline:
                break
            time.sleep(1.0)
    time.sleep(settle_s)


async def _api_alone(
    url: str, task_id: str, clients: int, total: int, rate: float | None = None
) -> dict:
    """`clients` clients posting `total` requests: each as soon as its last is answered
    (saturation), or, with `rate`, each on a schedule so that together they offer `rate`
    requests a second. Each client holds one keep-alive connection (bench.lean_http),
    opened and used for WARM_UP_REQUESTS unmeasured requests before the measured ones."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    todo = iter(range(total))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    connections = [LeanConnection(url, headers) for _ in range(clients)]

    def body() -> dict:
        return {"task_id": task_id, "student_id": f"api-{uuid.uuid4().hex[:12]}", "code": "x = 1\n"}

    async def warm_up(connection: LeanConnection) -> None:
        for _ in range(WARM_UP_REQUESTS):
            await connection.post_json("/v1/submissions", body())

    async def one_client(index: int) -> None:
        connection = connections[index]
        period = clients / rate if rate else 0.0
        due = time.perf_counter() + period * index / clients
        try:
            for _ in todo:
                if period:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    due += period
                started = time.perf_counter()
                try:
                    status = str((await connection.post_json("/v1/submissions", body()))[0])
                except (OSError, asyncio.IncompleteReadError) as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - started)
                if status != "202":
                    errors[status] = errors.get(status, 0) + 1
        finally:
            await connection.close()

    # The load generator's own collector pausing would read as the API's latency: what this
    # process holds so far is set aside, as the API processes do with theirs.
    await asyncio.gather(*(warm_up(c) for c in connections))
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "clients": clients, "offered_per_s": rate, "requests": total, "requests_per_s": total / elapsed,
        "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99),
        "not_202": errors,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bare-reps", type=int, default=3, help="fresh interpreters per task")
    parser.add_argument("--per-task", type=int, default=5, help="one-at-a-time runs per task")
    parser.add_argument("--gap-s", type=float, default=5.0, help="pause before each of them")
    parser.add_argument("--burst", type=int, default=300, help="submissions in the burst")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--api-clients", type=int, default=50)
    parser.add_argument("--api-workers", type=int, default=2, help="API processes")
    parser.add_argument("--api-requests", type=int, default=2000)
    parser.add_argument(
        "--api-rates",
        default="50,200",
        help="requests/s offered in (e)'s paced runs, comma-separated",
    )
    parser.add_argument(
        "--modes",
        default="fast,cold",
        help="fast (warm fork servers), warm (warm one-job sandboxes), cold (a sandbox per job)",
    )
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file, not PostgreSQL")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results.json")
    args = parser.parse_args()

    tasks = code_tasks()
    api_rates = [float(r) for r in args.api_rates.split(",") if r]
    results: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''}".rstrip(", "),
        "backend": "docker" if engine_answers() else "process",
        "database": "sqlite" if args.sqlite else "postgresql",
        "args": {k: str(v) for k, v in vars(args).items()},
    }  # fmt: skip
    print(f"{results['date']}  {results['machine']}  sandbox: {results['backend']}")

    bare = bare_costs(tasks, args.bare_reps)
    results["bare"] = bare
    table(
        "(a) bare cost: a fresh python, imports then setup + reference (median)",
        ["task", "import s", "import cpu s", "work s", "work cpu s", "total s"],
        [[t, b["import_s"], b["import_cpu_s"], b["work_s"], b["work_cpu_s"], b["total_s"]] for t, b in bare.items()],
    )  # fmt: skip
    bare_p50 = statistics.median(b["total_s"] for b in bare.values())
    work_cpu = statistics.mean(b["work_cpu_s"] for b in bare.values())
    bound = (os.cpu_count() or 1) / work_cpu
    results["compute_bound_jobs_per_s"] = bound
    save(results, args.out)
    print(
        f"  compute bound: {os.cpu_count()} cores / {work_cpu:.3f} cpu s a job = {bound:.2f} jobs/s"
    )

    log_dir = Path(tempfile.mkdtemp(prefix="grader-bench-"))
    with database(args.sqlite) as database_url:
        env = {
            "GRADER_DATABASE_URL": database_url,
            "GRADER_REDIS_URL": REDIS_URL,
            "GRADER_SANDBOX_BACKEND": results["backend"],
            "GRADER_DATA_DIR": str(get_settings().data_dir),
            "GRADER_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "GRADER_REAPER_INTERVAL_S": "5",  # a self-test lost to a worker error is redone soon
            # (e) leaves every request it sends queued: the limit must not answer it with 503
            "GRADER_MAX_QUEUE_LENGTH": str(
                args.burst + args.api_requests * (1 + len(api_rates)) + 5000
            ),
        }
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        queue = redis.Redis.from_url(REDIS_URL)
        queue.flushdb()
        api = Service(
            "api", ["serve", "--port", str(port), "--workers", str(args.api_workers)], env, log_dir
        )
        client = Client(url)
        try:
            for mode in [m for m in args.modes.split(",") if m]:
                pool, jobs = MODES[mode]
                worker = Service(
                    f"worker-{mode}",
                    ["worker", "--beat", "--concurrency", str(args.concurrency)],
                    {**env, "GRADER_WARM_POOL_SIZE": pool, "GRADER_FORK_SERVER_JOBS": jobs},
                    log_dir,
                )
                try:
                    wait_ready(client, tasks)
                    for tid, spec in tasks.items():  # warm-up: first use of each worker process
                        for _ in range(args.concurrency):
                            client.grade(tid, spec.reference)
                    single = one_at_a_time(client, tasks, args.per_task, args.gap_s)
                    many = burst(client, tasks, args.burst)
                finally:
                    worker.stop()
                p50 = statistics.median(s["p50_s"] for s in single.values())
                results[mode] = {"one_at_a_time": single, "burst": many, "p50_s": p50}
                save(results, args.out)
                table(
                    f"(b) end to end, one at a time, {args.gap_s:g} s apart, sandboxes {mode}",
                    ["task", "n", "p50 s", "p95 s", "p50 / bare"],
                    [[t, s["n"], s["p50_s"], s["p95_s"], s["p50_s"] / bare[t]["total_s"]] for t, s in single.items()],
                )  # fmt: skip
                table(
                    f"(c) burst of {args.burst} mixed submissions, {args.concurrency} worker processes, sandboxes {mode}",
                    ["jobs/s", "p50 s", "p95 s", "span s", "of compute bound"],
                    [[many["jobs_per_s"], many["p50_s"], many["p95_s"], many["span_s"], f"{many['jobs_per_s'] / bound:.1%}"]],
                )  # fmt: skip
                print(f"  outcomes: {many['outcomes']}")
                print(
                    f"  service p50 / bare p50 = {p50:.3f} / {bare_p50:.3f} = {p50 / bare_p50:.2f}"
                )
            wait_quiet()
            results["api"] = [
                asyncio.run(_api_alone(url, next(iter(tasks)), args.api_clients, args.api_requests, rate))
                for rate in (None, *api_rates)
            ]  # fmt: skip
            table(
                f"(e) the API alone: POST /v1/submissions, {args.api_clients} concurrent clients, no worker",
                ["offered", "requests", "requests/s", "p50 ms", "p99 ms", "not 202"],
                [[f"{a['offered_per_s']:g}/s" if a["offered_per_s"] else "saturation", a["requests"], a["requests_per_s"], a["p50_ms"], a["p99_ms"], a["not_202"] or "none"] for a in results["api"]],
            )  # fmt: skip
        finally:
            api.stop()
            queue.flushdb()
    save(results, args.out)
    print(f"\nwrote {args.out}; service logs in {log_dir}")
    return 0


def save(results: dict, path: Path) -> None:
    """After every section, so a run cut short still leaves what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
