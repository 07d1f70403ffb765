"""Accepting submissions: checks, attempt limits, idempotency and the queue's limit, for
many submissions at once in the caller's transaction.

The API stores the submissions that arrive together in one transaction (api/intake.py):
whatever the group's size, it costs one idempotency lookup, one task lookup per task, one
attempt-counting statement (per task limit, and one more for each repeat of a student in
the group) and one insert. Each submission is still judged on its own: a bad answer, a
foreign task or an exhausted attempt limit is that submission's result, and the others go
on. A database error is not: it propagates, the caller rolls the group back and stores
each submission in a transaction of its own.

Counters are locked in one order (task, course, student) in every group, so two groups
counting the same students wait for each other and never deadlock.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, func, insert, select, text, tuple_
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.settings import Settings
from db.models import AttemptCounter, Submission, new_id, now
from graders.errors import AnswerError
from graders.spec import ChoiceTask, CodeTask
from services import catalog
from services.answers import check_code, fill_blanks
from services.errors import Conflict, Forbidden, InvalidInput, TooLarge, Unavailable
from services.keys import Principal
from services.submissions import MAX_STUDENT_ID, attempts_left
from services.webhooks import check_callback_url


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


def create(
    session: Session,
    who: Principal,
    new: NewSubmission,
    idempotency_key: str | None,
    settings: Settings,
) -> Accepted:
    """Accept one submission in the caller's transaction; its error is raised."""
    outcome = create_many(session, [Entry(who, new, idempotency_key)], settings)[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def create_many(
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
            outcomes[first_of[(row.client_key_id, row.idempotency_key)]] = Accepted(
                row, False, attempts_left(session, row)
            )

    tasks: dict[tuple[str, Principal], catalog.Submittable | Exception] = {}
    checked: list[tuple[int, catalog.Submittable, str]] = []  # entry, task, course
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

    used = count_attempts(
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
            choice=new.choice, callback_url=new.callback_url, status="queued", tries=0,
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
        outcomes[i] = Accepted(outcome.row, False, outcome.attempts_left) if isinstance(
            outcome, Accepted
        ) else outcome  # fmt: skip
    return outcomes  # type: ignore[return-value]


def _check(
    session: Session,
    entry: Entry,
    settings: Settings,
    tasks: dict[tuple[str, Principal], catalog.Submittable | Exception],
) -> catalog.Submittable:
    """What may be judged before anything is written: the student id, the roles, the task
    (looked up once per task and caller in a group) and the answer's form."""
    who, new = entry.who, entry.new
    if not new.student_id or len(new.student_id) > MAX_STUDENT_ID:
        raise InvalidInput(f"student_id must be 1 to {MAX_STUDENT_ID} characters")
    if who.role == "student" and new.student_id != who.student_id:
        raise Forbidden("a student may only submit as themselves")
    if who.role == "instructor":
        raise Forbidden("instructors do not submit answers; use an lms or student key")
    found = tasks.get((new.task_id, who))
    if found is None:
        try:
            found = catalog.submittable(session, new.task_id, who)
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
        return
    if new.choice is not None:
        raise InvalidInput(f"task {spec.id} is graded on code: send `code` or `blanks`")
    try:
        if new.code is not None:
            if len(new.code.encode("utf-8", errors="surrogatepass")) > settings.max_code_bytes:
                raise TooLarge(f"the code is larger than {settings.max_code_bytes:,} bytes")
            check_code(new.code, settings.max_code_bytes)
        else:
            check_code(fill_blanks(spec, new.blanks), settings.max_code_bytes)
    except AnswerError as exc:
        raise InvalidInput(str(exc)) from None


CounterKey = tuple[str, str, str]  # task id, course, student
# task id (as the course names it), course, student, limit, task key
Wanted = tuple[str, str, str, int | None, str]


def count_attempts(session: Session, wanted: Sequence[Wanted]) -> list[int | None]:
    """Count one attempt for each (task id, course, student, limit, task key): the attempts
    used after it, or None (and nothing counted) when all `limit` are used.

    One upsert per round and run of tasks with one limit, its rows in counter order: the
    upsert locks each counter's row, so concurrent submissions of one student are counted
    one after the other, and every transaction takes the locks in the same order. A
    student repeated in `wanted` is counted again in a later round (a statement may
    update a row once)."""
    used: list[int | None] = [None] * len(wanted)
    rounds: list[list[int]] = []
    repeat: Counter[CounterKey] = Counter()
    for i in sorted(range(len(wanted)), key=lambda i: wanted[i][:3]):
        key = wanted[i][:3]
        if repeat[key] == len(rounds):
            rounds.append([])
        rounds[repeat[key]].append(i)
        repeat[key] += 1
    for members in rounds:
        run: list[int] = []
        for i in members:  # in counter order, so the task (and its limit) changes in runs
            if run and wanted[run[-1]][3] != wanted[i][3]:
                _count(session, wanted, run, used)
                run = []
            run.append(i)
        if run:
            _count(session, wanted, run, used)
    return used


def _count(
    session: Session, wanted: Sequence[Wanted], members: list[int], used: list[int | None]
) -> None:
    limit = wanted[members[0]][3]
    if limit is not None and limit <= 0:
        return
    keys = [wanted[i][:3] for i in members]
    bound = NO_LIMIT if limit is None else limit
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        rows = json.dumps(
            [
                {"task_id": t, "course": c, "student_id": s, "task_key": wanted[i][4], "n": n}
                for n, (i, (t, c, s)) in enumerate(zip(members, keys, strict=True))
            ]
        )
        counted = dict(
            ((t, c, s), n)
            for t, c, s, n in connection.execute(_COUNT_MANY, {"rows": rows, "limit": bound})
        )
        for i, key in zip(members, keys, strict=True):
            used[i] = counted.get(key)
        return
    for i, (t, c, s) in zip(members, keys, strict=True):  # SQLite: a row at a time
        used[i] = connection.execute(
            _COUNT_ONE,
            {"task_id": t, "course": c, "student_id": s, "task_key": wanted[i][4], "limit": bound},
        ).scalar()


# The statements of the hot path are built once (building one per call costs more CPU than
# its round trip on these machines).
NO_LIMIT = 2**31 - 1
_INSERT = insert(Submission.__table__)
_COUNTERS = AttemptCounter.__table__
_COUNT_ONE = (
    sqlite_insert(_COUNTERS)
    .values(
        task_id=bindparam("task_id"),
        course=bindparam("course"),
        student_id=bindparam("student_id"),
        task_key=bindparam("task_key"),
        used=1,
    )  # fmt: skip
    .on_conflict_do_update(
        index_elements=[_COUNTERS.c.task_id, _COUNTERS.c.course, _COUNTERS.c.student_id],
        set_={"used": _COUNTERS.c.used + 1},
        where=_COUNTERS.c.used < bindparam("limit"),
    )
    .returning(_COUNTERS.c.used)
)
# PostgreSQL: every counter of a run in one statement, its rows taken in the order given.
_COUNT_MANY = text(
    """
    INSERT INTO attempt_counters (task_id, course, student_id, task_key, used)
    SELECT r.task_id, r.course, r.student_id, r.task_key, 1
    FROM json_to_recordset(CAST(:rows AS json))
        AS r(task_id text, course text, student_id text, task_key text, n int)
    ORDER BY r.n
    ON CONFLICT (task_id, course, student_id)
    DO UPDATE SET used = attempt_counters.used + 1 WHERE attempt_counters.used < :limit
    RETURNING task_id, course, student_id, used
    """
)


def queue_for(spec: CodeTask | ChoiceTask, settings: Settings) -> str:
    if isinstance(spec, CodeTask) and (
        spec.limits.gpu == "required" or (spec.limits.gpu == "optional" and settings.gpu == "on")
    ):
        return "gpu"
    return "cpu"


class QueueGauge:
    """How many submissions wait, for the API's 503 above `max_queue_length`.

    Counting them on every POST would scan the queue exactly when it is long. The gauge
    counts at most once a second while the queue is under half the limit (adding what this
    process accepted since), and on every group above that, so the limit itself holds
    exactly; other API processes' acceptances within that second fall in the margin.
    """

    FRESH_S = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counted_at = -math.inf
        self._queued = 0

    def queued(self, session: Session, limit: int) -> int:
        with self._lock:
            estimate = self._queued
            fresh = time.monotonic() - self._counted_at < self.FRESH_S
        if fresh and estimate < limit // 2:
            return estimate
        waiting = select(Submission.id).where(Submission.status == "queued").limit(limit)
        counted = session.scalar(select(func.count()).select_from(waiting.subquery())) or 0
        with self._lock:
            self._queued, self._counted_at = counted, time.monotonic()
        return counted

    def accepted(self, n: int = 1) -> None:
        with self._lock:
            self._queued += n


_gauges: dict[str, QueueGauge] = {}


def queue_gauge(database_url: str) -> QueueGauge:
    return _gauges.setdefault(database_url, QueueGauge())
