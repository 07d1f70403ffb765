"""The figures `/metrics` exposes are counted by the database (per status, per outcome, the
grading durations' histogram), on SQLite and on PostgreSQL alike, under the names and with
the meanings they always had."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from api.routers.health import BUCKETS_S, metrics
from core.settings import Settings
from db.models import Role, Submission, SubmissionStatus
from db.session import migrate
from graders.spec import parse_spec
from services import catalog
from services import keys as key_store
from tests.application.conftest import Recorder, choice_spec
from tests.e2e.conftest import fresh_database
from usecases import health
from usecases.unit_of_work import Context

START = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
# completed submissions: outcome, seconds from claim to stored result (two on a bound)
COMPLETED = [
    ("passed", 0.2), ("passed", 0.5), ("passed", 3.25), ("failed", 60.0), ("failed", 61.0),
    ("runtime_error", 400.0),
]  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request, ctx: Context) -> Iterator[Context]:
    """The use cases' context on SQLite (the application tests' own) or PostgreSQL."""
    if request.param == "sqlite":
        yield ctx
        return
    with fresh_database("grader_app_health") as url:
        migrate(url)
        yield Context(Settings(database_url=url), Recorder(url))


@pytest.fixture
def stored(database: Context) -> Context:
    """Submissions queued, running and completed, each with its clocks."""
    with database.unit_of_work() as work:
        version, _ = catalog.add_version(work.session, parse_spec(choice_spec("quiz")), "c1")
        key, _ = key_store.create_key(work.session, name="lms", role=Role.LMS, course="c1")

        def add(status: str, outcome: str | None = None, took_s: float | None = None) -> None:
            work.session.add(
                Submission(
                    task_id="quiz",
                    task_key=version.task_key,
                    task_version_id=version.id,
                    course="c1",
                    student_id="ann",
                    client_key_id=key.id,
                    choice="A",
                    status=status,
                    outcome=outcome,
                    started_at=None if status == SubmissionStatus.QUEUED else START,
                    finished_at=None if took_s is None else START + timedelta(seconds=took_s),
                )  # fmt: skip
            )

        add(SubmissionStatus.QUEUED)
        add(SubmissionStatus.QUEUED, outcome="passed")  # a regrade: its old outcome stays
        add(SubmissionStatus.RUNNING)
        for outcome, took_s in COMPLETED:
            add(SubmissionStatus.COMPLETED, outcome, took_s)
    return database


def test_the_figures_are_the_databases_counts(stored):
    found = health.figures(stored, BUCKETS_S)
    assert found.by_status == {"queued": 2, "running": 1, "completed": 6}
    assert found.by_outcome == {"passed": 3, "failed": 2, "runtime_error": 1}
    durations = found.durations
    assert durations.count == len(COMPLETED)
    assert durations.sum_s == pytest.approx(sum(s for _, s in COMPLETED), abs=1e-6)
    within = {b: sum(s <= b for _, s in COMPLETED) for b in BUCKETS_S}
    assert dict(durations.buckets) == within
    assert within[0.5] == 2 and within[60] == 4  # a duration on a bound is within it


def test_an_empty_database_has_no_durations(database):
    found = health.figures(database, BUCKETS_S)
    assert (found.by_status, found.by_outcome) == ({}, {})
    assert (found.durations.count, found.durations.sum_s) == (0, 0.0)
    assert dict(found.durations.buckets) == dict.fromkeys(BUCKETS_S, 0)


def test_the_metrics_keep_their_names(stored):
    text = metrics(stored).body.decode()
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert lines['grader_submissions{status="queued"}'] == 2
    assert lines['grader_outcomes_total{outcome="failed"}'] == 2
    assert lines['grader_grading_duration_seconds_bucket{le="0.5"}'] == 2
    assert lines['grader_grading_duration_seconds_bucket{le="300"}'] == 5
    assert lines['grader_grading_duration_seconds_bucket{le="+Inf"}'] == 6
    assert lines["grader_grading_duration_seconds_count"] == 6
    assert lines["grader_grading_duration_seconds_sum"] == pytest.approx(524.95, abs=1e-6)
    assert re.search(r'^grader_queue_depth\{queue="cpu"\} 0', text, re.M)
