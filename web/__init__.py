"""The pages: a learner's front door in a browser, beside the REST API, and the instructor's
desk. Server-rendered templates over the same use cases, a session from a one-time link (a
learner's) or an instructor key (the desk's), CSRF-checked forms and a
Content-Security-Policy without inline script; none of it is in the OpenAPI."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from web import lti, teach
from web.pages import router
from web.rendering import STATIC_DIR, STATIC_PATH


def install(app: FastAPI) -> None:
    """Mount the pages and their static files on the app."""
    app.include_router(router)
    app.include_router(teach.router)
    app.include_router(lti.router)  # the LTI front door: login, launch, the tool's keys
    app.include_router(lti.desk_router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
