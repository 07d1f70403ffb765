"""Rendering the pages: the templates (autoescaped), the headers every page carries (the
Content-Security-Policy among them), the words for a submission's state, and refusals as
pages with the status the API's error module chooses."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from api.errors import STATUS
from services.errors import Gone, ServiceError, Unauthorized
from web.plots import loss_plot

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
STATIC_PATH = "/learn/static"
OUTPUT_CAP = 4000  # characters of a traceback or an output shown; the rest is counted

templates = Jinja2Templates(directory=HERE / "templates")  # autoescapes .html


def security_headers(frame_ancestors: str) -> dict[str, str]:
    """No inline script or style, nothing from elsewhere; who may frame the page is the
    deployment's choice (an LMS embedding it)."""
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'; form-action 'self'; base-uri 'none'; "
            f"frame-ancestors {frame_ancestors}"
        ),
        "X-Content-Type-Options": "nosniff",
        # A link's token never leaves for another site in a Referer; the pages' own forms
        # name their origin (under no-referrer a browser sends `Origin: null` with a POST).
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def render(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    settings = request.app.state.context.settings
    return templates.TemplateResponse(
        request, name, values, status_code=status_code,
        headers=security_headers(settings.frame_ancestors),
    )  # fmt: skip


def fragment(name: str, **values: Any) -> str:
    """A partial rendered alone, for the page's script to put in place."""
    return templates.get_template(name).render(**values)


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def status_line(view: dict) -> str:
    """What the live region says about a submission; once graded it ends with the outcome
    and `score X of Y`."""
    if view["status"] == "queued":
        return "Waiting to be graded…"
    if view["status"] == "running":
        return "Grading your answer…"
    outcome = str(view.get("outcome", "")).replace("_", " ")
    return (
        f"Graded: {outcome}, score {number(view.get('score'))} of {number(view.get('max_score'))}"
    )


def capped(text: str | None) -> str:
    if not text or len(text) <= OUTPUT_CAP:
        return text or ""
    return text[:OUTPUT_CAP] + f"\n… ({len(text) - OUTPUT_CAP} more characters not shown)"


templates.env.globals |= {
    "status_line": status_line, "number": number, "capped": capped, "loss_plot": loss_plot,
}  # fmt: skip

REFUSALS = {
    Unauthorized: (401, "Your session has ended"),
    Gone: (410, "This link cannot be used again"),
}


def refusal(
    request: Request, exc: ServiceError | RequestValidationError, page: str = "refusal.html"
) -> HTMLResponse:
    """A refusal as a page: the status the API gives the error, and what it says."""
    if isinstance(exc, RequestValidationError):
        status, title, message = 422, "That request was not understood", "check the address"
    else:
        status, title = next(
            (v for cls, v in REFUSALS.items() if isinstance(exc, cls)), (None, None)
        )
        if status is None:
            status = next((v[0] for cls, v in STATUS.items() if isinstance(exc, cls)), 400)
            title = {403: "Not yours to see", 404: "Not found"}.get(status, "That did not work")
        message = str(exc)
    return render(request, page, status, title=title, message=message)


class PageRoute(APIRoute):
    """A page's route: a refusal (no session, a used link, a forbidden read) is a page."""

    refusal_page = "refusal.html"

    def refused(self, request: Request, exc: ServiceError | RequestValidationError) -> Response:
        return refusal(request, exc, self.refusal_page)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handle(request)
            except (ServiceError, RequestValidationError) as exc:
                return self.refused(request, exc)

        return page
