"""Learners in the pages: the one-time link an LMS makes for a student, the session that
opening it starts, and the learner a session's cookie names.

Links and sessions are rows; their tokens are stored hashed, like keys. A link opens once:
the update that marks it used is the one that may start its session. A session acts as the
student of its link (usecases/access.py, `learner`), through the key that made the link,
and ends with its time, or when that key is revoked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db.models import ApiKey, LearnerLink, LearnerSession, Role, aware, now
from services.errors import Gone, InvalidInput, NotFound, Unauthorized
from services.keys import Principal, create_key, hash_key
from usecases import access
from usecases.tasks import visible_task
from usecases.unit_of_work import Context

ENTER_PATH = "/learn/enter/"
OPERATOR_KEY_NAME = "learner links (gradectl link)"


@dataclass(frozen=True)
class Learner:
    """A session's learner: who they act as, the tasks of their set (None: the course's),
    and the token their forms send back."""

    who: Principal
    task_ids: tuple[str, ...] | None
    csrf_token: str


@dataclass(frozen=True)
class Opened:
    """A session just started: the cookie's value (shown once) and how long it lasts."""

    cookie: str
    max_age_s: int
    learner: Learner


def create_link(
    ctx: Context,
    who: Principal,
    student_id: str,
    task_ids: list[str] | None,
    expires_in_s: int | None,
    base_url: str,
) -> dict:
    """A link that lets `student_id` of the caller's course into the pages once, for the
    tasks `task_ids` (default: every task of the course), valid for `expires_in_s`."""
    access.require(access.may_make_link(who))
    ttl_s = expires_in_s or ctx.settings.link_ttl_s
    if not 0 < ttl_s <= ctx.settings.max_link_ttl_s:
        raise InvalidInput(
            f"expires_in_s: must be 1 to {ctx.settings.max_link_ttl_s} seconds, got {ttl_s}"
        )
    expires_at = now() + timedelta(seconds=ttl_s)
    with ctx.unit_of_work() as work:
        for task_id in task_ids or ():
            try:
                visible_task(work.session, who, task_id)
            except NotFound:
                raise InvalidInput(f"task_ids: no task {task_id} in this course") from None
        token = add_link(
            work.session, who.key_id, who.course, student_id,
            list(dict.fromkeys(task_ids)) if task_ids else None, expires_at,
        )  # fmt: skip
    url = (ctx.settings.public_url or base_url).rstrip("/") + ENTER_PATH + token
    return {"url": url, "expires_at": expires_at.isoformat()}


def add_link(
    session: Session,
    key_id: str,
    course: str,
    student_id: str,
    task_ids: list[str] | None,
    expires_at: datetime,
) -> str:
    """A one-time link's row; its token (stored hashed, shown once) is returned."""
    token = secrets.token_urlsafe(32)
    session.add(
        LearnerLink(
            token_hash=hash_key(token),
            key_id=key_id,
            course=course,
            student_id=student_id,
            task_ids=task_ids,
            expires_at=expires_at,
        )  # fmt: skip
    )
    return token


def operator_link(
    ctx: Context, course: str, student_id: str, task_ids: list[str] | None, expires_in_s: int | None
) -> dict:
    """A link made from a shell (`gradectl link`): through the course's own LMS key for
    links, made the first time (its plaintext is never shown: only its links are used)."""
    with ctx.unit_of_work() as work:
        row = work.session.scalar(
            select(ApiKey).where(
                ApiKey.name == OPERATOR_KEY_NAME,
                ApiKey.course == course,
                ApiKey.role == Role.LMS,
                ApiKey.revoked_at.is_(None),
            )  # fmt: skip
        )
        if row is None:
            row, _ = create_key(work.session, name=OPERATOR_KEY_NAME, role=Role.LMS, course=course)
        who = Principal(row.id, Role.LMS, row.course, None, row.webhook_secret)
    base_url = f"http://{ctx.settings.api_host}:{ctx.settings.api_port}"
    return create_link(ctx, who, student_id, task_ids, expires_in_s, base_url)


def open_link(ctx: Context, token: str) -> Opened:
    """Use the link once: a new session for its learner; a used, expired or unknown link
    (or one whose key was revoked) is `Gone`."""
    moment = now()
    cookie, csrf_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    ttl_s = ctx.settings.session_ttl_s
    with ctx.unit_of_work() as work:
        session = work.session
        session.execute(delete(LearnerSession).where(LearnerSession.expires_at < moment))
        used = session.execute(
            update(LearnerLink)
            .where(
                LearnerLink.token_hash == hash_key(token),
                LearnerLink.used_at.is_(None),
                LearnerLink.expires_at > moment,
            )  # fmt: skip
            .values(used_at=moment)
        )
        link = session.get(LearnerLink, hash_key(token)) if used.rowcount == 1 else None
        key = session.get(ApiKey, link.key_id) if link else None
        if link is None or key is None or key.revoked_at is not None:
            raise Gone("this link has been used already or has expired: ask for a new one")
        session.add(
            LearnerSession(
                token_hash=hash_key(cookie),
                key_id=link.key_id,
                course=link.course,
                student_id=link.student_id,
                task_ids=link.task_ids,
                csrf_token=csrf_token,
                expires_at=moment + timedelta(seconds=ttl_s),
            )  # fmt: skip
        )
        learner = _learner(link.key_id, link.course, link.student_id, link.task_ids, csrf_token)
    return Opened(cookie, ttl_s, learner)


def learner_of(ctx: Context, cookie: str) -> Learner:
    """The learner of a session that has not ended; else `Unauthorized`."""
    with ctx.unit_of_work() as work:
        row = work.session.execute(
            select(LearnerSession)
            .join(ApiKey, ApiKey.id == LearnerSession.key_id)
            .where(LearnerSession.token_hash == hash_key(cookie), ApiKey.revoked_at.is_(None))
        ).scalar_one_or_none()
        if row is None or _expired(row.expires_at):
            raise Unauthorized("your session has ended: open a new link to your tasks")
        return _learner(row.key_id, row.course, row.student_id, row.task_ids, row.csrf_token)


def _expired(moment: datetime) -> bool:
    return aware(moment) <= now()


def _learner(
    key_id: str, course: str, student_id: str, task_ids: list | None, csrf_token: str
) -> Learner:
    return Learner(
        access.learner(key_id, course, student_id),
        tuple(task_ids) if task_ids else None,
        csrf_token,
    )
