"""The only place that chooses HTTP status codes: service errors and infrastructure failures."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from api.responses import PrintableJSONResponse
from api.schemas import ErrorBody
from services.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ServiceError,
    TooLarge,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS = {
    NotFound: (404, "not_found"),
    Forbidden: (403, "forbidden"),
    Conflict: (409, "conflict"),
    InvalidInput: (422, "invalid_input"),
    TooLarge: (413, "too_large"),
    Unavailable: (503, "unavailable"),
}
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 422: "invalid_input"}

# What each error status means, for the OpenAPI; a route lists those it can answer.
MEANING = {
    401: "No API key, or one that is unknown or revoked.",
    403: "The key's role or course does not allow this.",
    404: "No such resource, or one the key may not see.",
    408: "The request body did not arrive within `GRADER_REQUEST_BODY_TIMEOUT_S`; the "
    "connection is closed.",
    409: "The request is valid but the state forbids it.",
    413: "The request body is over `GRADER_MAX_REQUEST_BYTES`; the connection is closed.",
    422: "Invalid input: the message names the field.",
    503: "The database is unavailable (nothing was stored) or the queue is full: retry after "
    "`Retry-After` seconds.",
}
HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}},
    503: {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
}


def documented(*answers: int | tuple[int, str]) -> dict[int | str, dict]:
    """The OpenAPI `responses` of error statuses, each with the error body; an answer given
    as `(status, text)` says what the status means for that operation."""
    found: dict[int | str, dict] = {}
    for answer in answers:
        status, text = answer if isinstance(answer, tuple) else (answer, MEANING[answer])
        found[status] = {"model": ErrorBody, "description": text}
        if status in HEADERS:
            found[status]["headers"] = HEADERS[status]
    return found


def _body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def body_too_large(limit_bytes: int) -> PrintableJSONResponse:
    """For the request-limits middleware, which answers before any route or handler runs and
    closes the connection after it."""
    return PrintableJSONResponse(
        _body("too_large", f"request bodies are limited to {limit_bytes:,} bytes"),
        status_code=413,
        headers={"Connection": "close"},
    )


def body_too_slow(timeout_s: float) -> PrintableJSONResponse:
    """For the request-limits middleware: a body still arriving after `timeout_s`."""
    return PrintableJSONResponse(
        _body("request_timeout", f"the request body must arrive within {timeout_s:g} s"),
        status_code=408,
        headers={"Connection": "close"},
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> PrintableJSONResponse:
        status, code = next(
            (v for cls, v in STATUS.items() if isinstance(exc, cls)), (400, "bad_request")
        )
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else None
        return PrintableJSONResponse(_body(code, str(exc)), status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> PrintableJSONResponse:
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI could not decode the JSON body
            return PrintableJSONResponse(_body("invalid_input", "the body must be UTF-8 JSON"), 422)
        code = HTTP_CODES.get(exc.status_code, "error")
        return PrintableJSONResponse(
            _body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(DataError)
    async def unstorable(_: Request, exc: DataError) -> PrintableJSONResponse:
        log.info("refused input the database cannot store: %s", exc.orig)
        return PrintableJSONResponse(
            _body("invalid_input", "the request holds a value the database cannot store"), 422
        )

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> PrintableJSONResponse:
        return PrintableJSONResponse(
            _body("unauthorized", str(exc)), status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def database_down(_: Request, exc: Exception) -> PrintableJSONResponse:
        log.error("database unavailable: %s", exc)
        return PrintableJSONResponse(
            _body("unavailable", "the database is unavailable; nothing was stored"),
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> PrintableJSONResponse:
        problems = ["/".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors()]
        return PrintableJSONResponse(_body("invalid_input", "; ".join(problems)), status_code=422)
