"""The FastAPI application: versioned routes under /v1, OpenAPI at /docs, bounded request bodies."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.routers import health, submissions, tasks
from core.settings import Settings, get_settings
from services.bootstrap import prepare


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over the limit (declared or streamed) gets 413, unread."""

    def __init__(self, app, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def _reject(self, send) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "toolarge",
                    "message": f"request bodies are limited to {self.limit_bytes:,} bytes",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit_bytes):
            return await self._reject(send)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)


def create_app(settings: Settings | None = None, *, prepare_on_start: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if prepare_on_start:
            prepare(settings)
        yield

    app = FastAPI(
        title="ml-grader",
        version="1",
        lifespan=lifespan,
        description="Grades PyTorch answers by behaviour.",
    )
    app.state.settings = settings
    errors.install(app)

    app.add_middleware(BodyLimit, limit_bytes=settings.max_request_bytes)
    for router in (tasks.router, submissions.router, health.router):
        app.include_router(router)
    return app
