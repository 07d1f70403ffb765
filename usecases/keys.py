"""API keys: who is calling (every request through the REST API), and the keys an operator
creates, lists and revokes (`gradectl keys`)."""

from __future__ import annotations

from db.models import ApiKey, Role
from services import keys
from services.errors import Unauthorized
from services.keys import Principal
from usecases.unit_of_work import Context


def authenticate(ctx: Context, key: str) -> Principal:
    """The principal of a key that is known and not revoked; else `Unauthorized`."""
    with ctx.unit_of_work() as work:
        principal = keys.authenticate(work.session, key)
    if principal is None:
        raise Unauthorized("unknown or revoked API key")
    return principal


def create_key(
    ctx: Context, *, name: str, role: Role | str, course: str | None, student_id: str | None
) -> tuple[ApiKey, str]:
    """A new key: its row and its plaintext, shown once and never stored."""
    with ctx.unit_of_work() as work:
        return keys.create_key(
            work.session, name=name, role=role, course=course, student_id=student_id
        )


def list_keys(ctx: Context) -> list[ApiKey]:
    with ctx.unit_of_work() as work:
        return keys.list_keys(work.session)


def revoke_key(ctx: Context, key_id: str) -> None:
    with ctx.unit_of_work() as work:
        keys.revoke_key(work.session, key_id)
