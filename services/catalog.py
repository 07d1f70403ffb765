"""The task catalog in the database: immutable spec versions, their self-test state, the public view.

Posting a spec stores a new version as `validating`; the worker's self-test turns it
`ready` (with its expected facts) or `invalid` (with the report). Students and LMS keys
see the public view only: no reference, no setup, no check parameters, no expected facts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, defer

from db.models import Task, TaskVersion, now
from graders.errors import SpecError
from graders.facts import dump_facts, load_stored_facts
from graders.judge import Expected
from graders.spec import (
    TASK_ID_PATTERN,
    ChoiceTask,
    CodeTask,
    parse_spec,
    spec_digest,
    spec_from_data,
)
from services.errors import Conflict, Forbidden, InvalidInput, NotFound
from services.keys import Principal

STAFF_ROLES = ("admin", "instructor")
# The expected facts (tensors of a correct run) are for the judge; views and lookups skip them.
WITHOUT_EXPECTED = (defer(TaskVersion.expected_manifest), defer(TaskVersion.expected_tensors))


def parse_posted_spec(text: str) -> CodeTask | ChoiceTask:
    try:
        return parse_spec(text)
    except SpecError as exc:
        raise InvalidInput(str(exc)) from None


def add_version(
    session: Session, spec: CodeTask | ChoiceTask, course: str | None
) -> tuple[TaskVersion, bool]:
    """Store `spec` as the task's next version; an identical spec returns the existing version."""
    task = session.get(Task, spec.id, with_for_update=True)
    if task is None:
        task = Task(id=spec.id, course=course)
        session.add(task)
        session.flush()
    elif task.course != course:
        raise Forbidden(f"task {spec.id} belongs to another course")
    digest = spec_digest(spec)
    existing = session.scalar(
        select(TaskVersion).where(TaskVersion.task_id == spec.id, TaskVersion.digest == digest)
    )
    if existing is not None:
        return existing, False
    number = (
        session.scalar(select(func.max(TaskVersion.number)).where(TaskVersion.task_id == spec.id))
        or 0
    ) + 1
    version = TaskVersion(
        task_id=spec.id, number=number, digest=digest, spec=spec.model_dump(mode="json")
    )
    if isinstance(spec, ChoiceTask):  # graded by key: nothing to run
        version.status, version.report = "ready", "multiple choice: graded by key"
    task.archived = False
    session.add(version)
    session.flush()
    return version, True


_SPECS: dict[str, CodeTask | ChoiceTask] = {}  # version id -> parsed spec; versions never change
_SPECS_KEPT = 512


def _cached_spec(version_id: str | None, data: Callable[[], object]) -> CodeTask | ChoiceTask:
    """A version's parsed spec, parsed once per process (`data` reads it when it is not)."""
    spec = _SPECS.get(version_id) if version_id else None
    if spec is None:
        spec = spec_from_data(data())
        if version_id:
            if len(_SPECS) >= _SPECS_KEPT:
                _SPECS.clear()
            _SPECS[version_id] = spec
    return spec


def spec_of(version: TaskVersion) -> CodeTask | ChoiceTask:
    return _cached_spec(version.id, lambda: version.spec)


def spec_by_id(session: Session, version_id: str) -> CodeTask | ChoiceTask:
    """A version's parsed spec by id: read from the database only when not parsed yet."""
    return _cached_spec(
        version_id,
        lambda: session.scalar(select(TaskVersion.spec).where(TaskVersion.id == version_id)),
    )


@dataclass(frozen=True)
class Submittable:
    """What accepting a submission needs of its task: one query, the spec from the cache."""

    task_id: str
    course: str | None
    version_id: str
    spec: CodeTask | ChoiceTask


# Built once: the hot path of every submission (a statement built per call costs more CPU
# than its round trip on these machines).
_NEWEST_READY = (
    select(Task.id, Task.course, Task.archived, TaskVersion.id)
    .outerjoin(TaskVersion, (TaskVersion.task_id == Task.id) & (TaskVersion.status == "ready"))
    .where(Task.id == bindparam("task_id"))
    .order_by(TaskVersion.number.desc())
    .limit(1)
)


def submittable(session: Session, task_id: str, who: Principal) -> Submittable:
    """The task's newest ready version, or the error a submission to it gets."""
    found = (
        session.connection().execute(_NEWEST_READY, {"task_id": task_id}).first()
        if re.fullmatch(TASK_ID_PATTERN, task_id)
        else None
    )
    if found is None or not who.sees_course(found[1]):
        raise NotFound(f"no task {task_id}")
    tid, course, archived, version_id = found
    if archived or version_id is None:
        require_ready(session, get_task(session, tid, who))  # raises the precise Conflict
    return Submittable(tid, course, version_id, spec_by_id(session, version_id))


def expected_of(version: TaskVersion) -> Expected | None:
    if version.expected_manifest is None:
        return None
    facts = load_stored_facts(version.expected_manifest, version.expected_tensors or b"")
    return Expected(facts=facts, baseline_passing=frozenset(version.baseline_passing or []))


