"""The LTI front door: `GET|POST /lti/login` (the platform's third-party initiated login),
`POST /lti/launch` (its id_token), `GET /lti/jwks` (the tool's public keys) and, at the desk,
the deep-linking task picker (`/teach/lti/deep-link/{launch_id}`). Each handler reads the
request into plain values, calls one use case in the thread pool (PyLTI1p3 is
synchronous), and sets the cookies and the redirect it answers; a refusal is a page with a
4xx. None of it is in the OpenAPI.

The platform posts to the login and the launch from its own site, often inside an iframe:
over https the state cookie and the sessions' cookies are SameSite=None; Secure;
Partitioned, so a browser that keeps third-party cookies apart still sends them back to
us inside that platform's frame; over plain http (development on 127.0.0.1, where the
platform and the tool are the same site) they are SameSite=Lax, which browsers accept
without Secure. Where the browser keeps no cookie in the platform's frame and the platform
offers its storage frame, the state goes through that frame (usecases/lti_launch.py): the
launch form that carries it back must come from a page of ours (its `Origin`)."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit

from anyio.to_thread import run_sync
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api.deps import ContextDep
from lti.adapter import STORAGE_PROOF, Incoming
from services.errors import Forbidden, InvalidInput
from usecases import lti_grades, lti_launch, lti_platforms, lti_roster
from usecases.lti_launch import Entered
from web.deps import COOKIE as LEARNER_COOKIE
from web.deps import CSRF_FIELD, require_same_origin
from web.rendering import PageRoute, render, security_headers
from web.staff import COOKIE as STAFF_COOKIE
from web.staff import StaffDep, StaffFormDep
from web.teach import DeskRoute


class LtiRoute(PageRoute):
    refusal_page = "lti_refusal.html"


router = APIRouter(prefix="/lti", route_class=LtiRoute, include_in_schema=False)
desk_router = APIRouter(prefix="/teach/lti", route_class=DeskRoute, include_in_schema=False)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


# A login's or launch's parameter is an id, a hint or a URL: one longer than this is refused
# (it would be copied into the redirect to the platform); the signed tokens are bounded by
# the request's body limit.
PARAM_MAX_CHARS = 4096
TOKENS = frozenset({"id_token", "JWT"})


async def _incoming(request: Request) -> Incoming:
    params = dict(request.query_params)
    if request.method == "POST":
        try:
            params |= dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise InvalidInput("the form must be sent as UTF-8") from None
    if any("\x00" in text for pair in params.items() for text in pair):
        raise InvalidInput("the request's parameters must not hold NUL characters")
    long = sorted(k for k, v in params.items() if len(v) > PARAM_MAX_CHARS and k not in TOKENS)
    if long:
        raise InvalidInput(
            f"the parameter {long[0][:40]} is longer than {PARAM_MAX_CHARS} characters "
            "(a login hint, an issuer or a URL never is)"
        )
    return Incoming(params, dict(request.cookies), _secure(request))


def tool_url(request: Request, ctx) -> str:
    return (ctx.settings.public_url or str(request.base_url)).rstrip("/")


def set_cookie(
    response: Response, request: Request, name: str, value: str, max_age_s: int | None, path: str
) -> None:
    """A cookie a cross-site frame sends back over https; Lax over http (same site)."""
    secure = _secure(request)
    response.set_cookie(
        name, value, max_age=max_age_s, path=path, httponly=True, secure=secure,
        samesite="none" if secure else "lax",
    )  # fmt: skip
    if secure:  # CHIPS; the standard library writes the attribute only from Python 3.14
        header, line = response.raw_headers[-1]
        response.raw_headers[-1] = (header, line + b"; Partitioned")


def _answer(request: Request, entered: Entered) -> Response:
    """The redirect a login or launch answers, or its page: the cookie check (its next URL
    in place, its new window where cookies are refused) or the storage frame's messages;
    either sets the cookies of a redirect."""
    if entered.storage and entered.storage.action == "get":
        response = render(request, "lti_storage_launch.html", storage=entered.storage)
    elif entered.check:
        response = render(
            request, "lti_cookie_check.html", next_url=entered.check,
            window_url=entered.window or entered.check, storage=entered.storage,
        )  # fmt: skip
    else:
        response = RedirectResponse(
            entered.location, status_code=303 if request.method == "POST" else 302
        )
    for cookie in entered.cookies:
        set_cookie(response, request, cookie.name, cookie.value, cookie.max_age_s, "/lti")
    if entered.session_kind == "learner":
        set_cookie(
            response, request, LEARNER_COOKIE, entered.session_cookie,
            entered.session_max_age_s, "/learn",
        )  # fmt: skip
    elif entered.session_kind == "staff":
        set_cookie(
            response, request, STAFF_COOKIE, entered.session_cookie,
            entered.session_max_age_s, "/teach",
        )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return response


@router.api_route("/login", methods=["GET", "POST"])
async def login(request: Request, ctx: ContextDep) -> Response:
    """The platform's third-party initiated login: on to its authorisation endpoint (over
    https, or where the platform offers its storage frame, after a page that checks the
    browser keeps cookies in the platform's frame, puts the state's proof in that frame
    where it does not, and offers a new window where neither works)."""
    incoming = await _incoming(request)
    entered = await run_sync(lti_launch.login, ctx, incoming, tool_url(request, ctx))
    return _answer(request, entered)


@router.post("/launch")
async def launch(request: Request, ctx: ContextDep) -> Response:
    """The platform's id_token: a learner to their task, staff to the desk or the picker.
    A state read back from the platform's storage is taken only from a page of ours."""
    incoming = await _incoming(request)
    if incoming.params.get(STORAGE_PROOF):
        if "origin" not in request.headers:  # a browser names it in every POST
            raise Forbidden("a state from the platform's storage comes from the tool's page")
        require_same_origin(request)
    entered = await run_sync(lti_launch.launch, ctx, incoming)
    return _answer(request, entered)


