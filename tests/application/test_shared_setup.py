"""Whether a version's setup is the service's own is decided when the version is stored and
recorded with it; the worker hands the sandbox what the version records and never reads the
task bank for it. A bundled setup, whoever posted it, may be shared by a zygote; one that
differs from every bundled setup by a byte never is."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update

from db.models import TaskVersion, VersionStatus
from graders.facts import dump_facts, parse_frame
from graders.spec import CodeTask
from sandbox.fake_backend import FakeBackend, frame, timed_out
from services import grading
from services.taskbank import load_spec_file, load_tasks
from tests.application.conftest import choice_spec
from usecases import startup, submitting, tasks, worker
from usecases.admission import NewSubmission

TASK = "my-freeze"


@pytest.fixture
def bundled(settings) -> CodeTask:
    """The bank's freeze task under an id of the course's own."""
    spec = load_spec_file(settings.tasks_dir / "finetune-freeze.yaml")
    return spec.model_copy(update={"id": TASK})


def post(ctx, who, spec: CodeTask) -> TaskVersion:
    """Post `spec` as JSON (its setup byte for byte) to the poster's course; the version."""
    posted = tasks.post_spec(ctx, who, spec.model_dump_json().encode(), None)
    with ctx.unit_of_work() as work:
        return work.session.scalar(
            select(TaskVersion).where(TaskVersion.digest == posted["digest"])
        )


# each differs from the bundled setup by one byte
A_BYTE_OFF = {
    "one more": lambda setup: setup + " ",
    "one less": lambda setup: setup[:-1],
    "one other": lambda setup: setup.replace("import torch\n", "import Torch\n", 1),
}


def test_a_posted_spec_with_a_bundled_setup_is_stored_shared(ctx, people, bundled):
    assert post(ctx, people["instructor"], bundled).shared_setup is True


@pytest.mark.parametrize("change", A_BYTE_OFF.values(), ids=A_BYTE_OFF)
def test_a_setup_a_byte_off_every_bundled_one_is_stored_not_shared(ctx, people, bundled, change):
    own = bundled.model_copy(update={"setup": change(bundled.setup)})
    assert own.setup != bundled.setup and len(own.setup) - len(bundled.setup) in (-1, 0, 1)
    assert post(ctx, people["instructor"], own).shared_setup is False


def test_an_instructors_own_setup_and_a_choice_task_are_stored_not_shared(ctx, people, bundled):
    own = bundled.model_copy(update={"setup": "import torch\nmodel = torch.nn.Linear(4, 2)\n"})
    assert post(ctx, people["instructor"], own).shared_setup is False
    tasks.post_spec(ctx, people["instructor"], choice_spec("quiz").encode(), None)
    with ctx.unit_of_work() as work:
        quiz = work.session.scalar(select(TaskVersion).where(TaskVersion.task_key == "c1/quiz"))
        assert quiz.shared_setup is False


def test_start_up_stores_the_banks_versions_shared_and_marks_those_stored_before(
    ctx, broker, settings
):
    def shared() -> dict[str, bool]:
        with ctx.unit_of_work() as work:
            rows = work.session.execute(select(TaskVersion.task_key, TaskVersion.shared_setup))
            return dict(rows.all())

    bank = load_tasks(settings.tasks_dir).values()
    setups = {s.id: isinstance(s, CodeTask) and bool(s.setup.strip()) for s in bank}
    assert any(setups.values()) and not all(setups.values())  # a quiz, a task with no setup
    startup.prepare(ctx)
    found = shared()
    assert found == setups
    with ctx.unit_of_work() as work:  # as the migration leaves the versions stored before it
        work.session.execute(update(TaskVersion).values(shared_setup=False))
    startup.prepare(ctx)
    assert shared() == found


@pytest.fixture
def sandbox(monkeypatch) -> FakeBackend:
    """The worker's backend: records each RunRequest, every run times out. Grading may not
    ask the task bank whether a setup is shipped: the version says so."""
    backend = FakeBackend(lambda job: timed_out())
    monkeypatch.setattr(worker, "worker_backend", lambda settings: backend)

    def asked(*args, **kwargs):
        raise AssertionError("the worker asked the task bank whether a setup is shipped")

    monkeypatch.setattr(grading, "is_shipped_setup", asked)
    return backend


def make_ready(ctx, version_id: str) -> None:
    """Ready, with expected facts (of no check: a timed-out run never reads them)."""
    nonce = "0" * 32
    manifest, tensors = dump_facts(parse_frame(frame(nonce, {}), nonce))
    with ctx.unit_of_work() as work:
        version = work.session.get(TaskVersion, version_id)
        version.status, version.expected_manifest = VersionStatus.READY, manifest
        version.expected_tensors = tensors


@pytest.mark.parametrize("whose", ["bundled", "own"])
def test_the_worker_hands_the_sandbox_what_the_version_records(
    ctx, people, bundled, sandbox, whose
):
    spec = bundled
    if whose == "own":
        spec = bundled.model_copy(update={"setup": bundled.setup + "model.eval()\n"})
    version = post(ctx, people["instructor"], spec)
    assert version.shared_setup is (whose == "bundled")

    assert worker.validate_version(ctx, version.id) == "invalid"  # every run timed out
    assert sandbox.requests
    make_ready(ctx, version.id)
    made = submitting.submit(ctx, people["lms"], NewSubmission(TASK, "ann", code="pass\n"))
    before = len(sandbox.requests)
    assert worker.grade_submission(ctx, made.row.id) == "stored"
    assert len(sandbox.requests) == before + 1

    for request in sandbox.requests:  # the self-test's runs and the grading run
        if whose == "bundled":
            assert json.loads(request.shared_setup)["setup"] == spec.setup
        else:
            assert request.shared_setup == b""
