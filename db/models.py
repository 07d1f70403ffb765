"""The tables. Task versions are immutable once stored; a submission records the version that graded it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Role(StrEnum):
    """What an API key may do (usecases/access.py decides); stored as its value."""

    ADMIN = "admin"
    INSTRUCTOR = "instructor"
    LMS = "lms"
    STUDENT = "student"


class SubmissionStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"


class VersionStatus(StrEnum):
    """A task version's self-test state: only a `ready` version takes submissions."""

    VALIDATING = "validating"
    READY = "ready"
    INVALID = "invalid"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; every time stored here is UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # a Role
    course: Mapped[str | None] = mapped_column(
        String(100), nullable=True
    )  # None: every course (admin)
    student_id: Mapped[str | None] = mapped_column(String(200), nullable=True)  # for role student
    webhook_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def task_key(task_id: str, course: str | None) -> str:
    """A task's key: its id in the shared bank (course None), `course/id` in a course.

    Task ids are unique within the shared bank and within each course, never across them:
    one id may name a task in several courses. Ids hold no `/`, so no two (course, id)
    pairs share a key. Versions, submissions and attempt counters refer to the key."""
    return task_id if course is None else f"{course}/{task_id}"


class Task(Base):
    __tablename__ = "tasks"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # task_key(id, course)
    id: Mapped[str] = mapped_column(String(64), index=True)  # the public id
    course: Mapped[str | None] = mapped_column(String(100), nullable=True)  # None: shared bank
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    versions: Mapped[list[TaskVersion]] = relationship(
        back_populates="task", order_by="TaskVersion.number"
    )


class TaskVersion(Base):
    __tablename__ = "task_versions"
    __table_args__ = (
        UniqueConstraint("task_key", "number", name="uq_task_versions_task_key_number"),
        UniqueConstraint("task_key", "digest", name="uq_task_versions_task_key_digest"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    task_key: Mapped[str] = mapped_column(
        ForeignKey("tasks.key", name="fk_task_versions_task_key"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.VALIDATING)
    report: Mapped[str] = mapped_column(Text, default="")
    expected_manifest: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    expected_tensors: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    baseline_passing: Mapped[list] = mapped_column(JSON, default=list)
    # its setup is the service's own (byte for byte a bundled task's): a fork server may run
    # it once in a zygote and fork many jobs from it; any other runs in each job's process
    shared_setup: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    # when its self-test was last sent: the reaper sends one again only long after that
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    task: Mapped[Task] = relationship(back_populates="versions")


class AttemptCounter(Base):
    """One row per (task, course, student): locked while an attempt is counted, so limits hold
    under concurrency; student ids come from each course's LMS, so they are unique per course.

    `task_id` is the public id as the course names it: a course reaches one task by an id
    (its own, else the shared bank's, and it may never take an id the bank has), so the row's
    (task_id, course) always means the task whose key is `task_key`."""

    __tablename__ = "attempt_counters"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    course: Mapped[str] = mapped_column(String(100), primary_key=True, server_default="")
    student_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    task_key: Mapped[str] = mapped_column(
        ForeignKey("tasks.key", name="fk_attempt_counters_task_key")
    )
    used: Mapped[int] = mapped_column(Integer, default=0)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("client_key_id", "idempotency_key"),
        Index("ix_submissions_task_student", "task_id", "student_id"),
        Index("ix_submissions_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(String(64))  # the public id, as the caller sent it
    task_key: Mapped[str] = mapped_column(ForeignKey("tasks.key", name="fk_submissions_task_key"))
    task_version_id: Mapped[str] = mapped_column(ForeignKey("task_versions.id"))
    course: Mapped[str | None] = mapped_column(String(100), nullable=True)
    student_id: Mapped[str] = mapped_column(String(200))
    client_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    code: Mapped[str | None] = mapped_column(Text, nullable=True)
    blanks: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    choice: Mapped[str | None] = mapped_column(String(16), nullable=True)
    callback_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=SubmissionStatus.QUEUED)
    attempt_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    charged: Mapped[bool] = mapped_column(Boolean, default=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # the running try refreshes this; one that stops (its worker died) is reaped after the grace
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)  # host:pid


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # when the next try is due: a pending delivery long past it lost its message
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LearnerLink(Base):
    """A one-time link that lets a learner into the pages: made by an LMS key for one student
    of its course; opening it once starts a `LearnerSession` and marks it used."""

    __tablename__ = "learner_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the token
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", name="fk_learner_links_key_id"))
    course: Mapped[str] = mapped_column(String(100))
    student_id: Mapped[str] = mapped_column(String(200))
    task_ids: Mapped[list | None] = mapped_column(JSON, nullable=True)  # None: the course's set
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LearnerSession(Base):
    """A learner's session in the pages, named by a cookie whose value is stored hashed; it
    acts as a student of the course through the key that made its link, and holds the
    token its forms must send back (CSRF)."""

    __tablename__ = "learner_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie
    key_id: Mapped[str] = mapped_column(
        ForeignKey("api_keys.id", name="fk_learner_sessions_key_id")
    )
    course: Mapped[str] = mapped_column(String(100))
    student_id: Mapped[str] = mapped_column(String(200))
    task_ids: Mapped[list | None] = mapped_column(JSON, nullable=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class StaffSession(Base):
    """An instructor's session at the desk (/teach), started by signing in with their key;
    named by a cookie whose value is stored hashed, it acts through that key (and ends with
    it, when the key is revoked), and holds the token its forms must send back (CSRF)."""

    __tablename__ = "staff_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", name="fk_staff_sessions_key_id"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
