"""What a desk page's request brings: the instructor their session cookie names (scoped to
/teach), and a form checked against that session's CSRF token; before signing in, the
sign-in form's own token (a cookie of its own, sent back by the form)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Response

from api.deps import ContextDep
from services.errors import Forbidden
from usecases import staff_sessions
from usecases.staff_sessions import Staff
from web.deps import COOKIE as LEARNER_COOKIE
from web.deps import Form, checked

COOKIE = "grader_staff_session"
SIGN_IN_COOKIE = "grader_staff_sign_in"  # the sign-in form's CSRF token, before any session
PATH = "/teach"


def current_staff(request: Request, ctx: ContextDep) -> Staff:
    """The desk session's instructor; a learner's session is refused (403) whichever
    cookie brings it."""
    return staff_sessions.staff_of(
        ctx, request.cookies.get(COOKIE), request.cookies.get(LEARNER_COOKIE)
    )


StaffDep = Annotated[Staff, Depends(current_staff)]


async def checked_staff_form(request: Request, staff: StaffDep) -> Form:
    """The instructor's posted form, checked against their session's token."""
    return await checked(request, staff.csrf_token)


StaffFormDep = Annotated[Form, Depends(checked_staff_form)]


def set_cookie(response: Response, request: Request, name: str, value: str, max_age_s: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age_s, path=PATH, httponly=True, samesite="lax",
        secure=request.url.scheme == "https",
    )  # fmt: skip


def sign_in_token(request: Request) -> str:
    """The sign-in form's token: the one its cookie holds, else a new one."""
    return request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)


async def checked_sign_in(request: Request) -> Form:
    """The sign-in form, once the token it sends back is its cookie's."""
    token = request.cookies.get(SIGN_IN_COOKIE, "")
    if not token:
        raise Forbidden("this form did not come from the sign-in page: reload it and try again")
    return await checked(request, token)
