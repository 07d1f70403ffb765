"""What a course or an answer cannot do to the service, end to end through HTTP and the CLI:

- a stored text no UTF-8 body can hold (a lone surrogate) never makes a read answer 500,
  and what a run reports is stored printable in the first place;
- task ids are scoped by course: no request tells a course whether another has an id, no
  course takes an id another course or the shared bank needs, and start-up never fails
  because of a course's task (existing data keeps its meaning through the migration);
- a spec's limits are bounded by the deployment's settings, and a version whose sandbox
  the engine refuses ends `invalid` with the engine's reason instead of validating forever.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
import yaml
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, select, text

from core.settings import PROJECT_ROOT, Settings
from db.models import Submission, TaskVersion, now, task_key
from db.session import MIGRATIONS, session_scope
from graders.spec import parse_spec
from sandbox.docker_backend import engine_answers
from services.keys import hash_key
from tests.conftest import TEST_REDIS, gradectl, require_or_skip
from tests.e2e.conftest import (
    Key,
    Process,
    auth,
    choice_spec,
    fresh_database,
    post_spec,
    start_api,
    start_worker,
    wait_for,
)
from tests.unit.test_printable_results import CONTROLS, SURROGATES, escapes, unprintable

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

BANK_QUIZ = "quiz-freeze-syntax"  # a shared bank task of the e2e stack


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def submit(client: httpx.Client, key: Key | str, **body) -> httpx.Response:
    return client.post("/v1/submissions", json=body, headers=auth(key))


def decoded(response: httpx.Response) -> object:
    """The body, which must be strict UTF-8 JSON holding only printable strings."""
    assert response.status_code == 200, response.text
    data = json.loads(response.content.decode("utf-8"))
    assert unprintable(data) == []
    return data


# --- stored texts ---------------------------------------------------------------------

HOSTILE = [*SURROGATES, *CONTROLS]
TEXT = "|".join(HOSTILE)


def hostile_result(task_id: str) -> dict:
    """A result as a row could hold it whatever wrote it: every text (and a key) hostile."""
    return {
        "schema_version": 1, "task_id": task_id, "task_version": "v" + TEXT, "outcome": "failed",
        "score": 0.0, "max_score": 1.0,
        "checks": [{"name": "c" + TEXT, "passed": False, "points": 0.0, "max_points": 1.0,
                    "message": "unexpected x" + TEXT}],
        "feedback": [TEXT], "error": "Traceback " + TEXT, "stdout": TEXT + "\n", "stderr": TEXT,
        "duration_s": 0.1, "backend": "docker", "isolated": True, "notes": [TEXT],
        "k" + TEXT: {"k" + TEXT: [TEXT]},
    }  # fmt: skip


@pytest.fixture(scope="module")
def hostile_row(client, keys, database_url) -> dict:
    """A completed submission of alice's whose stored result was written past every parser."""
    task_id = unique("stored-text")
    response = post_spec(client, keys["instructor_a"], choice_spec(task_id))
    assert response.status_code == 202, response.text
    with session_scope(database_url) as session:
        key = task_key(task_id, "course-a")
        version = session.scalar(select(TaskVersion.id).where(TaskVersion.task_key == key))
        row = Submission(
            task_id=task_id, task_key=key, task_version_id=version, course="course-a",
            student_id="alice", client_key_id=keys["alice"].id, status="completed",
            outcome="failed", score=0.0, max_score=1.0, result=hostile_result(task_id),
            finished_at=now(), choice="B",
        )  # fmt: skip
        session.add(row)
    return {"id": row.id, "task_id": task_id}


@pytest.mark.parametrize("reader", ["alice", "lms_a", "instructor_a", "admin"])
def test_a_stored_result_no_utf8_can_hold_is_served_printable(
    client, keys, admin_key, hostile_row, reader
):
    key = admin_key if reader == "admin" else keys[reader]
    one = decoded(client.get(f"/v1/submissions/{hostile_row['id']}", headers=auth(key)))
    polled = decoded(
        client.get(f"/v1/submissions/{hostile_row['id']}", params={"wait_s": 1}, headers=auth(key))
    )
    assert one == polled and one["outcome"] == "failed"
    shown = "|".join("".join(escapes(t)) for t in HOSTILE)
    assert one["result"]["stdout"] == shown + "\n"
    assert one["result"]["checks"][0]["message"] == "unexpected x" + shown
    for params in ({}, {"task_id": hostile_row["task_id"]}, {"student_id": "alice"}):
        listed = decoded(
            client.get("/v1/submissions", params=params | {"limit": 500}, headers=auth(key))
        )
        assert hostile_row["id"] in {r["id"] for r in listed}


