"""Attempt limits: one counter row per (task, course, student), counted by one upsert that
increments it only while attempts remain, under the row's lock (SQLite takes its write lock
at `BEGIN`), in the transaction that stores the submission. Counters are locked in one
order (task, course, student) in every transaction, so transactions counting the same
students wait for each other and never deadlock."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from db.models import AttemptCounter, Submission, TaskVersion, VersionStatus
from services.catalog import spec_by_id


def attempts_left(session: Session, row: Submission) -> int | None:
    """Attempts the row's student has left at its task, in its course (None: no limit)."""
    return left_at(session, row.task_key, row.task_id, row.course, row.student_id)


def left_at(
    session: Session, key: str, task_id: str, course: str | None, student_id: str
) -> int | None:
    """Attempts `student_id` has left at the task (its key, and its id as `course` names
    it), by its current version's limit (None: no limit)."""
    version_id = session.scalar(
        select(TaskVersion.id)
        .where(TaskVersion.task_key == key, TaskVersion.status == VersionStatus.READY)
        .order_by(TaskVersion.number.desc())
    )
    spec = spec_by_id(session, version_id) if version_id else None
    if spec is None or spec.max_attempts is None:
        return None
    counter = session.get(AttemptCounter, (task_id, course or "", student_id))
    return max(0, spec.max_attempts - (counter.used if counter else 0))


CounterKey = tuple[str, str, str]  # task id, course, student
# task id (as the course names it), course, student, limit, task key
Wanted = tuple[str, str, str, int | None, str]


def count(session: Session, wanted: Sequence[Wanted]) -> list[int | None]:
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
                _count_run(session, wanted, run, used)
                run = []
            run.append(i)
        if run:
            _count_run(session, wanted, run, used)
    return used


def _count_run(
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