VALIDATION_ALLOWANCE_S = 900  # a self-test runs many sandboxes; under load it takes minutes


def overdue_self_tests(session: Session, grace_s: float) -> list[str]:
    """Versions still validating long after their self-test was sent (its message was lost);
    marked as sent again, so that a slow self-test is not run twice."""
    limit = now() - timedelta(seconds=VALIDATION_ALLOWANCE_S + grace_s)
    versions = session.scalars(
        select(TaskVersion)
        .where(
            TaskVersion.status == "validating",
            func.coalesce(TaskVersion.enqueued_at, TaskVersion.created_at) < limit,
        )
        .with_for_update(skip_locked=True)
    ).all()
    for version in versions:
        version.enqueued_at = now()
    return [v.id for v in versions]


def record_self_test(
    session: Session, version_id: str, ok: bool, report: str, expected: Expected | None
) -> None:
    version = session.get(TaskVersion, version_id, with_for_update=True)
    if version is None or version.status != "validating":
        return
    version.status = "ready" if ok else "invalid"
    version.report = report
    if ok and expected is not None:
        version.expected_manifest, version.expected_tensors = dump_facts(expected.facts)
        version.baseline_passing = sorted(expected.baseline_passing)


def get_task(session: Session, task_id: str, who: Principal) -> Task:
    task = session.get(Task, task_id) if re.fullmatch(TASK_ID_PATTERN, task_id) else None
    if task is None or not who.sees_course(task.course):
        raise NotFound(f"no task {task_id}")
    return task


def current_version(session: Session, task: Task) -> TaskVersion | None:
    """The newest ready version: what new submissions are graded against."""
    return session.scalar(
        select(TaskVersion)
        .options(*WITHOUT_EXPECTED)
        .where(TaskVersion.task_id == task.id, TaskVersion.status == "ready")
        .order_by(TaskVersion.number.desc())
    )


def latest_version(session: Session, task: Task) -> TaskVersion:
    return session.scalar(
        select(TaskVersion)
        .options(*WITHOUT_EXPECTED)
        .where(TaskVersion.task_id == task.id)
        .order_by(TaskVersion.number.desc())
    )


def version_by_number(session: Session, task: Task, number: int) -> TaskVersion:
    version = session.scalar(
        select(TaskVersion).where(TaskVersion.task_id == task.id, TaskVersion.number == number)
    )
    if version is None:
        raise NotFound(f"task {task.id} has no version {number}")
    return version


def list_tasks(session: Session, who: Principal, include_archived: bool = False) -> list[Task]:
    query = select(Task).order_by(Task.id)
    if not include_archived:
        query = query.where(Task.archived.is_(False))
    return [t for t in session.scalars(query) if who.sees_course(t.course)]


def archive(session: Session, task: Task, who: Principal) -> None:
    require_staff(who, task.course)
    task.archived = True


def require_staff(who: Principal, course: str | None) -> None:
    if who.role not in STAFF_ROLES or (who.role == "instructor" and course != who.course):
        raise Forbidden("only an instructor of this course or an admin may do this")


def is_staff_for(who: Principal, course: str | None) -> bool:
    return who.role == "admin" or (who.role == "instructor" and course == who.course)


def public_view(task: Task, version: TaskVersion | None) -> dict[str, Any]:
    """What anyone who may see the task sees: enough to answer it, nothing that grades it."""
    view: dict[str, Any] = {"id": task.id, "course": task.course, "archived": task.archived}
    if version is None:
        return view | {"status": "validating", "version": None}
    spec = spec_of(version)
    view |= {
        "version": version.number,
        "status": version.status,
        "kind": spec.kind,
        "title": spec.title,
        "difficulty": spec.difficulty,
        "prompt": spec.prompt,
        "hint": spec.hint,
        "max_attempts": spec.max_attempts,
        "max_score": spec.max_score,
    }
    if isinstance(spec, ChoiceTask):
        view["options"] = spec.options
    else:
        view["template"] = spec.template.model_dump() if spec.template else None
        view["checks"] = [{"name": c.name, "points": c.points} for c in spec.checks]
        view["limits"] = {"time_limit_s": spec.limits.time_limit_s, "gpu": spec.limits.gpu}
    return view


def staff_view(task: Task, version: TaskVersion) -> dict[str, Any]:
    return public_view(task, version) | {
        "spec": version.spec,
        "report": version.report,
        "digest": version.digest,
    }


def require_ready(session: Session, task: Task) -> TaskVersion:
    if task.archived:
        raise Conflict(f"task {task.id} is archived")
    version = current_version(session, task)
    if version is None:
        latest = latest_version(session, task)
        state = latest.status if latest else "missing"
        raise Conflict(
            f"task {task.id} is not ready for submissions (its newest version is {state})"
        )
    return version
