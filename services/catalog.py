"""The task catalog's storage: tasks, their immutable spec versions, and each version's spec
parsed once per process.

A stored version is `validating` until the worker's self-test makes it `ready` (with its
expected facts) or `invalid` (with the report); a multiple-choice version is ready at once.

Task ids are scoped: the shared bank (bundled tasks, an admin's tasks without a course)
has one namespace and each course one of its own. An id names the course's task, else the
shared bank's; a course may not take an id the shared bank has (the bank is public, so
saying so tells nothing), and an id other courses use is simply the course's own. Once a
course has an id it names that task for good, whatever the bank adds later. Who may see
or change which task is decided in usecases/access.py.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from db.models import Task, TaskVersion, VersionStatus, task_key
from graders.facts import load_stored_facts
from graders.judge import Expected
from graders.spec import ChoiceTask, CodeTask, spec_digest, spec_from_data
from services.errors import Conflict, NotFound

# The expected facts (tensors of a correct run) are for the judge; views and lookups skip them.
WITHOUT_EXPECTED = (defer(TaskVersion.expected_manifest), defer(TaskVersion.expected_tensors))


def add_version(
    session: Session, spec: CodeTask | ChoiceTask, course: str | None, *, shared_setup: bool = False
) -> tuple[TaskVersion, bool]:
    """Store `spec` as the next version of the task with its id in `course` (None: the shared
    bank); an identical spec returns the existing version. A course's new task may not take
    an id the shared bank has; the shared bank takes any id (the bank loads at start-up).

    `shared_setup`: the spec's setup is the service's own (taskbank.is_shipped_setup), stored
    with the version so that grading need not ask; an existing version is marked, never
    unmarked (one stored before versions recorded it)."""
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
        if shared_setup and not existing.shared_setup:
            existing.shared_setup = True
        return existing, False
    number = (
        session.scalar(select(func.max(TaskVersion.number)).where(TaskVersion.task_key == key)) or 0
    ) + 1
    version = TaskVersion(
        task_key=key, number=number, digest=digest, spec=spec.model_dump(mode="json"),
        shared_setup=shared_setup,
    )  # fmt: skip
    if isinstance(spec, ChoiceTask):  # graded by key: nothing to run
        version.status, version.report = VersionStatus.READY, "multiple choice: graded by key"
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


def expected_of(version: TaskVersion) -> Expected | None:
    if version.expected_manifest is None:
        return None
    facts = load_stored_facts(version.expected_manifest, version.expected_tensors or b"")
    return Expected(facts=facts, baseline_passing=frozenset(version.baseline_passing or []))


def find_task(
    session: Session, task_id: str, course: str | None, any_course: bool = False
) -> Task | None:
    """The task `task_id` names in `course`: the course's own, else the shared bank's.

    With no course (an admin's lookup): the shared bank's task, else (`any_course`) the
    one course's task with that id; several courses' is a Conflict."""
    if course is not None:
        return session.get(Task, task_key(task_id, course)) or session.get(
            Task, task_key(task_id, None)
        )
    shared = session.get(Task, task_key(task_id, None))
    if shared is not None or not any_course:
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
        .where(TaskVersion.task_key == task.key, TaskVersion.status == VersionStatus.READY)
        .order_by(TaskVersion.number.desc())
    )


def latest_version(session: Session, task: Task) -> TaskVersion:
    return session.scalar(
        select(TaskVersion)
        .options(*WITHOUT_EXPECTED)
        .where(TaskVersion.task_key == task.key)
        .order_by(TaskVersion.number.desc())
    )


def shown_version(session: Session, task: Task) -> TaskVersion | None:
    """The version a view of the task shows: the current one, else the newest."""
    return current_version(session, task) or latest_version(session, task)


def version_by_number(session: Session, task: Task, number: int) -> TaskVersion:
    version = session.scalar(
        select(TaskVersion).where(TaskVersion.task_key == task.key, TaskVersion.number == number)
    )
    if version is None:
        raise NotFound(f"task {task.id} has no version {number}")
    return version


def require_ready(session: Session, task: Task) -> TaskVersion:
    """The version new submissions go to, or the Conflict that says why there is none."""
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
