"""The only place that chooses HTTP status codes: service errors and infrastructure failures."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from services.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceError,
    TooLarge,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS = {
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    InvalidInput: 422,
    TooLarge: 413,
    Unavailable: 503,
}


class Unauthorized(Exception):
    """No key, or a key that does not authenticate."""


def _body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else None
        return JSONResponse(
            _body(type(exc).__name__.lower(), str(exc)), status_code=status, headers=headers
        )

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse(
            _body("unauthorized", str(exc)), status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return JSONResponse(
            _body("unavailable", "the database is unavailable; nothing was stored"),
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = ["/".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors()]
        return JSONResponse(_body("invalid_input", "; ".join(problems)), status_code=422)
