"""Engine and sessions, one engine per database URL; migrations applied with Alembic."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
CONNECT_TIMEOUT_S = 10  # a database that does not answer is an error, not a hang


_created: list[Engine] = []


def _drop_inherited_connections() -> None:
    """In a forked child (a Celery pool process) never reuse the parent's pooled connections:
    two processes on one socket corrupt the protocol. The child opens its own."""
    for engine in _created:
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_connections)


# Connections a process keeps open between requests: more than an API process's usual
# concurrency under load, so a busy API reuses them instead of opening and closing overflow
# connections (a PostgreSQL connection is a process forked on the server).
POOL_SIZE = 30


@lru_cache
def engine_for(url: str) -> Engine:
    engine = _make_engine(url)
    _created.append(engine)
    return engine


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # The pool with its overflow (50) is larger than the API's thread pool (40), so a
        # burst of requests waits for SQLite's write lock instead of running out of connections.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=POOL_SIZE,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _immediate(conn) -> None:
            # Writers take the lock at BEGIN, so counting attempts is serialised like a row lock.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        engine.dialect._supports_statement_cache = True
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=20,
        pool_timeout=CONNECT_TIMEOUT_S,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )


@lru_cache
def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        # On a connection that died, rolling back fails too: the first error is the one to report.
        with contextlib.suppress(SQLAlchemyError):
            session.rollback()
        raise
    finally:
        with contextlib.suppress(SQLAlchemyError):
            session.close()


def serialize(session: Session, key: int) -> None:
    """Hold `key` until this transaction ends, so processes doing the same start-up chore
    take turns. SQLite needs nothing: its writers take the database's lock at BEGIN."""
    from sqlalchemy import text

    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def migrate(url: str) -> None:
    """Bring the database to the newest schema (Alembic `upgrade head`). The API and the
    workers all migrate when they start: PostgreSQL's migrations take an advisory lock
    (`migrations/env.py`); a SQLite file's take a lock on a file beside it, since SQLite
    runs DDL outside the transaction there and two processes would add the same column."""
    import fcntl

    from alembic import command
    from alembic.config import Config
    from sqlalchemy.engine import make_url

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        command.upgrade(cfg, "head")
        return
    with open(f"{parsed.database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        command.upgrade(cfg, "head")


@contextmanager
def temporary_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A PostgreSQL database of its own (tests, benchmarks), dropped at the end; yields its URL.

    `admin_url` names a database the server already has; the new one is made beside it.
    """
    import uuid

    from sqlalchemy import text

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.rsplit("/", 1)[0] + "/" + name
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
