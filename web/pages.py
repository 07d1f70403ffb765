"""The learner's pages under /learn: enter by a link, the practice set, a task (answer it,
follow its grading live, read the result), one attempt. Each handler parses, calls one use
case as the session's learner, and renders; none is in the OpenAPI."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal
from urllib.parse import quote

from anyio.to_thread import run_sync
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api.deps import ContextDep
from api.errors import STATUS
from services.errors import Forbidden, NotFound, ServiceError
from usecases import links, practice, submissions
from usecases.admission import NewSubmission
from web.deps import COOKIE, CSRF_FIELD, FormDep, LearnerDep
from web.rendering import PageRoute, fragment, render, security_headers, status_line

router = APIRouter(prefix="/learn", route_class=PageRoute, include_in_schema=False)
LONG_POLL_S = 20.0


@router.get("/enter/{token}")
def enter(token: str, request: Request, ctx: ContextDep) -> Response:
    """Use a learner's link: start their session (the cookie) and show their set. A browser
    already in a learner's session is asked first (a page of another site could send it to
    someone else's link, whose answers would then be that learner's)."""
    current = _session_of(request, ctx)
    if current is not None:
        return render(request, "enter.html", learner=current, token=token, csrf_field=CSRF_FIELD)
    return _open(token, request, ctx)


@router.post("/enter/{token}")
def enter_confirmed(
    token: str, request: Request, learner: LearnerDep, form: FormDep, ctx: ContextDep
) -> Response:
    """The link, opened from the session's own page (its token, the service's origin)."""
    return _open(token, request, ctx)


def _session_of(request: Request, ctx) -> links.Learner | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    try:
        return links.learner_of(ctx, cookie)
    except ServiceError:
        return None


def _open(token: str, request: Request, ctx) -> Response:
    opened = links.open_link(ctx, token)
    response = RedirectResponse("/learn", status_code=303)
    response.set_cookie(
        COOKIE, opened.cookie, max_age=opened.max_age_s, path="/learn", httponly=True,
        samesite="lax", secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


@router.get("")
def practice_set(request: Request, learner: LearnerDep, ctx: ContextDep) -> Response:
    page = practice.practice_set(ctx, learner.who, learner.task_ids)
    return render(request, "learn.html", learner=learner, **page)


@router.get("/tasks/{task_id}")
def task(request: Request, task_id: str, learner: LearnerDep, ctx: ContextDep) -> Response:
    page = practice.task_page(ctx, learner.who, task_id, learner.task_ids)
    return _task_page(request, learner, page)


@router.post("/tasks/{task_id}")
async def submit(
    request: Request, task_id: str, learner: LearnerDep, form: FormDep, ctx: ContextDep
) -> Response:
    """Submit the form's answer (its blanks, code or choice) as the learner; then the task's
    page, where the grading is followed live. A refused answer shows the page again with why."""
    answer = form.get("answer")
    blanks = {
        int(name.removeprefix("blank-")): value
        for name, value in form.items()
        if name.startswith("blank-") and name.removeprefix("blank-").isdigit() and value
    }
    new = NewSubmission(
        task_id, learner.who.student_id or "",
        code=form.get("code", "") if answer == "code" else None,
        blanks=blanks if answer == "blanks" else None,
        choice=form.get("choice", "") if answer == "choice" else None,
    )  # fmt: skip
    try:
        key = _idempotency_key(learner, form)
        await run_sync(practice.submit, ctx, learner.who, learner.task_ids, new, key)
    except ServiceError as exc:
        page = await run_sync(practice.task_page, ctx, learner.who, task_id, learner.task_ids)
        status = next((v[0] for cls, v in STATUS.items() if isinstance(exc, cls)), 400)
        return _task_page(request, learner, page, error=str(exc), status_code=status)
    return RedirectResponse(f"/learn/tasks/{quote(task_id)}#result", status_code=303)


@router.get("/submissions/{submission_id}")
def attempt(request: Request, submission_id: str, learner: LearnerDep, ctx: ContextDep) -> Response:
    """One of the learner's attempts: what they sent, and its result."""
    with _only_own():
        view = submissions.read(ctx, learner.who, submission_id, with_answer=True)
    return render(request, "submission.html", learner=learner, s=view)


@router.get("/submissions/{submission_id}/status")
async def status(
    submission_id: str, learner: LearnerDep, ctx: ContextDep,
    wait_s: Annotated[float, Query(ge=0, le=LONG_POLL_S)] = 0,
    kind: Literal["code", "choice"] = "code",
) -> Response:  # fmt: skip
    """For the page's script: the attempt's state (a long poll) and, once graded, its result."""
    with _only_own():
        view = await submissions.wait(ctx, learner.who, submission_id, wait_s)
    done = view["status"] == "completed"
    body = {
        "id": view["id"], "status": view["status"], "done": done, "text": status_line(view),
        "html": fragment("_result.html", s=view, kind=kind) if done else None,
    }  # fmt: skip
    headers = security_headers(ctx.settings.frame_ancestors)
    return JSONResponse(body, headers=headers)


@contextmanager
def _only_own() -> Iterator[None]:
    """A learner reads only their own attempts: any other id is refused (403) alike,
    whether it exists or not."""
    try:
        yield
    except NotFound:
        raise Forbidden("this attempt is not one of yours") from None


def _task_page(
    request: Request, learner, page: dict, error: str | None = None, status_code: int = 200
) -> Response:
    return render(
        request, "task.html", status_code, learner=learner, csrf_field=CSRF_FIELD,
        attempt_id=secrets.token_urlsafe(16), error=error, **page,
    )  # fmt: skip


def _idempotency_key(learner, form: dict[str, str]) -> str | None:
    """The form's one-time id, so that a form sent twice (a double click) is one attempt;
    scoped to the learner, since their course's key holds every learner's."""
    attempt_id = form.get("attempt_id", "")[:64]
    if not attempt_id:
        return None
    who = f"{learner.who.course}\0{learner.who.student_id}".encode()
    return f"learn-{hashlib.sha256(who).hexdigest()[:24]}-{attempt_id}"
