"""The OpenAPI says what the API really answers: schemathesis, a property-based client made
from it, calls every operation of a running API (valid and invalid input, as an admin, with
real ids among made-up ones) and fails on a server error, a status the operation does not
document, an undocumented content type or a body that does not match its schema."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import auth, choice_spec, fresh_database, post_spec, start_api
from tests.faults.conftest import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"  # fmt: skip
COURSE, TASK = "contract", "contract-quiz"
RUN_LIMIT_S = 150


@pytest.fixture(scope="module")
def contract_api(service_env, log_dir, admin_key, tmp_path_factory) -> Iterator[str]:
    """An API of its own: a fresh database, a private broker no worker reads (the client's
    submissions stay queued), a short long poll."""
    broker = RedisServer(tmp_path_factory.mktemp("contract"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(broker.stop)
        database = cleanup.enter_context(fresh_database("grader_contract"))
        env = service_env | {
            "GRADER_DATABASE_URL": database, "GRADER_REDIS_URL": broker.url,
            "GRADER_LOAD_TASK_BANK": "false", "GRADER_LONG_POLL_MAX_S": "0.2",
        }  # fmt: skip
        api, url = start_api(env, log_dir, "api-contract")
        try:
            yield url
        finally:
            api.stop()


def test_every_answer_is_the_one_the_openapi_documents(contract_api, admin_key, tmp_path):
    """A ready task and a queued submission first, so that real ids are among those tried."""
    with httpx.Client(base_url=contract_api, timeout=30) as client:
        posted = post_spec(client, admin_key, choice_spec(TASK), course=COURSE)
        assert posted.status_code == 202, posted.text
        submitted = client.post(
            "/v1/submissions",
            json={"task_id": TASK, "student_id": "s1", "choice": "A"},
            headers=auth(admin_key),
        )
        assert submitted.status_code == 202, submitted.text
        paths = client.get("/openapi.json").json()["paths"]
    operations = sum(len(ops) for ops in paths.values())
    known = {
        "task": [TASK], "course": [COURSE], "number": [1],
        "submission": [submitted.json()["id"]],
    }  # fmt: skip
    bindings = {
        "path.task_id": "task", "body.task_id": "task", "query.task_id": "task",
        "query.course": "course", "path.number": "number", "path.submission_id": "submission",
    }  # fmt: skip
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "request-timeout = 20\n"
        f"headers = {{ Authorization = {json.dumps('Bearer ' + admin_key)} }}\n"
        + "".join(f"[dictionaries.{k}]\nvalues = {json.dumps(v)}\n" for k, v in known.items())
        + "[parameters]\n"
        + "".join(
            f'"{k}" = {{ dictionary = "{v}", probability = 0.5 }}\n' for k, v in bindings.items()
        )
    )
    argv = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
        f"{contract_api}/openapi.json", "--checks", CHECKS, "--max-examples", "25",
        "--workers", "1", "--no-color", "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_LIMIT_S,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-3000:]
    assert f"Tested: {operations}\n" in done.stdout, done.stdout[-3000:]
