"""Group commit for POST /v1/submissions: the submissions that arrive while earlier ones are
being stored are stored together, in one worker thread and one transaction.

A submission costs its database round trips (the key, the task, the attempt, the insert,
the commit) and its queue message far more than its HTTP; one at a time, each in its own
transaction, two cores stored about 200 a second. In a group those costs are paid once
per group: one key lookup, one task lookup per task, one attempt-counting statement, one
insert, one commit and one pipelined push to Redis (services/intake.py, services/queue.py).
Nothing waits to fill a group: a lane that is free takes what is waiting at once, so a
lone submission is stored as soon as it arrives, and a group is as large as the load made
it while the lanes were busy.

Each submission keeps its own answer: its key, body, answer, attempt limit and the
queue's limit are judged for it alone. If the group's transaction fails (a database
error, two requests with one `Idempotency-Key` racing another group), it is rolled back
and each submission of the group is stored in a transaction of its own, as if it had
come alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from api.errors import Unauthorized
from api.schemas import SubmissionIn
from core.settings import Settings
from db.session import session_scope
from services import intake, queue
from services.errors import InvalidInput
from services.keys import authenticate_many

MAX_IDEMPOTENCY_KEY = 200  # characters; the column's size
LANES = 1  # groups stored at once by one API process (each holds a thread and a connection)
MAX_GROUP = 64  # submissions in one group


@dataclass(frozen=True)
class Posted:
    """A POST as it arrived: the key it presents, its raw body, its `Idempotency-Key`."""

    key: str
    raw: bytes
    idempotency_key: str | None


class Intake:
    """Forms groups of the submissions posted to one API process and stores them."""

    def __init__(self, settings: Settings, lanes: int = LANES, max_group: int = MAX_GROUP) -> None:
        self.settings, self.lanes, self.max_group = settings, lanes, max_group
        self._waiting: list[tuple[Posted, asyncio.Future]] = []
        self._busy = 0
        self._drains: set[asyncio.Task] = set()

    async def accept(self, posted: Posted) -> intake.Accepted:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((posted, future))
        if self._busy < self.lanes:
            self._busy += 1
            drain = asyncio.create_task(self._drain())
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _drain(self) -> None:
        group: list[tuple[Posted, asyncio.Future]] = []
        try:
            while self._waiting:
                group = self._waiting[: self.max_group]
                del self._waiting[: self.max_group]
                try:
                    outcomes = await run_in_threadpool(
                        accept_group, self.settings, [p for p, _ in group]
                    )
                except Exception as exc:  # not one submission's fault: all get it
                    outcomes = [exc] * len(group)
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if not future.done():  # its client may have gone
                        future.set_result(outcome)
        finally:
            self._busy -= 1
            for _, future in group:  # stopped mid-group (the process is shutting down)
                if not future.done():
                    future.set_result(RuntimeError("the API stopped before storing this"))


def accept_group(settings: Settings, group: list[Posted]) -> list[intake.Outcome]:
    """Store `group` in one transaction and queue what it made; each submission's outcome."""
    try:
        return _accept_together(settings, group)
    except SQLAlchemyError as exc:
        if not _one_rows_fault(exc):  # the database is down: the next try would wait too
            raise
        if len(group) == 1:
            if isinstance(exc, IntegrityError):  # its idempotency key, committed meanwhile
                return _accept_together(settings, group)
            raise
    return [_accept_alone(settings, posted) for posted in group]


def _one_rows_fault(exc: SQLAlchemyError) -> bool:
    """An error a row of the group may have caused: a constraint (an `Idempotency-Key` sent
    by another group too), a value the database cannot store, a deadlock or serialisation
    failure (SQLSTATE class 40)."""
    if isinstance(exc, (IntegrityError, DataError)):
        return True
    return str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "").startswith("40")


def _accept_alone(settings: Settings, posted: Posted) -> intake.Outcome:
    try:
        return accept_group(settings, [posted])[0]
    except Exception as exc:
        return exc


def _accept_together(settings: Settings, group: list[Posted]) -> list[intake.Outcome]:
    gauge = intake.queue_gauge(settings.effective_database_url)
    outcomes: list[intake.Outcome | None] = [None] * len(group)
    with session_scope(settings.effective_database_url) as session:
        principals = authenticate_many(session, {posted.key for posted in group})
        entries: list[tuple[int, intake.Entry]] = []
        for i, posted in enumerate(group):
            try:
                entries.append((i, _entry(posted, principals)))
            except Exception as exc:
                outcomes[i] = exc
        room = (
            settings.max_queue_length - gauge.queued(session, settings.max_queue_length)
            if entries
            else 0
        )
        made = intake.create_many(session, [entry for _, entry in entries], settings, room)
        for (i, _), outcome in zip(entries, made, strict=True):
            outcomes[i] = outcome
    created = [o.row for o in outcomes if isinstance(o, intake.Accepted) and o.created]
    gauge.accepted(len(created))  # committed: now the workers may see them
    queue.send_many(settings, [queue.Message(queue.GRADE, [r.id], r.queue) for r in created])
    return outcomes  # type: ignore[return-value]


def _entry(posted: Posted, principals: dict) -> intake.Entry:
    """The submission a POST asks for: the key first, so a caller without a valid key learns
    nothing from the answer; then the body, checked as FastAPI would check a declared one."""
    who = principals.get(posted.key)
    if who is None:
        raise Unauthorized("unknown or revoked API key")
    try:
        body = SubmissionIn.model_validate_json(posted.raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None
    if posted.idempotency_key is not None and len(posted.idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidInput(
            f"the Idempotency-Key header is longer than {MAX_IDEMPOTENCY_KEY} characters"
        )
    new = intake.NewSubmission(
        body.task_id, body.student_id, body.code, body.blanks, body.choice, body.callback_url
    )
    return intake.Entry(who, new, posted.idempotency_key)
