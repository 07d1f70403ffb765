"""What a page's request brings: the learner its session cookie names, and a form checked
against the session's CSRF token."""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Request

from api.deps import ContextDep
from services.errors import Forbidden, InvalidInput, Unauthorized
from usecases import links
from usecases.links import Learner

COOKIE = "grader_session"
CSRF_FIELD = "csrf_token"


def current_learner(request: Request, ctx: ContextDep) -> Learner:
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise Unauthorized("open the link you were given to reach your tasks")
    return links.learner_of(ctx, cookie)


LearnerDep = Annotated[Learner, Depends(current_learner)]


async def checked_form(request: Request, learner: LearnerDep) -> dict[str, str]:
    """The posted form's fields, once its CSRF token is the session's; else `Forbidden`.
    Browsers send a textarea's lines ended by CRLF: they are read as LF."""
    try:
        fields = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise InvalidInput("the form must be sent as UTF-8") from None
    sent = fields.pop(CSRF_FIELD, "")
    if not hmac.compare_digest(sent.encode(), learner.csrf_token.encode()):
        raise Forbidden("this form did not come from your session's page: reload it and try again")
    return {name: value.replace("\r\n", "\n") for name, value in fields.items()}


FormDep = Annotated[dict[str, str], Depends(checked_form)]
