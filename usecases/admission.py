"""Admitting submissions: the checks, attempt limits, idempotency and the queue's limit,
for many submissions at once in the caller's transaction (usecases/submitting.py owns it).

Whatever the group's size, it costs one idempotency lookup, one task lookup per task and
caller, one attempt-counting statement (per task limit, and one more for each repeat of a
student in the group) and one insert. Each submission is still judged on its own: a bad
answer, a foreign task or an exhausted attempt limit is that submission's result, and the
others go on. A database error is not: it propagates, and the caller rolls the group back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, tuple_
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.settings import Settings
from db.models import (
    Submission,
    SubmissionStatus,
    Task,
    TaskVersion,
    VersionStatus,
    new_id,
    now,
    task_key,
)
from graders.errors import AnswerError
from graders.spec import TASK_ID_PATTERN, ChoiceTask, CodeTask
from services import catalog
from services.answers import check_code, fill_blanks
from services.errors import Conflict, InvalidInput, NotFound, TooLarge, Unavailable
from services.keys import Principal
from services.webhooks import check_callback_url
from usecases import access, attempts
from usecases.tasks import visible_task

MAX_STUDENT_ID = 200


@dataclass(frozen=True)
class NewSubmission:
    task_id: str
    student_id: str
    code: str | None = None
    blanks: dict[int, str] | None = None
    choice: str | None = None
    callback_url: str | None = None


@dataclass(frozen=True)
class Entry:
    """One submission to accept: who sends it, what, and its `Idempotency-Key`."""

    who: Principal
    new: NewSubmission
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Accepted:
    row: Submission
    created: bool  # False: the idempotency key's first submission, returned again
    attempts_left: int | None


Outcome = Accepted | Exception


def admit(
    session: Session, entries: Sequence[Entry], settings: Settings, room: int | None = None
) -> list[Outcome]:
    """Accept `entries` in the caller's transaction: for each, in order, its `Accepted` or
    the error it gets. At most `room` new submissions (the queue's limit): those past it
    get `Unavailable`. Raises only database errors (the transaction is then unusable)."""
    outcomes: list[Outcome | None] = [None] * len(entries)
    first_of: dict[tuple[str, str], int] = {}  # (key id, idempotency key) -> first entry
    repeats: dict[int, int] = {}  # entry -> the entry it repeats (same idempotency key)
    for i, entry in enumerate(entries):
        if entry.idempotency_key is not None:
            seen = first_of.setdefault((entry.who.key_id, entry.idempotency_key), i)
            if seen != i:
                repeats[i] = seen
    if first_of:
        for row in session.scalars(
            select(Submission).where(
                tuple_(Submission.client_key_id, Submission.idempotency_key).in_(list(first_of))
            )
        ):
            first = first_of[(row.client_key_id, row.idempotency_key)]
            differ = _differences(_held(row), entries[first].new)
            outcomes[first] = (
                _reused(row.idempotency_key, differ)
                if differ
                else Accepted(row, False, attempts.attempts_left(session, row))
            )

    tasks: dict[tuple[str, Principal], Submittable | Exception] = {}
    checked: list[tuple[int, Submittable, str]] = []  # entry, task, course
    for i, entry in enumerate(entries):
        if outcomes[i] is not None or i in repeats:
            continue
        try:
            task = _check(session, entry, settings, tasks)
        except SQLAlchemyError:
            raise
        except Exception as exc:  # this entry's error (a 4xx, or a bug that is its 500)
            outcomes[i] = exc
            continue
        checked.append((i, task, task.course or entry.who.course or ""))
    if room is not None:
        for i, _, _ in checked[max(0, room) :]:
            outcomes[i] = Unavailable(
                f"the queue is full ({settings.max_queue_length:,} submissions waiting);"
                " try again shortly",
                retry_after_s=10,
            )
        checked = checked[: max(0, room)]

    used = attempts.count(
        session,
        [
            (task.task_id, course, entries[i].new.student_id, task.spec.max_attempts, task.task_key)
            for i, task, course in checked
        ],
    )
    made: list[tuple[int, dict, int | None]] = []  # entry, row, attempts left
    at = now()
    for (i, task, course), count in zip(checked, used, strict=True):
        entry, limit = entries[i], task.spec.max_attempts
        if count is None:
            outcomes[i] = Conflict(
                f"no attempts left: {entry.new.student_id} has used all {limit} attempts at {task.task_id}"
            )
            continue
        new = entry.new
        row = dict(
            id=new_id(), task_id=task.task_id, task_key=task.task_key, task_version_id=task.version_id,
            course=course or None, student_id=new.student_id, client_key_id=entry.who.key_id,
            idempotency_key=entry.idempotency_key, code=new.code,
            blanks={str(k): v for k, v in new.blanks.items()} if new.blanks else None,
            choice=new.choice, callback_url=new.callback_url, status=SubmissionStatus.QUEUED, tries=0,
            charged=True, queue=queue_for(task.spec, settings), created_at=at, enqueued_at=at,
        )  # fmt: skip
        made.append((i, row, None if limit is None else max(0, limit - count)))
    if made:  # one insert, keyed rows in key order (as counters: no two groups cross)
        made.sort(
            key=lambda m: (m[1]["idempotency_key"] is not None, m[1]["idempotency_key"] or "")
        )
        session.connection().execute(_INSERT, [row for _, row, _ in made])  # a key another
        # group holds raises IntegrityError here
    for i, row, left in made:
        outcomes[i] = Accepted(Submission(**row), True, left)

    for i, first in repeats.items():  # the same request again: the first one's answer
        outcome = outcomes[first]
        if isinstance(outcome, Accepted):  # what the key holds (stored before, or just now)
            differ = _differences(_held(outcome.row), entries[i].new)
        else:  # the first was refused: it holds nothing, so compare the requests
            differ = _differences(entries[first].new, entries[i].new)
        if differ:
            outcomes[i] = _reused(entries[i].idempotency_key, differ)
        elif isinstance(outcome, Accepted):
            outcomes[i] = Accepted(outcome.row, False, outcome.attempts_left)
        else:
            outcomes[i] = outcome
    return outcomes  # type: ignore[return-value]


_COMPARED = ("task_id", "student_id", "code", "blanks", "choice", "callback_url")


def _held(row: Submission) -> NewSubmission:
    """The request a stored submission was made from, as far as its row keeps it (all of
    the body: the task, the student, the answer, the callback)."""
    return NewSubmission(
        row.task_id, row.student_id, code=row.code,
        blanks={int(k): v for k, v in row.blanks.items()} if row.blanks else None,
        choice=row.choice, callback_url=row.callback_url,
    )  # fmt: skip


def _differences(held: NewSubmission, new: NewSubmission) -> list[str]:
    """The body's fields in which `new` is not the request `held` (empty: the same one)."""
    return [
        name for name in _COMPARED if (getattr(held, name) or None) != (getattr(new, name) or None)
    ]


def _reused(idempotency_key: str | None, differ: list[str]) -> Conflict:
    return Conflict(
        f"the Idempotency-Key {idempotency_key!r} was already used for another request"
        f" (different: {', '.join(differ)}); send the same body to get that submission"
        " again, or a new key for a new submission"
    )


def _check(
    session: Session,
    entry: Entry,
    settings: Settings,
    tasks: dict[tuple[str, Principal], Submittable | Exception],
) -> Submittable:
    """What may be judged before anything is written: the student id, the caller's right
    to submit as them, the task (looked up once per task and caller in a group) and the
    answer's form."""
    who, new = entry.who, entry.new
    if not new.student_id or len(new.student_id) > MAX_STUDENT_ID:
        raise InvalidInput(f"student_id must be 1 to {MAX_STUDENT_ID} characters")
    access.require(access.may_submit(who, new.student_id))
    found = tasks.get((new.task_id, who))
    if found is None:
        try:
            found = submittable(session, new.task_id, who)
        except SQLAlchemyError:
            raise
        except Exception as exc:
            found = exc
        tasks[(new.task_id, who)] = found
    if isinstance(found, Exception):
        raise found
    _validate_answer(found.spec, new, settings)
    if new.callback_url is not None:
        check_callback_url(new.callback_url, settings)
    return found


def _validate_answer(spec: CodeTask | ChoiceTask, new: NewSubmission, settings: Settings) -> None:
    given = [v is not None for v in (new.code, new.blanks, new.choice)]
    if sum(given) != 1:
        raise InvalidInput("send exactly one of code, blanks or choice")
    if isinstance(spec, ChoiceTask):
        if new.choice is None:
            raise InvalidInput(f"task {spec.id} is multiple choice: send `choice`")
        if new.choice.strip().upper() not in spec.options:  # as the judge reads it
            raise InvalidInput(
                f"choice {new.choice!r} is not one of the options of task {spec.id}:"
                f" {', '.join(sorted(spec.options))}"
            )
        return
    if new.choice is not None:
        raise InvalidInput(f"task {spec.id} is graded on code: send `code` or `blanks`")
    try:
        if new.code is not None:
            if len(new.code.encode("utf-8", errors="surrogatepass")) > settings.max_code_bytes:
                raise TooLarge(f"the code is larger than {settings.max_code_bytes:,} bytes")
            check_code(new.code, settings.max_code_bytes)
        else:
            _check_blanks(spec, new.blanks)
            check_code(fill_blanks(spec, new.blanks), settings.max_code_bytes)
    except AnswerError as exc:
        raise InvalidInput(str(exc)) from None


def _check_blanks(spec: CodeTask, blanks: dict[int, str]) -> None:
    """Each blank the template has, filled with one of its option letters (read as
    `fill_blanks` reads them: trimmed, either case); text only in a blank without options.
    What is missing or the template's absence, `fill_blanks` refuses."""
    if spec.template is None:
        return
    declared = {b.id: b for b in spec.template.blanks}
    unknown = sorted(set(blanks) - set(declared))
    if unknown:
        raise AnswerError(
            f"the template of task {spec.id} has no blank {', '.join(f'[{b}]' for b in unknown)};"
            f" its blanks are {', '.join(f'[{b}]' for b in sorted(declared))}"
        )
    for bid, value in sorted(blanks.items()):
        options = declared[bid].options
        if not options:  # a free-text blank: any one line of code
            continue
        letter = value.strip().upper()
        if len(letter) != 1 or letter not in options:
            raise AnswerError(
                f"blank [{bid}] takes one of its options {', '.join(sorted(options))},"
                f" not {value!r}"
            )


@dataclass(frozen=True)
class Submittable:
    """What admitting a submission needs of its task: one query, the spec from the cache."""

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
    .outerjoin(
        TaskVersion,
        (TaskVersion.task_key == Task.key) & (TaskVersion.status == VersionStatus.READY),
    )
    .where(Task.key.in_([bindparam("own"), bindparam("shared")]))
    .order_by(Task.course.is_(None), TaskVersion.number.desc())
    .limit(1)
)
_INSERT = insert(Submission.__table__)


def submittable(session: Session, task_id: str, who: Principal) -> Submittable:
    """The task's newest ready version, or the error a submission to it gets."""
    if not re.fullmatch(TASK_ID_PATTERN, task_id):
        raise NotFound(f"no task {task_id}")
    if access.sees_every_course(who):  # in no course: which task it means (rare)
        key = visible_task(session, who, task_id).key
        keys = {"own": key, "shared": key}
    else:
        keys = {"own": task_key(task_id, who.course), "shared": task_key(task_id, None)}
    found = session.connection().execute(_NEWEST_READY, keys).first()
    if found is None or not access.may_see_task(who, found[1]):
        raise NotFound(f"no task {task_id}")
    key, course, archived, version_id = found
    if archived or version_id is None:
        catalog.require_ready(session, session.get(Task, key))  # raises the precise Conflict
    return Submittable(key, task_id, course, version_id, catalog.spec_by_id(session, version_id))


def queue_for(spec: CodeTask | ChoiceTask, settings: Settings) -> str:
    if isinstance(spec, CodeTask) and (
        spec.limits.gpu == "required" or (spec.limits.gpu == "optional" and settings.gpu == "on")
    ):
        return "gpu"
    return "cpu"
