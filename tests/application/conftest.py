"""The application layer on SQLite: a fresh database file per test (a copy of one migrated
once), the queue replaced by an in-memory broker that records what is sent and checks, at
each send, that the rows its messages name are committed. No Redis, no sandbox."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

from core.settings import Settings
from db.models import Role, Submission
from db.session import engine_for, migrate, session_scope
from graders.spec import parse_spec
from services import catalog
from services import keys as key_store
from services.keys import Principal
from services.queue import FOREGROUND, GRADE, SELF_TESTS, Message
from usecases.unit_of_work import Context


class Recorder:
    """An in-memory broker. `sent`: every message, in order, and what its queues hold
    (`depth`: nothing consumes them but `take`). A grading message whose row another
    connection cannot read yet (not committed) is recorded in `early`."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.sent: list[Message] = []
        self.early: list[Message] = []
        self.down = False  # sends fail, as a broker that does not answer

    def send(self, messages: Sequence[Message]) -> bool:
        if self.down:
            return False
        ids = [m.args[0] for m in messages if m.name == GRADE]
        self.early += [
            m for m in messages if m.name == GRADE and m.args[0] not in self._committed(ids)
        ]
        self.sent.extend(messages)
        return True

    def _committed(self, ids: list[str]) -> set[str]:
        """The submissions of `ids` another connection reads: one that neither waits for a
        writer nor sees what it has not committed (SQLite: a plain reader of the WAL)."""
        if not ids:
            return set()
        if not self.database_url.startswith("sqlite"):
            with session_scope(self.database_url) as other:
                return set(other.scalars(select(Submission.id).where(Submission.id.in_(ids))))
        reader = sqlite3.connect(self.database_url.removeprefix("sqlite:///"))
        try:
            marks = ",".join("?" * len(ids))
            query = f"SELECT id FROM submissions WHERE id IN ({marks})"
            return {row[0] for row in reader.execute(query, ids)}
        finally:
            reader.close()

    def depth(self) -> dict[str, int] | None:
        if self.down:
            return None
        counts = {"cpu": 0, "gpu": 0, "webhooks": 0, SELF_TESTS: 0}
        for message in self.sent:
            counts[message.queue if message.priority == FOREGROUND else SELF_TESTS] += 1
        return counts

    def take(self, name: str | None = None) -> list[Message]:
        """Remove and return the messages sent (of one task name), as a worker would."""
        taken = [m for m in self.sent if name is None or m.name == name]
        self.sent = [m for m in self.sent if m not in taken]
        return taken


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "grader.db"
    url = f"sqlite:///{path}"
    migrate(url)
    engine_for(url).dispose()
    return path


@pytest.fixture
def settings(template_db: Path, tmp_path: Path) -> Iterator[Settings]:
    path = tmp_path / "grader.db"
    shutil.copy(template_db, path)
    url = f"sqlite:///{path}"
    yield Settings(
        database_url=url,
        redis_url="redis://127.0.0.1:1/0",  # never reached: the recorder is the broker
        max_queue_length=1000,
        stuck_grace_s=4,
        grading_max_retries=3,
        webhook_allowed_networks="127.0.0.0/8",
        webhook_backoff_s=0.5,
        sandbox_backend="process",  # what the reaper sweeps: nothing (Docker only)
    )
    engine_for(url).dispose()


@pytest.fixture
def broker(settings: Settings) -> Recorder:
    return Recorder(settings.effective_database_url)


@pytest.fixture
def ctx(settings: Settings, broker: Recorder) -> Iterator[Context]:
    yield Context(settings, broker)
    assert broker.early == [], "a message was sent before its row was committed"


def choice_spec(task_id: str, max_attempts: int | None = None) -> str:
    """A multiple-choice spec: ready once stored, graded without a sandbox."""
    limit = f"max_attempts: {max_attempts}\n" if max_attempts is not None else ""
    return (
        f"id: {task_id}\nkind: choice\ntitle: Which call freezes a model?\ndifficulty: easy\n"
        f"prompt: Pick the call that freezes every parameter.\n{limit}"
        "options: {A: model.requires_grad_(False), B: model.eval(), C: model.freeze()}\n"
        "answer: A\nexplanation: requires_grad_(False) turns autograd off for every parameter.\n"
    )


def add_task(ctx: Context, task_id: str, course: str | None, max_attempts: int | None = 2) -> None:
    with ctx.unit_of_work() as work:
        catalog.add_version(work.session, parse_spec(choice_spec(task_id, max_attempts)), course)


@pytest.fixture
def principal(ctx: Context):
    """A key of a role (and course, and student) made in the database: its Principal."""

    def make(role: Role, course: str | None = None, student_id: str | None = None) -> Principal:
        with ctx.unit_of_work() as work:
            _, plaintext = key_store.create_key(
                work.session, name=str(role), role=role, course=course, student_id=student_id
            )
            return key_store.authenticate(work.session, plaintext)

    return make


@pytest.fixture
def people(principal) -> dict[str, Principal]:
    """Course c1's staff, LMS and two students, course c2's instructor and LMS, an admin."""
    return {
        "admin": principal(Role.ADMIN),
        "instructor": principal(Role.INSTRUCTOR, "c1"),
        "lms": principal(Role.LMS, "c1"),
        "ann": principal(Role.STUDENT, "c1", "ann"),
        "bob": principal(Role.STUDENT, "c1", "bob"),
        "other_instructor": principal(Role.INSTRUCTOR, "c2"),
        "other_lms": principal(Role.LMS, "c2"),
    }


@pytest.fixture
def made_key(ctx):
    """A key of `role` in course c1 (by default), made in the test's database: its plaintext."""

    def make(role: Role, course: str | None = "c1", student_id: str | None = None) -> str:
        with ctx.unit_of_work() as work:
            return key_store.create_key(
                work.session, name=str(role), role=role, course=course, student_id=student_id
            )[1]

    return make