def test_an_answer_naming_a_parameter_with_a_lone_surrogate_gets_a_printable_result(tmp_answer):
    """The name travels from the sandbox through the facts into the checks' messages."""
    answer = tmp_answer(
        "import torch\n"
        'model.register_parameter("x\\udc80", torch.nn.Parameter(torch.zeros(1)))\n'
        "model.requires_grad_(False)\n"
        'print("out\\udc80\\x1b[2J\\x00")\n'
    )
    done = gradectl("grade", "finetune-freeze", str(answer), "--json")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result = json.loads(done.stdout.decode("utf-8"))
    assert unprintable(result) == []
    assert result["outcome"] in ("passed", "failed")
    messages = " ".join(check["message"] for check in result["checks"])
    assert "x\\udc80" in messages, messages  # the name is shown, escaped


# --- task ids per course --------------------------------------------------------------


def quiz(task_id: str, title: str, max_attempts: int) -> str:
    return choice_spec(task_id, max_attempts).replace("Which call freezes a model?", title)


def test_an_id_another_course_has_is_the_callers_own(client, keys, admin_key):
    taken, fresh = unique("scoped"), unique("scoped")
    a = post_spec(client, keys["instructor_a"], quiz(taken, "Course A's quiz", 2))
    assert a.status_code == 202, a.text
    # course B cannot tell an id course A has from one nobody has: both are its own, new
    b, b_fresh = (
        post_spec(client, keys["instructor_b"], quiz(task_id, "Course B's quiz", 5))
        for task_id in (taken, fresh)
    )
    assert (b.status_code, b_fresh.status_code) == (202, 202), (b.text, b_fresh.text)
    assert b.json() | {"id": None, "digest": None} == b_fresh.json() | {"id": None, "digest": None}
    assert b.json()["created"] is True and b.json()["version"] == 1

    for lms, course, title, left in (("lms_a", "course-a", "Course A's quiz", 1),
                                     ("lms_b", "course-b", "Course B's quiz", 4)):  # fmt: skip
        view = client.get(f"/v1/tasks/{taken}", headers=auth(keys[lms])).json()
        assert (view["course"], view["title"]) == (course, title)
        listed = [
            t for t in client.get("/v1/tasks", headers=auth(keys[lms])).json() if t["id"] == taken
        ]
        assert [(t["course"], t["title"]) for t in listed] == [(course, title)]
        sent = submit(client, keys[lms], task_id=taken, student_id="sam", choice="A")
        assert sent.status_code == 202 and sent.json()["attempts_left"] == left, sent.text
        rows = client.get("/v1/submissions", params={"task_id": taken}, headers=auth(keys[lms]))
        assert [r["task_id"] for r in rows.json()] == [taken]

    # each course's staff act on their own task only
    assert (
        client.post(f"/v1/tasks/{taken}/archive", headers=auth(keys["instructor_b"])).status_code
        == 200
    )
    assert (
        submit(client, keys["lms_b"], task_id=taken, student_id="sam", choice="A").status_code
        == 409
    )
    assert (
        submit(client, keys["lms_a"], task_id=taken, student_id="sam", choice="A").status_code
        == 202
    )

    # an admin belongs to no course: it says which course's task it means
    ambiguous = client.get(f"/v1/tasks/{taken}", headers=auth(admin_key))
    assert ambiguous.status_code == 409 and "course" in ambiguous.json()["error"]["message"]
    chosen = client.get(
        f"/v1/tasks/{taken}", params={"course": "course-b"}, headers=auth(admin_key)
    )
    assert chosen.status_code == 200 and chosen.json()["title"] == "Course B's quiz"


