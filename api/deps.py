"""Typed dependencies: the use cases' context (the settings with it), the calling principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from services.errors import Unauthorized
from services.keys import Principal
from usecases import keys
from usecases.unit_of_work import Context


async def get_context(request: Request) -> Context:  # async: no thread for a lookup
    return request.app.state.context


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


def get_principal(
    ctx: Annotated[Context, Depends(get_context)],
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    return keys.authenticate(ctx, api_key_of(authorization, x_api_key))


ContextDep = Annotated[Context, Depends(get_context)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
