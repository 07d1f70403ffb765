"""LTI launches: the third-party initiated login, the launch (the id_token validated by
PyLTI1p3 with our stricter checks, lti/adapter.py), who is who, and the deep-linking
answer.

A platform's course (issuer, deployment, context id) is a course of ours, made on its first
launch with two keys of its own: an LMS key its learners' sessions act through, and an
instructor key its staff's desk sessions act through. The LTI `sub` is the learner's id in
it. A resource-link launch opens the task its custom parameter `task_id` names (or the task
the link opened before): a learner gets a session as a one-time link gives (that task
only), staff a desk session on that task's page. A deep-linking launch (staff only) opens
the page where they pick tasks; the answer is a signed LtiDeepLinkingResponse. A refused
launch stores nothing: its transaction rolls back.

Where the platform offers its storage frame (`lti_storage_target`, the 1EdTech LTI OIDC
Login with LTI Client Side postMessages) and the browser keeps no cookie in the platform's
frame, the state travels through that frame instead: the login's page puts a one-time proof
of the state there (`lti.put_data`), the launch's page reads it back (`lti.get_data`) and
posts it with the id_token from our own origin, and the launch takes the proof once
(lti/adapter.py). Such a learner then enters in a new window, by a one-time link.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from pylti1p3.deep_link_resource import DeepLinkResource
from pylti1p3.lineitem import LineItem
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.lti_models import GradePolicy, LtiContext, LtiLearner, LtiLink, LtiPlatform
from db.models import LearnerSession, Role, StaffSession, now
from lti import keys
from lti.adapter import (
    STORAGE_PROOF,
    STORAGE_TARGET,
    STORAGE_TTL_S,
    Incoming,
    Launch,
    LaunchError,
    Login,
    SetCookie,
    Tool,
    digest,
    proof_key,
    storage_key,
)
from lti.claims import AGS_CLAIM, CLAIM, DEEP_LINKING, DL_CLAIM, NRPS_CLAIM
from services.errors import Forbidden, NotFound, ServiceError
from services.keys import Principal, create_key, hash_key
from usecases import access
from usecases.desk import task_list
from usecases.links import ENTER_PATH, add_link
from usecases.tasks import get_task, visible_task
from usecases.unit_of_work import Context

MEMBERSHIP = "http://purl.imsglobal.org/vocab/lis/v2/membership"
INSTRUCTOR_SUB_ROLES = (
    "ExternalInstructor", "Grader", "GuestInstructor", "Lecturer", "PrimaryInstructor",
    "SecondaryInstructor", "TeachingAssistant", "TeachingAssistantGroup",
    "TeachingAssistantOffering", "TeachingAssistantSection",
    "TeachingAssistantSectionAssociation", "TeachingAssistantTemplate",
)  # fmt: skip
LEARNER_SUB_ROLES = ("ExternalLearner", "GuestLearner", "Learner", "NonCreditLearner")
# Only roles in the course (context) decide: a platform sends institution and system roles
# (an institution's instructor, a site's administrator) to people who are learners in this
# course. The short names are the deprecated simple names LTI 1.3 allows for context roles.
STAFF_ROLES = frozenset(
    {f"{MEMBERSHIP}#Instructor", f"{MEMBERSHIP}#Administrator", "Instructor", "Administrator"}
    | {f"{MEMBERSHIP}/Instructor#{sub}" for sub in INSTRUCTOR_SUB_ROLES}
    | {f"{MEMBERSHIP}/Administrator#Administrator"}
)
LEARNER_ROLES = frozenset(
    {f"{MEMBERSHIP}#Learner", "Learner"}
    | {f"{MEMBERSHIP}/Learner#{sub}" for sub in LEARNER_SUB_ROLES}
)
LAUNCH_PATH = "/lti/launch"
DEEP_LINK_PATH = "/teach/lti/deep-link/"
FRAME_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # `_parent`, `post_message_forwarding`


class LaunchRefused(ServiceError):
    """A login or launch the tool does not accept (a 400 page): the message says why."""


@dataclass
class Storage:
    """What one of our pages asks the platform's storage frame: `put` the state's proof at
    `key` (the login's page), or `get` it back and post it with `fields` (the launch's).
    `target` names the frame, `origins` are the only ones messages go to and come from
    (the registered platform's authorisation URL's, and its issuer's), `retry` is the new
    window a browser is offered where the platform does not answer."""

    action: str  # "put" | "get"
    target: str
    origins: list[str]
    key: str
    retry: str
    value: str = ""
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class Entered:
    """Where a launch sends the browser, and the cookies it sets: the library's (`state`)
    and the session it started (`learner` or `staff`, with its value and lifetime)."""

    location: str
    cookies: list[SetCookie] = field(default_factory=list)
    session_kind: str | None = None  # "learner" | "staff"
    session_cookie: str = ""
    session_max_age_s: int = 0
    check: str = ""  # the cookie check's next URL: a page, not a redirect
    window: str = ""  # where the check page's new window goes (else `check`)
    storage: Storage | None = None  # the storage frame's messages, on a page of ours


def _tool(ctx: Context, session: Session, incoming: Incoming) -> Tool:
    key = keys.signing_key(session)
    settings = ctx.settings
    return Tool.of(session, key, incoming, settings.lti_leeway_s, settings.lti_key_set_ttl_s)


def login(ctx: Context, incoming: Incoming, tool_url: str) -> Entered:
    """The OIDC login a platform starts: the state (a cookie), the nonce (stored), and the
    platform's authorisation URL to go to. Over https, a login not yet checked is first
    sent to a page that checks the browser keeps cookies in the platform's frame (`check`:
    the login again with the library's `lti1p3_new_window`, to follow in place or, where
    cookies are refused, in a new window). Where the platform offers its storage frame,
    that page goes straight to the authorisation URL: with the state's cookie where the
    browser keeps it, else once the frame holds the state's proof."""
    target = incoming.params.get(STORAGE_TARGET, "")
    try:
        with ctx.unit_of_work() as work:
            tool = _tool(ctx, work.session, incoming)
            tool.values.sweep()
            login = Login(tool)
            first = not incoming.params.get("lti1p3_new_window")
            if first and (incoming.secure or FRAME_NAME.fullmatch(target)):
                registration = login.validate_oidc_login()  # an unknown issuer: refused here
                _, params = login.get_cookies_allowed_js_check_params()
                retry = f"{tool_url}/lti/login?{urlencode(params)}"
                if not FRAME_NAME.fullmatch(target):
                    return Entered("", check=retry)
                location = login.get_redirect_object(tool_url + LAUNCH_PATH).get_redirect_url()
                [state] = parse_qs(urlsplit(location).query)["state"]
                proof = secrets.token_urlsafe(32)
                storage = Storage(
                    "put", target, _origins(registration), storage_key(state), retry, proof
                )
                tool.values.set_value(
                    proof_key(state),
                    {"proof": digest(proof), "target": target, "origins": storage.origins,
                     "retry": retry},
                    STORAGE_TTL_S,
                )  # fmt: skip
                return Entered(
                    "", tool.cookies.to_set, check=location, window=retry, storage=storage
                )
            location = login.get_redirect_object(tool_url + LAUNCH_PATH).get_redirect_url()
            return Entered(location, tool.cookies.to_set)
    except LaunchError as exc:
        raise LaunchRefused(f"this login was refused: {exc}") from None


