"""The FastAPI application: versioned routes under /v1, OpenAPI at /docs, bounded request bodies."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.responses import PrintableJSONResponse
from api.routers import health, submissions, tasks
from api.schemas import parse_submission
from core.settings import Settings, get_settings
from usecases.group_commit import GroupCommit
from usecases.startup import prepare
from usecases.unit_of_work import Context


class BodyLimit:
    """ASGI middleware: reads the whole body first and answers 413 to one over the limit
    (declared or streamed), so no route ever sees a truncated body."""

    def __init__(self, app, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit_bytes):
            return await errors.body_too_large(self.limit_bytes)(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit_bytes:
                return await errors.body_too_large(self.limit_bytes)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def create_app(settings: Settings | None = None, *, prepare_on_start: bool = True) -> FastAPI:
    settings = settings or get_settings()
    context = Context.of(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if prepare_on_start:
            prepare(context)
        # What start-up made (modules, the app, caches: some 200,000 objects) lives as long
        # as the process; left to the collector, each full collection walked all of it, a
        # pause of 100-200 ms under load on two cores, felt by every request in flight.
        gc.collect()
        gc.freeze()
        yield

    app = FastAPI(
        title="ml-grader",
        version="1",
        lifespan=lifespan,
        description="Grades PyTorch answers by behaviour.",
        default_response_class=PrintableJSONResponse,
    )
    app.state.context = context
    app.state.group_commit = GroupCommit(context, parse_submission)
    errors.install(app)

    app.add_middleware(BodyLimit, limit_bytes=settings.max_request_bytes)
    for router in (tasks.router, submissions.router, health.router):
        app.include_router(router)
    return app
