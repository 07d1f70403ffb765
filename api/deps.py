"""Typed dependencies: settings, a database session per request, the calling principal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from api.errors import Unauthorized
from core.settings import Settings
from db.session import session_scope
from services.errors import Forbidden
from services.keys import Principal, authenticate


async def get_settings(request: Request) -> Settings:  # async: no thread for a lookup
    return request.app.state.settings


def get_session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    with session_scope(settings.effective_database_url) as session:
        yield session


def api_key_of(authorization: str | None, x_api_key: str | None) -> str:
    """The key a request presents, from `X-API-Key` or `Authorization: Bearer`."""
    key = x_api_key or (
        authorization[7:].strip()
        if authorization and authorization.lower().startswith("bearer ")
        else None
    )
    if not key:
        raise Unauthorized("send an API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`")
    return key


def principal_of(session: Session, key: str) -> Principal:
    principal = authenticate(session, key)
    if principal is None:
        raise Unauthorized("unknown or revoked API key")
    return principal


def get_principal(
    session: Annotated[Session, Depends(get_session)],
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    return principal_of(session, api_key_of(authorization, x_api_key))


def require_roles(*roles: str):
    def check(who: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if who.role not in roles:
            raise Forbidden(
                f"this needs one of the roles {', '.join(roles)}; your key is {who.role}"
            )
        return who

    return check


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
StaffDep = Annotated[Principal, Depends(require_roles("admin", "instructor"))]
