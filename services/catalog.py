"""The task catalog in the database: immutable spec versions, their self-test state, the public view.

Posting a spec stores a new version as `validating`; the worker's self-test turns it
`ready` (with its expected facts) or `invalid` (with the report). Students and LMS keys
see the public view only: no reference, no setup, no check parameters, no expected facts.

Task ids are scoped: the shared bank (bundled tasks, an admin's tasks without a course)
has one namespace and each course one of its own. A caller's id names its course's task,
else the shared bank's; a course may not take an id the shared bank has (the bank is
public, so saying so tells nothing), and an id other courses use is simply the course's
own. Once a course has an id it names that task for good, whatever the bank adds later.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session, defer

from core.settings import Settings
from db.models import Task, TaskVersion, now, task_key
from graders.errors import SpecError
from graders.facts import dump_facts, load_stored_facts
from graders.judge import Expected
from graders.result import printable
from graders.spec import (
    TASK_ID_PATTERN,
    ChoiceTask,
    CodeTask,
    LimitBounds,
    parse_spec,
    spec_digest,
    spec_from_data,
)
from services.errors import Conflict, Forbidden, InvalidInput, NotFound
from services.keys import Principal

STAFF_ROLES = ("admin", "instructor")
# The expected facts (tensors of a correct run) are for the judge; views and lookups skip them.
WITHOUT_EXPECTED = (defer(TaskVersion.expected_manifest), defer(TaskVersion.expected_tensors))


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def limit_bounds(settings: Settings) -> LimitBounds:
    return LimitBounds(
        time_limit_s=settings.max_task_time_limit_s,
        memory_bytes=settings.max_task_memory_bytes,
        max_output_bytes=settings.max_task_output_bytes,
        cpus=settings.max_task_cpus,
        gpu=settings.gpu != "off",
    )


def parse_posted_spec(text: str, settings: Settings) -> CodeTask | ChoiceTask:
    """A posted spec, refused (naming the field) unless it fits the schema, holds only text
    that can be stored and served (YAML's `"\\udc80"` escape makes a lone surrogate), and
    asks for limits this deployment can run."""
    try:
        spec = parse_spec(text)
    except SpecError as exc:
        raise InvalidInput(str(exc)) from None
    problems = [
        f"{field}: holds a lone surrogate (a \\uXXXX escape of half a pair), which no UTF-8 text can hold"
        for field in _unencodable(spec.model_dump(mode="json"), "")[:5]
    ]
    if isinstance(spec, CodeTask):
        problems += spec.limits.beyond(limit_bounds(settings))
    if problems:
        raise InvalidInput("invalid spec: " + "; ".join(problems))
    return spec


def _unencodable(data: Any, path: str) -> list[str]:
    """The paths (`checks[0].feedback`) of the strings in `data` that hold a lone surrogate."""
    if isinstance(data, str):
        return [path or "(root)"] if _SURROGATE.search(data) else []
    if isinstance(data, dict):
        found = []
        for key, value in data.items():
            name = printable(str(key))
            if _SURROGATE.search(str(key)):
                found.append(f"{path}.{name} (the key)" if path else f"{name} (the key)")
            found += _unencodable(value, f"{path}.{name}" if path else name)
        return found
    if isinstance(data, list):
        return [p for i, value in enumerate(data) for p in _unencodable(value, f"{path}[{i}]")]
    return []


def add_version(
    session: Session, spec: CodeTask | ChoiceTask, course: str | None
) -> tuple[TaskVersion, bool]:
    """Store `spec` as the next version of the task with its id in `course` (None: the shared
    bank); an identical spec returns the existing version. A course's new task may not take
    an id the shared bank has; the shared bank takes any id (the bank loads at start-up)."""
    key = task_key(spec.id, course)
    task = session.get(Task, key, with_for_update=True)
    if task is None:
        if course is not None and session.get(Task, task_key(spec.id, None)) is not None:
            raise Conflict(
                f"task id {spec.id} is reserved: the shared task bank has a task with this id;"
                " choose another id"
            )
        task = Task(key=key, id=spec.id, course=course)
        session.add(task)
        session.flush()
    digest = spec_digest(spec)
    existing = session.scalar(
        select(TaskVersion).where(TaskVersion.task_key == key, TaskVersion.digest == digest)
    )
    if existing is not None:
        return existing, False
    number = (
        session.scalar(select(func.max(TaskVersion.number)).where(TaskVersion.task_key == key)) or 0
    ) + 1
    version = TaskVersion(
        task_key=key, number=number, digest=digest, spec=spec.model_dump(mode="json")
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

    task_key: str
    task_id: str  # the public id
    course: str | None
    version_id: str
    spec: CodeTask | ChoiceTask


# Built once: the hot path of every submission (a statement built per call costs more CPU
# than its round trip on these machines). Two primary-key lookups: the course's own task
# with the id first, else the shared bank's.
_NEWEST_READY = (
    select(Task.key, Task.course, Task.archived, TaskVersion.id)
    .outerjoin(TaskVersion, (TaskVersion.task_key == Task.key) & (TaskVersion.status == "ready"))
    .where(Task.key.in_([bindparam("own"), bindparam("shared")]))
    .order_by(Task.course.is_(None), TaskVersion.number.desc())
    .limit(1)
)


def submittable(session: Session, task_id: str, who: Principal) -> Submittable:
    """The task's newest ready version, or the error a submission to it gets."""
    if not re.fullmatch(TASK_ID_PATTERN, task_id):
        raise NotFound(f"no task {task_id}")
    if who.role == "admin":  # in no course: `get_task` finds which task it means (rare)
        key = get_task(session, task_id, who).key
        keys = {"own": key, "shared": key}
    else:
        keys = {"own": task_key(task_id, who.course), "shared": task_key(task_id, None)}
    found = session.connection().execute(_NEWEST_READY, keys).first()
    if found is None or not who.sees_course(found[1]):
        raise NotFound(f"no task {task_id}")
    key, course, archived, version_id = found
    if archived or version_id is None:
        require_ready(session, session.get(Task, key))  # raises the precise Conflict
    return Submittable(key, task_id, course, version_id, spec_by_id(session, version_id))


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
    version.report = printable(report)  # it quotes what the runs printed
    if ok and expected is not None:
        version.expected_manifest, version.expected_tensors = dump_facts(expected.facts)
        version.baseline_passing = sorted(expected.baseline_passing)


def get_task(session: Session, task_id: str, who: Principal, course: str | None = None) -> Task:
    """The task `task_id` names for the caller: its course's, else the shared bank's.

    An admin belongs to no course: `course` says which course's task it means; without
    it, the shared bank's task, else the one course's task with that id."""
    task = (
        _find_task(session, task_id, who, course)
        if re.fullmatch(TASK_ID_PATTERN, task_id)
        else None
    )
    if task is None or not who.sees_course(task.course):
        raise NotFound(f"no task {task_id}")
    return task


def _find_task(session: Session, task_id: str, who: Principal, course: str | None) -> Task | None:
    scope = course if who.role == "admin" else who.course
    if scope is not None:
        return session.get(Task, task_key(task_id, scope)) or session.get(
            Task, task_key(task_id, None)
        )
    shared = session.get(Task, task_key(task_id, None))
    if shared is not None or who.role != "admin":
        return shared
    found = list(session.scalars(select(Task).where(Task.id == task_id).order_by(Task.course)))
    if len(found) > 1:
        courses = ", ".join(t.course or "" for t in found[:20])
        raise Conflict(
            f"task id {task_id} names tasks of several courses ({courses}): say which with ?course="
        )
    return found[0] if found else None


def current_version(session: Session, task: Task) -> TaskVersion | None:
    """The newest ready version: what new submissions are graded against."""
    return session.scalar(
        select(TaskVersion)
        .options(*WITHOUT_EXPECTED)
        .where(TaskVersion.task_key == task.key, TaskVersion.status == "ready")
        .order_by(TaskVersion.number.desc())
    )


def latest_version(session: Session, task: Task) -> TaskVersion:
    return session.scalar(
        select(TaskVersion)
        .options(*WITHOUT_EXPECTED)
        .where(TaskVersion.task_key == task.key)
        .order_by(TaskVersion.number.desc())
    )


def version_by_number(session: Session, task: Task, number: int) -> TaskVersion:
    version = session.scalar(
        select(TaskVersion).where(TaskVersion.task_key == task.key, TaskVersion.number == number)
    )
    if version is None:
        raise NotFound(f"task {task.id} has no version {number}")
    return version


def list_tasks(session: Session, who: Principal, include_archived: bool = False) -> list[Task]:
    """The tasks the caller can name: for a course, its own and the shared bank's that no
    task of its own shadows (archived ones too, with `include_archived`); every task for an
    admin."""
    query = select(Task).order_by(Task.id, Task.course)
    if who.role != "admin":
        query = query.where(or_(Task.course.is_(None), Task.course == who.course))
    tasks = list(session.scalars(query))
    own = {t.id for t in tasks if t.course is not None and who.role != "admin"}
    return [
        t
        for t in tasks
        if (t.course is not None or t.id not in own) and (include_archived or not t.archived)
    ]


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