def test_an_id_the_shared_bank_has_is_reserved(client, keys, admin_key):
    bank_view = client.get(f"/v1/tasks/{BANK_QUIZ}", headers=auth(keys["lms_a"])).json()
    for who, params in ((keys["instructor_a"], {}), (admin_key, {"course": "course-b"})):
        response = post_spec(client, who, quiz(BANK_QUIZ, "Squatted", 3), **params)
        assert response.status_code == 409, response.text
        assert "shared task bank" in response.json()["error"]["message"]
    for lms in ("lms_a", "lms_b"):
        view = client.get(f"/v1/tasks/{BANK_QUIZ}", headers=auth(keys[lms])).json()
        assert view == bank_view and view["course"] is None


def _keys_of(env: dict[str, str], *wanted: tuple[str, str]) -> list[str]:
    made = []
    for role, course in wanted:
        done = gradectl("keys", "create", "--role", role, "--course", course, env=env)
        assert done.returncode == 0, done.stderr.decode()
        made.append(json.loads(done.stdout)["key"])
    return made


def test_start_up_loads_a_bank_task_whose_id_a_course_took_first(service_env, log_dir, tmp_path):
    bank = tmp_path / "bank"
    bank.mkdir()
    shutil.copy(PROJECT_ROOT / "taskbank" / "tasks" / f"{BANK_QUIZ}.yaml", bank)
    later = unique("later-bank")
    with fresh_database("grader_e2e_ids") as url:
        env = {**service_env, "GRADER_DATABASE_URL": url, "GRADER_TASKS_DIR": str(bank)}
        api, base = start_api(env, log_dir, "api-ids-1")
        try:
            instructor, lms_x, lms_y = _keys_of(
                env, ("instructor", "course-x"), ("lms", "course-x"), ("lms", "course-y")
            )
            posted = httpx.post(
                f"{base}/v1/tasks", content=quiz(later, "Course X's", 3), headers=auth(instructor)
            )
            assert posted.status_code == 202, posted.text
        finally:
            api.stop()
        (bank / f"{later}.yaml").write_text(quiz(later, "The bank's", 3))  # a new bank release
        api, base = start_api(env, log_dir, "api-ids-2")
        try:
            for lms, course, title in (
                (lms_x, "course-x", "Course X's"),
                (lms_y, None, "The bank's"),
            ):
                view = httpx.get(f"{base}/v1/tasks/{later}", headers=auth(lms)).json()
                assert (view["course"], view["title"]) == (course, title)
        finally:
            api.stop()


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _old_rows(url: str, lms_key: str) -> None:
    """Rows as the schema before task ids per course stored them: a shared and a course task,
    a ready version, a graded submission and a counted attempt of each."""
    engine = create_engine(url)
    stamp = "2026-11-28 10:00:00"
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO api_keys (id, name, prefix, key_hash, role, course, webhook_secret, created_at) "
                 "VALUES ('k-lms', 'old lms', 'grk_old', :hash, 'lms', 'course-m', 's', :at)"),
            {"hash": hash_key(lms_key), "at": stamp},
        )  # fmt: skip
        for task_id, course in (("old-shared", None), ("old-course", "course-m")):
            spec = parse_spec(quiz(task_id, f"{task_id} quiz", 3)).model_dump(mode="json")
            conn.execute(
                text("INSERT INTO tasks (id, course, archived, created_at) VALUES (:t, :c, false, :at)"),
                {"t": task_id, "c": course, "at": stamp},
            )  # fmt: skip
            conn.execute(
                text("INSERT INTO task_versions (id, task_id, number, digest, spec, status, report, "
                     "baseline_passing, created_at) VALUES (:v, :t, 1, :d, :spec, 'ready', 'ok', '[]', :at)"),
                {"v": f"v-{task_id}", "t": task_id, "d": "d" * 64, "spec": json.dumps(spec), "at": stamp},
            )  # fmt: skip
            conn.execute(
                text("INSERT INTO submissions (id, task_id, task_version_id, course, student_id, client_key_id, "
                     "choice, status, tries, charged, outcome, score, max_score, result, queue, created_at, "
                     "enqueued_at, finished_at) VALUES (:s, :t, :v, 'course-m', 'sam', 'k-lms', 'A', "
                     "'completed', 1, true, 'passed', 1.0, 1.0, :r, 'cpu', :at, :at, :at)"),
                {"s": uuid.uuid4().hex, "t": task_id, "v": f"v-{task_id}", "at": stamp,
                 "r": json.dumps({"task_id": task_id, "outcome": "passed", "stdout": "old run"})},
            )  # fmt: skip
            conn.execute(
                text("INSERT INTO attempt_counters (task_id, course, student_id, used) "
                     "VALUES (:t, 'course-m', 'sam', 1)"),
                {"t": task_id},
            )  # fmt: skip
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def old_database(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/grader.db"
        return
    with fresh_database("grader_e2e_migrate") as url:
        yield url


def test_existing_data_keeps_its_meaning_through_the_migration(old_database, service_env, log_dir):
    lms_key = "grk_old_lms_" + uuid.uuid4().hex
    command.upgrade(_config(old_database), "0003")
    _old_rows(old_database, lms_key)
    env = {**service_env, "GRADER_DATABASE_URL": old_database, "GRADER_LOAD_TASK_BANK": "false"}
    api, base = start_api(env, log_dir, f"api-migrated-{old_database.split(':')[0]}")  # migrates
    try:
        (instructor,) = _keys_of(env, ("instructor", "course-n"))
        with httpx.Client(base_url=base, headers=auth(lms_key), timeout=30) as c:
            rows = c.get("/v1/submissions").json()
            assert sorted((r["task_id"], r["result"]["stdout"]) for r in rows) == [
                ("old-course", "old run"), ("old-shared", "old run"),
            ]  # fmt: skip
            assert c.get("/v1/tasks/old-course").json()["course"] == "course-m"
            assert c.get("/v1/tasks/old-shared").json()["course"] is None
            for task_id in ("old-course", "old-shared"):  # the counted attempt still counts
                sent = c.post(
                    "/v1/submissions", json={"task_id": task_id, "student_id": "sam", "choice": "A"}
                )
                assert sent.status_code == 202 and sent.json()["attempts_left"] == 1, sent.text
        other = httpx.post(
            f"{base}/v1/tasks", content=quiz("old-course", "N's", 3), headers=auth(instructor)
        )
        assert other.status_code == 202, other.text
    finally:
        api.stop()


# --- limits bounded by the deployment -------------------------------------------------


def freeze_spec(task_id: str, **limits) -> str:
    """The bundled finetune-freeze spec under a new id, without known-wrong answers."""
    spec = yaml.safe_load((PROJECT_ROOT / "taskbank/tasks/finetune-freeze.yaml").read_text())
    spec |= {"id": task_id, "known_wrong": [], "limits": limits}
    return yaml.safe_dump(spec, sort_keys=False)


BOUNDS = Settings()  # the session's API runs with the defaults, as this process reads them
OVER = {
    "cpus": BOUNDS.max_task_cpus + 0.5,
    "memory_bytes": BOUNDS.max_task_memory_bytes + 1,
    "time_limit_s": BOUNDS.max_task_time_limit_s + 1,
    "max_output_bytes": BOUNDS.max_task_output_bytes + 1,
}


@pytest.mark.parametrize("field", sorted(OVER))
def test_a_limit_beyond_the_deployments_bound_is_422_naming_the_field(client, keys, field):
    task_id = unique("over-limit")
    response = post_spec(client, keys["instructor_a"], freeze_spec(task_id, **{field: OVER[field]}))
    assert response.status_code == 422, response.text
    assert f"limits.{field}" in response.json()["error"]["message"]
    assert client.get(f"/v1/tasks/{task_id}", headers=auth(keys["instructor_a"])).status_code == 404


def test_limits_at_the_deployments_bounds_are_accepted(client, keys):
    at = {
        "cpus": BOUNDS.max_task_cpus, "memory_bytes": BOUNDS.max_task_memory_bytes,
        "time_limit_s": BOUNDS.max_task_time_limit_s, "max_output_bytes": BOUNDS.max_task_output_bytes,
    }  # fmt: skip
    spec = freeze_spec(unique("at-limit"), **at).replace(
        "model = models.resnet18", "raise SystemExit(3)\nmodel = models.resnet18"
    )
    response = post_spec(client, keys["instructor_a"], spec)
    assert response.status_code == 202, response.text


def test_the_bounds_are_the_deployments_settings(service_env, log_dir):
    with fresh_database("grader_e2e_bounds") as url:
        env = {
            **service_env, "GRADER_DATABASE_URL": url, "GRADER_LOAD_TASK_BANK": "false",
            "GRADER_GPU": "off", "GRADER_MAX_TASK_CPUS": "0.5", "GRADER_MAX_TASK_MEMORY_BYTES": str(2**30),
        }  # fmt: skip
        api, base = start_api(env, log_dir, "api-bounds")
        try:
            (instructor,) = _keys_of(env, ("instructor", "course-b"))

            def post(spec: str) -> httpx.Response:
                return httpx.post(f"{base}/v1/tasks", content=spec, headers=auth(instructor))

            defaults = post(freeze_spec(unique("defaults")))  # 1 core and 3 GiB: too much here
            assert defaults.status_code == 422, defaults.text
            message = defaults.json()["error"]["message"]
            assert "limits.cpus" in message and "limits.memory_bytes" in message
            gpu = post(freeze_spec(unique("gpu"), cpus=0.5, memory_bytes=2**30, gpu="required"))
            assert gpu.status_code == 422 and "limits.gpu" in gpu.json()["error"]["message"]
            fits = post(freeze_spec(unique("fits"), cpus=0.5, memory_bytes=2**30, gpu="optional"))
            assert fits.status_code == 202, fits.text
        finally:
            api.stop()


HARD_DATA_LIMIT = 6 * 2**30  # the worker's: a sandbox asking more cannot be started by it


def _raising_hard_limits_is_refused() -> bool:
    probe = "import resource as r; L = 2**31; r.setrlimit(r.RLIMIT_DATA, (L, L)); r.setrlimit(r.RLIMIT_DATA, (L, 2 * L))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0


def test_a_version_whose_sandbox_cannot_start_ends_invalid_with_the_engines_reason(
    service_env, log_dir
):
    """Docker refuses more CPUs than its machine has; the process backend cannot give a job
    more memory than its worker may have. Either way the version's own limits are refused
    while the task's job starts under the default limits."""
    docker = engine_answers()
    if docker:
        limits, reason = {"cpus": float(os.cpu_count() + 1)}, "CPU"
    elif _raising_hard_limits_is_refused():
        limits, reason = {"memory_bytes": HARD_DATA_LIMIT + 2**30}, "could not start the sandbox"
    else:
        require_or_skip(
            False, "a Docker engine (or a machine where raising hard limits is refused)"
        )
        return
    broker = f"{TEST_REDIS}/15"  # no other stack's worker takes these messages
    with fresh_database("grader_e2e_refused") as url:
        env = {
            **service_env, "GRADER_DATABASE_URL": url, "GRADER_REDIS_URL": broker,
            "GRADER_LOAD_TASK_BANK": "false", "GRADER_WARM_POOL_SIZE": "0",
            "GRADER_MAX_TASK_CPUS": str(float(os.cpu_count() * 4)),
        }  # fmt: skip
        api, base = start_api(env, log_dir, "api-refused")
        worker: Process | None = None
        try:
            if docker:
                worker = start_worker(env, log_dir, "worker-refused")
            else:
                env["GRADER_SANDBOX_BACKEND"] = "process"
                argv = [
                    sys.executable, "-c",
                    "import os, resource, sys; L = int(sys.argv[1]);"
                    " resource.setrlimit(resource.RLIMIT_DATA, (L, L)); os.execv(sys.executable,"
                    " [sys.executable, '-m', 'cli.gradectl', 'worker', '--queues', 'cpu', '--concurrency', '1'])",
                    str(HARD_DATA_LIMIT),
                ]  # fmt: skip
                worker = Process("worker-refused", argv, env, log_dir)
            (instructor,) = _keys_of(env, ("instructor", "course-r"))
            task_id = unique("refused")
            posted = httpx.post(
                f"{base}/v1/tasks", content=freeze_spec(task_id, **limits), headers=auth(instructor)
            )
            assert posted.status_code == 202, posted.text
            with httpx.Client(base_url=base, timeout=30) as c:
                view = wait_for(
                    c,
                    f"/v1/tasks/{task_id}",
                    instructor,
                    lambda b: b["status"] != "validating",
                    240,
                )
            assert view["status"] == "invalid", view
            assert "cannot start under this version's limits" in view["report"], view["report"]
            assert reason in view["report"], view["report"]
        finally:
            if worker is not None:
                worker.stop(grace_s=30.0)
            api.stop()
            redis.Redis.from_url(broker).flushdb()
