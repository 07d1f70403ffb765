"""The instructor's desk under /teach: sign in with an instructor key, the course's tasks
(post a spec, follow its self-test), one task's submissions, best scores and their CSV, one
submission with what it sent, and regrading. Each handler parses, calls one use case as the
session's instructor, and renders; none is in the OpenAPI."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api.deps import ContextDep
from api.errors import STATUS
from services.errors import InvalidInput, ServiceError, Unauthorized
from usecases import desk, lti_grades, lti_roster, staff_sessions, submissions, tasks
from web.deps import CSRF_FIELD, Form
from web.export import best_scores_csv
from web.rendering import (
    PageRoute,
    fragment,
    render,
    security_headers,
    status_line,
    templates,
)
from web.staff import (
    COOKIE,
    PATH,
    SIGN_IN_COOKIE,
    StaffDep,
    StaffFormDep,
    checked_sign_in,
    set_cookie,
    sign_in_token,
)

LONG_POLL_S = 20.0
WHOSE_LOOP = "The learner's loop"  # the answer's line of a loss plot, as the desk names it


class DeskRoute(PageRoute):
    """A desk page's route: a refusal is a page of the desk; without a session, a page to
    read sends the browser to the sign-in form."""

    refusal_page = "teach_refusal.html"

    def refused(self, request: Request, exc) -> Response:
        if isinstance(exc, Unauthorized) and request.method == "GET":
            return RedirectResponse(f"{PATH}/sign-in", status_code=303)
        return super().refused(request, exc)


router = APIRouter(prefix=PATH, route_class=DeskRoute, include_in_schema=False)


# --- signing in and out --------------------------------------------------------------


@router.get("/sign-in")
def sign_in_page(request: Request) -> Response:
    return _sign_in(request)


@router.post("/sign-in")
async def sign_in(
    request: Request, ctx: ContextDep, form: Annotated[Form, Depends(checked_sign_in)]
) -> Response:
    """Start a desk session with the instructor key the form holds; else the form again,
    with why (401: not a key; 403: not an instructor's)."""
    try:
        signed = await run_sync(staff_sessions.sign_in, ctx, form.get("key", ""))
    except ServiceError as exc:
        return _sign_in(request, str(exc), 401 if isinstance(exc, Unauthorized) else _status(exc))
    response = RedirectResponse(PATH, status_code=303)
    set_cookie(response, request, COOKIE, signed.cookie, signed.max_age_s)
    response.delete_cookie(SIGN_IN_COOKIE, path=PATH)
    return response


@router.post("/sign-out")
def sign_out(request: Request, staff: StaffDep, form: StaffFormDep, ctx: ContextDep) -> Response:
    staff_sessions.sign_out(ctx, request.cookies.get(COOKIE, ""))
    response = RedirectResponse(f"{PATH}/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path=PATH)
    return response


# --- the course's tasks --------------------------------------------------------------


@router.get("")
def task_list(request: Request, staff: StaffDep, ctx: ContextDep) -> Response:
    return _task_list(request, staff, ctx)


@router.post("/tasks")
async def post_spec(
    request: Request, staff: StaffDep, form: StaffFormDep, ctx: ContextDep
) -> Response:
    """Post the spec the form holds (its file, else its text) as the course's; then the
    task's page, where its self-test is followed. A refused spec shows the form again, the
    text as posted and each problem beside the field path it names."""
    body = form.files.get("file") or form.get("spec", "").encode()
    try:
        posted = await run_sync(tasks.post_spec, ctx, staff.who, body, None)
    except ServiceError as exc:
        text = body.decode("utf-8", errors="replace")
        page = await run_sync(desk.task_list, ctx, staff.who)
        return _task_list(
            request, staff, ctx, page, text=text, problems=_problems(exc), status=_status(exc)
        )
    return RedirectResponse(f"{PATH}/tasks/{quote(posted['id'])}", status_code=303)


@router.get("/tasks/{task_id}")
def task(
    request: Request, task_id: str, staff: StaffDep, ctx: ContextDep,
    student: Annotated[str | None, Query(max_length=200)] = None,
    outcome: Annotated[str | None, Query(max_length=32)] = None,
    regrading: Annotated[int | None, Query(ge=0)] = None,
) -> Response:  # fmt: skip
    """The task, its submissions (filtered by `student` and `outcome`), its learners' best
    scores as a histogram, and regrading."""
    page = desk.task_desk(ctx, staff.who, task_id, student or None, outcome or None)
    roster = lti_roster.roster(ctx, staff.who, task_id)  # an LTI course's, from the LMS
    return render(
        request, "teach_task.html", staff=staff, csrf_field=CSRF_FIELD, regrading=regrading,
        student=student or "", outcome=outcome or "", roster=roster, **page,
    )  # fmt: skip


@router.get("/tasks/{task_id}/status")
def task_status(task_id: str, staff: StaffDep, ctx: ContextDep) -> Response:
    """For the page's script: the task's self-test state and, once done, its report."""
    view = tasks.get_task(ctx, staff.who, task_id)
    done = view["status"] != "validating"
    body = {
        "status": view["status"], "done": done, "text": task_status_line(view),
        "html": fragment("_teach_report.html", t=view) if done else None,
    }  # fmt: skip
    return JSONResponse(body, headers=security_headers(ctx.settings.frame_ancestors))


@router.post("/tasks/{task_id}/regrade")
def regrade_task(task_id: str, staff: StaffDep, form: StaffFormDep, ctx: ContextDep) -> Response:
    """Grade again every submission the form's version of the task graded."""
    number = form.get("version", "")
    if not number.isdigit() or not 0 < int(number) < 2**31:
        raise InvalidInput("version: must be a version's number")
    done = tasks.regrade_version(ctx, staff.who, task_id, int(number))
    return RedirectResponse(
        f"{PATH}/tasks/{quote(task_id)}?regrading={done['regrading']}", status_code=303
    )


@router.get("/tasks/{task_id}/best-scores.csv")
def best_scores(task_id: str, staff: StaffDep, ctx: ContextDep) -> Response:
    """Each learner's best score at the task, one row a student."""
    rows = desk.best_scores(ctx, staff.who, task_id)
    headers = security_headers(ctx.settings.frame_ancestors) | {
        "Content-Disposition": f'attachment; filename="{task_id}-best-scores.csv"'
    }
    return Response(best_scores_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)


# --- one submission ------------------------------------------------------------------


@router.get("/submissions/{submission_id}")
def submission(request: Request, submission_id: str, staff: StaffDep, ctx: ContextDep) -> Response:
    """A submission: who sent it, what (code, blanks or choice), and its full result."""
    view = desk.submission(ctx, staff.who, submission_id)
    return render(
        request, "teach_submission.html", staff=staff, csrf_field=CSRF_FIELD, s=view,
        whose_loop=WHOSE_LOOP,
        passbacks=lti_grades.submission_log(ctx, staff.who, submission_id),  # to an LMS (LTI)
    )  # fmt: skip


@router.get("/submissions/{submission_id}/status")
async def submission_status(
    submission_id: str, staff: StaffDep, ctx: ContextDep,
    wait_s: Annotated[float, Query(ge=0, le=LONG_POLL_S)] = 0,
) -> Response:  # fmt: skip
    """For the page's script: the submission's state (a long poll) and, once graded, its result."""
    view = await submissions.wait(ctx, staff.who, submission_id, wait_s)
    done = view["status"] == "completed"
    kind = (await run_sync(desk.submission, ctx, staff.who, submission_id))["kind"]
    body = {
        "status": view["status"], "done": done, "text": status_line(view),
        "html": fragment("_result.html", s=view, kind=kind, whose_loop=WHOSE_LOOP) if done else None,
    }  # fmt: skip
    return JSONResponse(body, headers=security_headers(ctx.settings.frame_ancestors))


@router.post("/submissions/{submission_id}/regrade")
def regrade(submission_id: str, staff: StaffDep, form: StaffFormDep, ctx: ContextDep) -> Response:
    submissions.regrade(ctx, staff.who, submission_id)
    return RedirectResponse(f"{PATH}/submissions/{submission_id}", status_code=303)


# --- helpers ---------------------------------------------------------------------------


def task_status_line(view: dict) -> str:
    """What the live region says about a task's self-test."""
    return {
        "validating": "Self-testing the reference solution…",
        "ready": "Ready: the self-test passed, and the task takes answers.",
        "invalid": "Invalid: the self-test failed (see its report).",
    }.get(view["status"], view["status"])


def _sign_in(request: Request, error: str | None = None, status: int = 200) -> Response:
    token = sign_in_token(request)
    response = render(
        request, "teach_sign_in.html", status, csrf_field=CSRF_FIELD, token=token, error=error
    )
    set_cookie(response, request, SIGN_IN_COOKIE, token, 3600)
    return response


def _task_list(
    request: Request, staff, ctx, page: list | None = None, text: str = "",
    problems: list[tuple[str, str]] | None = None, status: int = 200,
) -> Response:  # fmt: skip
    return render(
        request, "teach_tasks.html", status, staff=staff, csrf_field=CSRF_FIELD,
        tasks=page if page is not None else desk.task_list(ctx, staff.who),
        text=text, problems=problems or [],
    )  # fmt: skip


def _status(exc: ServiceError) -> int:
    return next((v[0] for cls, v in STATUS.items() if isinstance(exc, cls)), 400)


def _problems(exc: ServiceError) -> list[tuple[str, str]]:
    """The refusal's problems, each as (the field path it names, what is wrong there); a
    problem that names no field has the path ""."""
    return list(exc.problems) if isinstance(exc, InvalidInput) else [("", str(exc))]


templates.env.globals["task_status_line"] = task_status_line
