"""The learner's pages as a person meets them: per seed task, the time from pressing Submit
to the result shown in the page, measured in a real browser.

Starts its own API and worker (as `bench/bench.py` does: 127.0.0.1, a Redis DB index of its
own, a temporary PostgreSQL database or a SQLite file) with the seed practice set as the
task bank, and drives Debian's Chromium (`/usr/bin/chromium`, headless, never a downloaded
build) with Playwright: for each seed task, `--per-task` fresh learners each open the task's
page, send the right answer (the reference solution typed into the code form, or the right
option), and wait until the page's status region says `Graded: ...`, which the page's
script writes when it puts the server-rendered result in place. One unmeasured answer per
task first warms the worker. Beside each task's figures, the service's own share (the
row's `created_at` to `finished_at`, read from the API): the rest is the page's (the form's
post and redirect, the page's load, its script's long poll). Prints a table and writes the
figures as JSON. A script, not
a test: nothing here asserts a target.

    .venv/bin/python -m bench.browser [--per-task 5] [--redis-url URL] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

from bench.bench import (
    ADMIN_KEY,
    Client,
    Service,
    database,
    free_port,
    percentile,
    save,
    table,
)
from core.settings import PROJECT_ROOT, get_settings
from graders.spec import ChoiceTask, CodeTask
from sandbox.docker_backend import engine_answers
from services.taskbank import load_tasks
from taskbank import SEED_SET

CHROMIUM = Path("/usr/bin/chromium")
COURSE = "bench-web"
GRADED = re.compile(r"^Graded: ")
READY_TIMEOUT_S = 900  # a fresh checkout self-tests the set first
RESULT_TIMEOUT_MS = 120_000


def seed_tasks(tasks_dir: Path) -> dict[str, CodeTask | ChoiceTask]:
    """The seed practice set, copied alone into `tasks_dir` (the service's task bank)."""
    for task_id in SEED_SET:
        shutil.copy(get_settings().tasks_dir / f"{task_id}.yaml", tasks_dir)
    tasks = load_tasks(tasks_dir)
    return {task_id: tasks[task_id] for task_id in SEED_SET}


def wait_ready(client: Client, task_ids: list[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            listed = client.http.get("/v1/tasks").json()
            states = {t["id"]: t.get("status") for t in listed}
            if any(states.get(t) == "invalid" for t in task_ids):
                raise RuntimeError(f"a seed task failed its self-test: {states}")
            if all(states.get(t) == "ready" for t in task_ids):
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(2)
    raise TimeoutError("the seed set was not ready (is the worker running?)")


def lms_key(env: dict[str, str]) -> str:
    """An LMS key of the course, made as an operator makes one (`gradectl keys create`)."""
    done = subprocess.run(
        [sys.executable, "-m", "cli.gradectl", "keys", "create", "--role", "lms",
         "--course", COURSE, "--name", "bench browser"],
        cwd=PROJECT_ROOT, env={**os.environ, **env}, capture_output=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)["key"]


def answer_in_page(page, url: str, spec: CodeTask | ChoiceTask) -> float:
    """Open a learner's link, the task's page, send the right answer: seconds from pressing
    Submit to the result shown (the status region saying `Graded: ...`)."""
    from playwright.sync_api import expect

    page.goto(url)
    page.goto(f"/learn/tasks/{spec.id}")
    if isinstance(spec, ChoiceTask):
        page.get_by_role("radio", name=re.compile(rf"^{spec.answer}\. ")).check()
        form = page.get_by_role("form", name="Your answer")
    else:
        page.get_by_label("Your code").fill(spec.reference)
        form = page.get_by_role("form", name="Write the code")
    started = time.perf_counter()
    form.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("status")).to_have_text(GRADED, timeout=RESULT_TIMEOUT_MS)
    return time.perf_counter() - started


def measure(base_url: str, key: str, tasks: dict, per_task: int) -> dict[str, dict]:
    from playwright.sync_api import sync_playwright

    api = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def link(task_id: str, student_id: str) -> str:
        made = api.post("/v1/links", json={"student_id": student_id, "task_ids": [task_id]})
        made.raise_for_status()
        return made.json()["url"]

    def server_s(task_id: str, student_id: str) -> float:
        """The service's own share: the row's `created_at` to `finished_at`."""
        params = {"task_id": task_id, "student_id": student_id}
        row = api.get("/v1/submissions", params=params).json()[0]
        created = datetime.datetime.fromisoformat(row["created_at"])
        return (datetime.datetime.fromisoformat(row["finished_at"]) - created).total_seconds()

    out: dict[str, dict] = {}
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            for task_id, spec in tasks.items():
                times, served = [], []
                for i in range(per_task + 1):  # the first warms the worker up: not counted
                    student_id = f"bench-{uuid.uuid4().hex[:10]}"
                    context = browser.new_context(base_url=base_url)
                    try:
                        page = context.new_page()
                        seconds = answer_in_page(page, link(task_id, student_id), spec)
                    finally:
                        context.close()
                    if i:
                        times.append(seconds)
                        served.append(server_s(task_id, student_id))
                out[task_id] = {
                    "n": len(times), "p50_s": percentile(times, 50),
                    "p95_s": percentile(times, 95), "max_s": max(times),
                    "server_p50_s": percentile(served, 50),
                }  # fmt: skip
                print(f"  {task_id}: p50 {out[task_id]['p50_s']:.3f} s", flush=True)
        finally:
            browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-task", type=int, default=5, help="measured answers per task")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/11", help="a Redis DB the run empties"
    )
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file, not PostgreSQL")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M")
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / f"browser_{stamp}.json"
    )
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"no browser at {CHROMIUM} (scripts/bootstrap.sh installs it)", file=sys.stderr)
        return 2
    if args.per_task < 1:
        parser.error("--per-task must be at least 1")

    results: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "backend": "docker" if engine_answers() else "process",
        "database": "sqlite" if args.sqlite else "postgresql",
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    print(f"{results['date']}  {results['machine']}  sandbox: {results['backend']}")
    log_dir = Path(tempfile.mkdtemp(prefix="grader-bench-browser-"))
    tasks_dir = log_dir / "tasks"
    tasks_dir.mkdir()
    tasks = seed_tasks(tasks_dir)
    queue = redis.Redis.from_url(args.redis_url)
    queue.flushdb()
    with database(args.sqlite) as database_url:
        env = {
            "GRADER_DATABASE_URL": database_url,
            "GRADER_REDIS_URL": args.redis_url,
            "GRADER_TASKS_DIR": str(tasks_dir),
            "GRADER_SANDBOX_BACKEND": results["backend"],
            "GRADER_DATA_DIR": str(get_settings().data_dir),
            "GRADER_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "GRADER_REAPER_INTERVAL_S": "5",
        }
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = Service("api", ["serve", "--port", str(port)], env, log_dir)
        worker = Service(
            "worker", ["worker", "--beat", "--concurrency", str(args.concurrency)], env, log_dir
        )
        try:
            wait_ready(Client(url), list(tasks))
            results["tasks"] = measure(url, lms_key(env), tasks, args.per_task)
        finally:
            worker.stop()
            api.stop()
            queue.flushdb()
    save(results, args.out)
    table(
        f"the learner's page, Submit pressed to result shown (Chromium, {args.per_task} per task)",
        ["task", "n", "p50 s", "p95 s", "max s", "service p50 s"],
        [[t, r["n"], r["p50_s"], r["p95_s"], r["max_s"], r["server_p50_s"]] for t, r in results["tasks"].items()],
    )  # fmt: skip
    print(f"\nwrote {args.out}; service logs in {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