def _origins(registration) -> list[str]:
    """The platform's origins, which alone may hold the storage frame: its authorisation
    URL's (where the spec sends the messages) and its issuer's, where that is a URL."""
    found = []
    for url in (registration.get_auth_login_url(), registration.get_issuer()):
        parts = urlsplit(url or "")
        if parts.scheme in ("https", "http") and parts.netloc:
            found.append(f"{parts.scheme}://{parts.netloc}")
    return list(dict.fromkeys(found))


def _storage_read(tool: Tool, incoming: Incoming) -> Storage | None:
    """A launch whose state has no cookie here but a proof its login put in the platform's
    storage: the page that reads it back and posts it with the launch's form."""
    params = incoming.params
    state = params.get("state", "")
    if not state or params.get(STORAGE_PROOF) or tool.cookies.get_cookie(state) == state:
        return None
    kept = tool.values.get_value(proof_key(state))
    if not isinstance(kept, dict):
        return None
    fields = {"id_token": params.get("id_token", ""), "state": state}
    return Storage(
        "get", kept["target"], kept["origins"], storage_key(state), kept["retry"], "", fields
    )


def launch(ctx: Context, incoming: Incoming) -> Entered:
    """Validate the id_token and let its user in (see the module's docstring)."""
    try:
        with ctx.unit_of_work() as work:
            session = work.session
            tool = _tool(ctx, session, incoming)
            read = _storage_read(tool, incoming)
            if read is not None:
                return Entered("", storage=read)
            proven = incoming.params.get(STORAGE_PROOF) and tool.values.get_value(
                proof_key(incoming.params.get("state", ""))
            )  # read before the launch takes it
            message = Launch(tool)
            message.validate()
            entered = _entered(ctx, session, tool, message)
            tool.cookies.clear(incoming.params["state"])  # the state is used up
            entered.cookies += tool.cookies.to_set
            return _through_storage(session, entered, proven["retry"]) if proven else entered
    except LaunchError as exc:
        raise LaunchRefused(f"this launch was refused: {exc}") from None


