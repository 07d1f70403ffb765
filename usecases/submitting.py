"""Submit answers: each submission is stored, its attempt counted and its grading queued in
one transaction, many submissions at once when they arrive together (usecases/
group_commit.py gathers them for the REST API).

A submission costs its database round trips (the key, the task, the attempt, the insert,
the commit) and its queue message far more than its HTTP; one at a time, each in its own
transaction, two cores stored about 200 a second. In a group those costs are paid once:
one key lookup, one task lookup per task, one attempt-counting statement, one insert, one
commit and one pipelined push to Redis (usecases/admission.py, services/queue.py).

Each submission keeps its own answer: its key, body, answer, attempt limit and the
queue's limit are judged for it alone. If the group's transaction fails (a database
error, two requests with one `Idempotency-Key` racing another group), it is rolled back
and each submission of the group is stored in a transaction of its own, as if it had
come alone.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from db.models import Submission, SubmissionStatus
from services import queue
from services.errors import InvalidInput, Unauthorized
from services.keys import Principal, authenticate_many
from usecases.admission import Accepted, Entry, NewSubmission, Outcome, admit
from usecases.unit_of_work import Context

MAX_IDEMPOTENCY_KEY = 200  # characters; the column's size


@dataclass(frozen=True)
class Posted:
    """A submission as it arrived, not yet read: the key it presents, its raw body, its
    `Idempotency-Key`. The key is checked first, so that a caller without a valid key
    learns nothing from the answer; then the body is parsed (by the front door's parser)."""

    key: str
    raw: bytes
    idempotency_key: str | None


Parse = Callable[[bytes], NewSubmission]


def submit(
    ctx: Context, who: Principal, new: NewSubmission, idempotency_key: str | None = None
) -> Accepted:
    """Accept one submission from a caller already known; its error is raised."""
    outcome = submit_group(ctx, [Entry(who, new, idempotency_key)])[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def submit_group(
    ctx: Context, group: Sequence[Posted | Entry], parse: Parse | None = None
) -> list[Outcome]:
    """Store `group` in one transaction and queue what it made after its commit: each
    submission's `Accepted`, or the error it gets. `parse` reads a `Posted` body."""
    try:
        return _together(ctx, group, parse)
    except SQLAlchemyError as exc:
        if not _one_rows_fault(exc):  # the database is down: the next try would wait too
            raise
        if len(group) == 1:
            if isinstance(exc, IntegrityError):  # its idempotency key, committed meanwhile
                return _together(ctx, group, parse)
            raise
    return [_alone(ctx, item, parse) for item in group]


def _one_rows_fault(exc: SQLAlchemyError) -> bool:
    """An error a row of the group may have caused: a constraint (an `Idempotency-Key` sent
    by another group too), a value the database cannot store, a deadlock or serialisation
    failure (SQLSTATE class 40)."""
    if isinstance(exc, (IntegrityError, DataError)):
        return True
    return str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "").startswith("40")


def _alone(ctx: Context, item: Posted | Entry, parse: Parse | None) -> Outcome:
    try:
        return submit_group(ctx, [item], parse)[0]
    except Exception as exc:
        return exc


def _together(ctx: Context, group: Sequence[Posted | Entry], parse: Parse | None) -> list[Outcome]:
    settings = ctx.settings
    gauge = queue_gauge(settings.effective_database_url)
    outcomes: list[Outcome | None] = [None] * len(group)
    with ctx.unit_of_work() as work:
        posted = {item.key for item in group if isinstance(item, Posted)}
        principals = authenticate_many(work.session, posted) if posted else {}
        entries: list[tuple[int, Entry]] = []
        for i, item in enumerate(group):
            try:
                entries.append((i, _entry(item, principals, parse)))
            except Exception as exc:
                outcomes[i] = exc
        room = (
            settings.max_queue_length - gauge.queued(work.session, settings.max_queue_length)
            if entries
            else 0
        )
        made = admit(work.session, [entry for _, entry in entries], settings, room)
        for (i, _), outcome in zip(entries, made, strict=True):
            outcomes[i] = outcome
        created = [o.row for o in outcomes if isinstance(o, Accepted) and o.created]
        work.enqueue(*(queue.grading(row.id, row.queue) for row in created))
    gauge.accepted(len(created))  # committed: now the workers may see them
    return outcomes  # type: ignore[return-value]


def _entry(item: Posted | Entry, principals: dict[str, Principal], parse: Parse | None) -> Entry:
    """The submission an item asks for: a posted one's key first, then its body."""
    if isinstance(item, Posted):
        who = principals.get(item.key)
        if who is None:
            raise Unauthorized("unknown or revoked API key")
        item = Entry(who, parse(item.raw), item.idempotency_key)
    if item.idempotency_key is not None and len(item.idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidInput(
            f"the Idempotency-Key header is longer than {MAX_IDEMPOTENCY_KEY} characters"
        )
    return item


class QueueGauge:
    """How many submissions wait, for the 503 above `max_queue_length`.

    Counting them on every submission would scan the queue exactly when it is long. The
    gauge counts at most once a second while the queue is under half the limit (adding
    what this process accepted since), and on every group above that, so the limit itself
    holds exactly; other processes' acceptances within that second fall in the margin.
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
        waiting = (
            select(Submission.id).where(Submission.status == SubmissionStatus.QUEUED).limit(limit)
        )
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
