"""The FastAPI application: versioned routes under /v1, OpenAPI at /docs, bounded requests."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.limits import RequestLimits
from api.responses import PrintableJSONResponse
from api.routers import health, links, lti, submissions, tasks
from api.schemas import parse_submission
from core.settings import Settings, get_settings
from usecases.group_commit import GroupCommit
from usecases.startup import prepare
from usecases.unit_of_work import Context
from web import install as install_pages


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
        responses=errors.documented(408, 413),  # any request, before its route runs
    )
    app.state.context = context
    app.state.group_commit = GroupCommit(context, parse_submission)
    errors.install(app)

    app.add_middleware(
        RequestLimits,
        limit_bytes=settings.max_request_bytes,
        timeout_s=settings.request_body_timeout_s,
        discard_bytes=settings.max_discarded_body_bytes,
    )
    for router in (tasks.router, submissions.router, links.router, lti.router, health.router):
        app.include_router(router)
    install_pages(app)  # the learner's pages, outside the OpenAPI
    return app
