"""What a use case runs against, and the one way it stores and enqueues: commit, then send.

A message names a row by id, so it must never reach a worker before the row is committed
(the worker would find nothing, or an older state), and never at all when the transaction
rolls back. A unit of work holds the messages registered while it is open and sends them
after its commit; a use case has no other way to enqueue.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.settings import Settings
from db.session import session_scope
from services.queue import Broker, Message, RedisBroker


class UnitOfWork:
    """One transaction (`session`) and the messages to send once it has committed."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.messages: list[Message] = []

    def enqueue(self, *messages: Message) -> None:
        self.messages.extend(messages)


@dataclass(frozen=True)
class Context:
    """The deployment a use case acts on: its settings (the database among them) and the
    broker its messages go to (an in-memory one in the application tests)."""

    settings: Settings
    broker: Broker

    @classmethod
    def of(cls, settings: Settings) -> Context:
        return cls(settings, RedisBroker(settings))

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        """A transaction that commits when the block ends (rolls back on an error); then
        the messages it registered are sent. A broker that is down loses none of them:
        the rows are stored, and the reaper sends them again."""
        with session_scope(self.settings.effective_database_url) as session:
            work = UnitOfWork(session)
            yield work
        if work.messages:
            self.broker.send(work.messages)
