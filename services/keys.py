"""API keys: created once (the secret is shown once), stored hashed, scoped to a role and a course."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from db.models import ApiKey, Role, now
from services.errors import InvalidInput, NotFound

KEY_PREFIX = "grk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, role and scope (what it may do: usecases/access.py)."""

    key_id: str
    role: Role
    course: str | None
    student_id: str | None
    webhook_secret: str


def create_key(
    session: Session,
    *,
    name: str,
    role: str,
    course: str | None,
    student_id: str | None = None,
    key: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key; returns the row and the plaintext key, which is never stored."""
    if role not in tuple(Role):
        raise InvalidInput(f"role must be one of {', '.join(Role)}")
    if role != Role.ADMIN and not course:
        raise InvalidInput(f"a {role} key needs a course")
    if role == Role.STUDENT and not student_id:
        raise InvalidInput("a student key needs the student's id")
    plaintext = key or KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name, prefix=plaintext[:12], key_hash=hash_key(plaintext), role=role,
        course=course if role != Role.ADMIN else None, student_id=student_id if role == Role.STUDENT else None,
        webhook_secret=secrets.token_hex(32),
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row, plaintext


def authenticate(session: Session, key: str) -> Principal | None:
    return authenticate_many(session, [key]).get(key)


_PRINCIPALS = select(
    ApiKey.key_hash, ApiKey.id, ApiKey.role, ApiKey.course, ApiKey.student_id, ApiKey.webhook_secret
).where(ApiKey.key_hash.in_(bindparam("hashes", expanding=True)), ApiKey.revoked_at.is_(None))


def authenticate_many(session: Session, keys: Iterable[str]) -> dict[str, Principal]:
    """The principal of each key that is known and not revoked, in one query."""
    by_hash = {hash_key(key): key for key in keys}
    rows = session.connection().execute(_PRINCIPALS, {"hashes": list(by_hash)})
    return {
        by_hash[digest]: Principal(key_id, Role(role), course, student_id, secret)
        for digest, key_id, role, course, student_id, secret in rows
    }


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, key_id: str) -> None:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no key {key_id}")
    row.revoked_at = row.revoked_at or now()