@router.get("/jwks")
def jwks(ctx: ContextDep) -> Response:
    """The tool's public keys (the signing one and those rotated out within the grace)."""
    return JSONResponse(lti_platforms.jwks(ctx), headers={"Cache-Control": "max-age=300"})


# --- deep linking, at the desk -------------------------------------------------------


@desk_router.get("/deep-link/{launch_id}")
def deep_link(request: Request, launch_id: str, staff: StaffDep, ctx: ContextDep) -> Response:
    page = lti_launch.deep_link_choices(ctx, staff.who, launch_id)
    return render(
        request, "lti_deep_link.html", staff=staff, csrf_field=CSRF_FIELD, launch_id=launch_id,
        error=None, **page,
    )  # fmt: skip


@desk_router.post("/deep-link/{launch_id}")
async def deep_link_chosen(
    request: Request, launch_id: str, staff: StaffDep, form: StaffFormDep, ctx: ContextDep
) -> Response:
    """The tasks picked, signed into the LtiDeepLinkingResponse the page posts back to the
    platform (a form sent by the page's script, or by its button)."""
    picked = [v for k, v in form.items() if k == "task" or k.startswith("task-")]
    try:
        answer = await run_sync(
            lti_launch.deep_link_answer, ctx, staff.who, launch_id, picked, tool_url(request, ctx)
        )
    except lti_launch.LaunchRefused as exc:
        page = await run_sync(lti_launch.deep_link_choices, ctx, staff.who, launch_id)
        return render(
            request, "lti_deep_link.html", 422, staff=staff, csrf_field=CSRF_FIELD,
            launch_id=launch_id, error=str(exc), **page,
        )  # fmt: skip
    return _hand_off(request, ctx, answer["return_url"], {"JWT": answer["jwt"]})


def _hand_off(request: Request, ctx, action: str, fields: dict[str, str]) -> Response:
    """A page whose form goes to the platform: its policy lets forms go to that origin."""
    response = render(
        request, "lti_return.html", action=action, fields=fields,
        text="Taking you back to the course…",
    )  # fmt: skip
    parts = urlsplit(action)
    origin = f"{parts.scheme}://{parts.netloc}"
    policy = security_headers(ctx.settings.frame_ancestors)["Content-Security-Policy"]
    response.headers["Content-Security-Policy"] = policy.replace(
        "form-action 'self'", f"form-action 'self' {origin}"
    )
    return response


# --- the passback log, at the desk ---------------------------------------------------


@desk_router.get("/tasks/{task_id}/passbacks")
def passbacks(
    request: Request, task_id: str, staff: StaffDep, ctx: ContextDep, resyncing: int | None = None
) -> Response:
    """The course's roster from the LMS (NRPS) with each learner's scores, the task's grade
    passbacks to the LMS (the newest first), and resyncing the task."""
    rows = lti_grades.task_log(ctx, staff.who, task_id)
    members = lti_roster.roster(ctx, staff.who, task_id)
    return render(
        request, "lti_passbacks.html", staff=staff, csrf_field=CSRF_FIELD, task_id=task_id,
        passbacks=rows, resyncing=resyncing, roster=members,
    )  # fmt: skip


@desk_router.post("/tasks/{task_id}/resync")
def resync(task_id: str, staff: StaffDep, form: StaffFormDep, ctx: ContextDep) -> Response:
    done = lti_grades.resync_task(ctx, staff.who, task_id)
    return RedirectResponse(
        f"/teach/lti/tasks/{quote(task_id)}/passbacks?resyncing={done['resyncing']}",
        status_code=303,
    )