def _through_storage(session: Session, entered: Entered, retry: str) -> Entered:
    """A launch whose state came through the platform's storage: this browser kept no
    cookie in the frame, so the answer is the cookie check again, in place where cookies
    work now, else in a new window: a learner's by a one-time link into the same session's
    task (five minutes), staff's by a new login there."""
    window = retry
    if entered.session_kind == "learner":
        session.flush()
        row = session.get(LearnerSession, hash_key(entered.session_cookie))
        expires_at = now() + timedelta(seconds=STORAGE_TTL_S)
        token = add_link(session, row.key_id, row.course, row.student_id, row.task_ids, expires_at)
        window = ENTER_PATH + token
    entered.check, entered.window = entered.location, window
    return entered


def _entered(ctx: Context, session: Session, tool: Tool, message: Launch) -> Entered:
    """Who is who, for a validated launch: its session and where it goes."""
    body = message.get_launch_data()
    platform = tool.config.platform(body["iss"], message.get_client_id())
    context = _context(session, platform, body)
    staff = _is_staff(body)
    if body.get(CLAIM + "message_type") == DEEP_LINKING:
        if not staff:
            raise Forbidden("only a course's staff choose this tool's tasks")
        return _staff_session(ctx, session, context, DEEP_LINK_PATH + message.get_launch_id())
    link = _link(ctx, session, context, body)
    if staff:
        return _staff_session(ctx, session, context, f"/teach/tasks/{link.task_id}")
    return _learner_session(ctx, session, context, link, body["sub"])


def _is_staff(body: dict) -> bool:
    """Staff or learner by the launch's roles in the course, matched exactly (see
    `STAFF_ROLES`); anyone else is refused."""
    roles = set(body[CLAIM + "roles"])
    if roles & STAFF_ROLES:
        return True
    if roles & LEARNER_ROLES:
        return False
    raise Forbidden(
        "your role in this course is not one this tool serves: a learner, or staff (an "
        "instructor, teaching assistant or administrator of the course); roles outside the "
        "course do not count"
    )


def course_of(issuer: str, deployment_id: str, context_id: str) -> str:
    """Our course for a platform's: the same name whenever the platform is registered."""
    digest = hashlib.sha256(f"{issuer}\0{deployment_id}\0{context_id}".encode()).hexdigest()
    return f"lti-{digest[:24]}"


