"""Typed dependencies: the use cases' context (the settings with it), the calling principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from services.errors import Unauthorized
from services.keys import Principal
from usecases import keys
from usecases.unit_of_work import Context

# Declared as security schemes, so the OpenAPI says how a key is sent (either header);
# without `auto_error` a missing key reaches `presented_key`, whose 401 the API's error
# body carries.
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer KEY`")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: KEY`")


async def get_context(request: Request) -> Context:  # async: no thread for a lookup
    return request.app.state.context


async def presented_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    x_api_key: Annotated[str | None, Depends(api_key_header)],
) -> str:
    """The key a request presents, from `X-API-Key` or `Authorization: Bearer`."""
    key = x_api_key or (credentials.credentials.strip() if credentials else None)
    if not key:
        raise Unauthorized("send an API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`")
    return key


KeyDep = Annotated[str, Depends(presented_key)]


def get_principal(ctx: Annotated[Context, Depends(get_context)], key: KeyDep) -> Principal:
    return keys.authenticate(ctx, key)


ContextDep = Annotated[Context, Depends(get_context)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
