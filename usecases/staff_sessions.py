"""Instructors at the desk (/teach): signing in with their key starts a session, and the
staff member a session's cookie names.

A session is a row, its cookie stored hashed, like a learner's. It acts through the key it
was started with (usecases/access.py, `may_use_desk`), so it ends with its time, when the
instructor signs out, or when that key is revoked. What a learner holds (their session's
cookie) is refused at the desk, by the same decision.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from db.models import ApiKey, Role, StaffSession, aware, now
from services import keys
from services.errors import Unauthorized
from services.keys import Principal, hash_key
from usecases import access, links
from usecases.unit_of_work import Context


@dataclass(frozen=True)
class Staff:
    """A desk session's instructor, and the token their forms send back."""

    who: Principal
    csrf_token: str


@dataclass(frozen=True)
class SignedIn:
    """A session just started: the cookie's value (shown once) and how long it lasts."""

    cookie: str
    max_age_s: int
    staff: Staff


def sign_in(ctx: Context, key: str) -> SignedIn:
    """A new desk session for the key's instructor; an unknown or revoked key is
    `Unauthorized`, a key of another role `Forbidden`."""
    key = key.strip()
    moment = now()
    cookie, csrf_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    ttl_s = ctx.settings.session_ttl_s
    with ctx.unit_of_work() as work:
        who = keys.authenticate(work.session, key) if key else None
        if who is None:
            raise Unauthorized("that is not a key this service knows (or it was revoked)")
        access.require(access.may_use_desk(who))
        work.session.execute(delete(StaffSession).where(StaffSession.expires_at < moment))
        work.session.add(
            StaffSession(
                token_hash=hash_key(cookie),
                key_id=who.key_id,
                csrf_token=csrf_token,
                expires_at=moment + timedelta(seconds=ttl_s),
            )  # fmt: skip
        )
    return SignedIn(cookie, ttl_s, Staff(who, csrf_token))


def staff_of(ctx: Context, cookie: str | None, learner_cookie: str | None = None) -> Staff:
    """The instructor of a desk session that has not ended; a learner's session (its
    cookie, under either name) is `Forbidden`; no session, or one that ended, `Unauthorized`."""
    with ctx.unit_of_work() as work:
        if cookie:
            found = work.session.execute(
                select(StaffSession, ApiKey)
                .join(ApiKey, ApiKey.id == StaffSession.key_id)
                .where(StaffSession.token_hash == hash_key(cookie), ApiKey.revoked_at.is_(None))
            ).one_or_none()
            if found is not None and aware(found[0].expires_at) > now():
                row, key = found
                who = Principal(key.id, Role(key.role), key.course, key.student_id, "")
                access.require(access.may_use_desk(who))
                return Staff(who, row.csrf_token)
    for presented in (cookie, learner_cookie):
        if presented:
            try:
                learner = links.learner_of(ctx, presented)
            except Unauthorized:
                continue
            access.require(access.may_use_desk(learner.who))
    raise Unauthorized("sign in with your instructor key")


def sign_out(ctx: Context, cookie: str) -> None:
    """End the session the cookie names (nothing, if none)."""
    with ctx.unit_of_work() as work:
        work.session.execute(
            delete(StaffSession).where(StaffSession.token_hash == hash_key(cookie))
        )