def _context(session: Session, platform: LtiPlatform, body: dict) -> LtiContext:
    """The launch's course of ours, made on the first launch (once, under concurrent first
    launches: the unique key decides, the loser reads the winner's)."""
    deployment_id = body[CLAIM + "deployment_id"]
    claim = body.get(CLAIM + "context") or {}
    context_id = claim.get("id")
    if not context_id:
        raise LaunchRefused("this launch names no course (context): launch it from a course")
    key = {"platform_id": platform.id, "deployment_id": deployment_id, "context_id": context_id}
    memberships = (body.get(NRPS_CLAIM) or {}).get("context_memberships_url")
    row = session.scalar(select(LtiContext).filter_by(**key))
    if row is None:
        course = course_of(platform.issuer, deployment_id, context_id)
        title = str(claim.get("title") or claim.get("label") or context_id)[:200]
        try:
            with session.begin_nested():
                lms, _ = create_key(session, name=f"lti: {title}", role=Role.LMS, course=course)
                staff, _ = create_key(
                    session, name=f"lti staff: {title}", role=Role.INSTRUCTOR, course=course
                )
                row = LtiContext(
                    **key, course=course, title=title, lms_key_id=lms.id, staff_key_id=staff.id
                )
                session.add(row)
        except IntegrityError:
            row = session.scalar(select(LtiContext).filter_by(**key))
    if memberships:
        row.memberships_url = memberships
    return row


def _link(ctx: Context, session: Session, context: LtiContext, body: dict) -> LtiLink:
    """The resource link, its task (the custom `task_id`, else the one it opened before),
    its line item and scopes as the launch's AGS claim gives them."""
    resource_link_id = body[CLAIM + "resource_link"]["id"]
    custom = body.get(CLAIM + "custom") or {}
    link = session.scalar(
        select(LtiLink).filter_by(context_pk=context.id, resource_link_id=resource_link_id)
    )
    task_id = custom.get("task_id") or (link.task_id if link else "")
    if not task_id:
        raise LaunchRefused(
            "this link names no task: add it to the course through the tool's task picker "
            "(Deep Linking), or give it the custom parameter task_id"
        )
    try:
        visible_task(session, _staff_principal(context), task_id)
    except NotFound:
        raise LaunchRefused(f"this link names the task {task_id}, which is not here") from None
    ags = body.get(AGS_CLAIM) or {}
    if link is None:
        policy = custom.get("grade_policy") or ctx.settings.lti_grade_policy
        link = LtiLink(
            context_pk=context.id, resource_link_id=resource_link_id, task_id=task_id,
            policy=policy if policy in tuple(GradePolicy) else GradePolicy.BEST,
        )  # fmt: skip
        try:
            with session.begin_nested():
                session.add(link)
        except IntegrityError:
            link = session.scalar(
                select(LtiLink).filter_by(context_pk=context.id, resource_link_id=resource_link_id)
            )
    link.task_id = task_id
    if ags:
        link.ags_scopes = list(ags.get("scope") or [])
        link.lineitems_url = ags.get("lineitems") or link.lineitems_url
        link.lineitem_url = ags.get("lineitem") or link.lineitem_url
    return link


def _staff_principal(context: LtiContext) -> Principal:
    return Principal(context.staff_key_id, Role.INSTRUCTOR, context.course, None, "")


def _learner_session(
    ctx: Context, session: Session, context: LtiContext, link: LtiLink, sub: str
) -> Entered:
    """A learner's session for the link's task, as a one-time link starts one; the learner
    is recorded on the link, for their scores' passback."""
    if session.get(LtiLearner, (link.id, sub)) is None:
        session.add(LtiLearner(link_id=link.id, sub=sub))
    cookie, ttl_s = secrets.token_urlsafe(32), ctx.settings.session_ttl_s
    session.add(
        LearnerSession(
            token_hash=hash_key(cookie),
            key_id=context.lms_key_id,
            course=context.course,
            student_id=sub,
            task_ids=[link.task_id],
            csrf_token=secrets.token_urlsafe(32),
            expires_at=now() + timedelta(seconds=ttl_s),
        )  # fmt: skip
    )
    return Entered(f"/learn/tasks/{link.task_id}", [], "learner", cookie, ttl_s)


def _staff_session(ctx: Context, session: Session, context: LtiContext, location: str) -> Entered:
    cookie, ttl_s = secrets.token_urlsafe(32), ctx.settings.session_ttl_s
    session.add(
        StaffSession(
            token_hash=hash_key(cookie),
            key_id=context.staff_key_id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=now() + timedelta(seconds=ttl_s),
        )  # fmt: skip
    )
    return Entered(location, [], "staff", cookie, ttl_s)


# --- deep linking --------------------------------------------------------------------


def _deep_link_launch(ctx: Context, session: Session, who: Principal, launch_id: str):
    """The deep-linking launch `launch_id`, restored, if it is of the caller's course."""
    access.require(access.may_use_desk(who))
    tool = _tool(ctx, session, Incoming({}, {}, secure=False))
    try:
        message = Launch.restored(tool, launch_id)
    except LaunchError as exc:
        raise LaunchRefused(str(exc)) from None
    body = message.get_launch_data()
    claim = body.get(CLAIM + "context") or {}
    course = course_of(body["iss"], body[CLAIM + "deployment_id"], str(claim.get("id") or ""))
    if body.get(CLAIM + "message_type") != DEEP_LINKING or course != who.course:
        raise Forbidden("this task picker was opened for another course")
    return tool, message, body


def deep_link_choices(ctx: Context, who: Principal, launch_id: str) -> dict[str, Any]:
    """What the platform asked for (one task or several) and the tasks to pick from."""
    with ctx.unit_of_work() as work:
        _, _, body = _deep_link_launch(ctx, work.session, who, launch_id)
    settings = body.get(DL_CLAIM) or {}
    multiple = settings.get("accept_multiple") not in (False, "false")
    tasks = [t for t in task_list(ctx, who) if t.get("status") == "ready" and not t.get("archived")]
    return {"multiple": multiple, "tasks": tasks, "title": settings.get("title") or ""}


def deep_link_answer(
    ctx: Context, who: Principal, launch_id: str, task_ids: list[str], tool_url: str
) -> dict[str, str]:
    """The signed LtiDeepLinkingResponse for the tasks picked: one ltiResourceLink each,
    with the custom parameter task_id and a line item (label, scoreMaximum, resourceId:
    the task id); the launch is used up. Returns where to post it and the JWT."""
    if not task_ids:
        raise LaunchRefused("pick at least one task")
    views = [get_task(ctx, who, task_id) for task_id in dict.fromkeys(task_ids)]
    with ctx.unit_of_work() as work:
        tool, message, body = _deep_link_launch(ctx, work.session, who, launch_id)
        settings = body.get(DL_CLAIM) or {}
        if len(views) > 1 and settings.get("accept_multiple") in (False, "false"):
            raise LaunchRefused("the course asked for one task: pick one")
        resources = []
        for view in views:
            task_id = view["id"]
            item = (
                LineItem()
                .set_label(view["title"])
                .set_score_maximum(view.get("max_score") or 1)
                .set_resource_id(task_id)
            )
            resources.append(
                DeepLinkResource()
                .set_url(tool_url + LAUNCH_PATH)
                .set_title(view["title"])
                .set_custom_params({"task_id": task_id})
                .set_lineitem(item)
            )
        token = message.get_deep_link().get_response_jwt(resources)
        tool.values.forget(message.get_launch_id())
    return {"return_url": settings["deep_link_return_url"], "jwt": token}
