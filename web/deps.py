"""What a page's request brings: the learner its session cookie names, and a form checked
against its session's CSRF token (`checked`, which the desk's forms use too)."""

from __future__ import annotations

import hmac
from email.parser import BytesParser
from email.policy import HTTP
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

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


class Form(dict[str, str]):
    """A posted form's text fields; `files`: each file field's name, with its bytes."""

    files: dict[str, bytes]


async def checked(request: Request, csrf_token: str) -> Form:
    """The posted form's fields (URL-encoded, or multipart with files), once its CSRF token
    is `csrf_token`; else `Forbidden`. Browsers send a textarea's lines ended by CRLF: they
    are read as LF."""
    require_same_origin(request)
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            fields, files = _multipart(content_type, body)
        else:
            # Strict: parse_qsl would put U+FFFD in place of what is not UTF-8 (a stray
            # byte, half a surrogate pair) and the answer would be graded as changed.
            text = body.decode("utf-8")
            fields, files = dict(parse_qsl(text, keep_blank_values=True, errors="strict")), {}
    except UnicodeDecodeError:
        raise InvalidInput(
            "the form holds text that is not valid UTF-8 (a byte that is not UTF-8, or half "
            "of a surrogate pair), so none of it was taken and no attempt was counted: remove "
            "those characters and send it again"
        ) from None
    sent = fields.pop(CSRF_FIELD, "")
    if not hmac.compare_digest(sent.encode(), csrf_token.encode()):
        raise Forbidden("this form did not come from your session's page: reload it and try again")
    form = Form({name: value.replace("\r\n", "\n") for name, value in fields.items()})
    form.files = files
    return form


def require_same_origin(request: Request) -> None:
    """A form posted by a page of this service: a browser names the page's origin in every
    POST (`Origin`; the pages' referrer policy, same-origin, keeps it from being `null`),
    and one of another origin (a sibling subdomain or port, which can plant cookies but not
    read the page's token) or a hidden one (`null`) is refused. A client that sends no
    Origin is not a browser's page and still needs the session's token."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    if origin == "null" or urlsplit(origin).netloc != request.url.netloc:
        raise Forbidden("this form was sent from another site's page: open the service's own page")


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """A multipart/form-data body's text fields and files (a file field left empty: none)."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise InvalidInput("the form's multipart body could not be read")
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            if data:
                files[str(name)] = data
        else:
            fields[str(name)] = data.decode("utf-8")
    return fields, files


async def checked_form(request: Request, learner: LearnerDep) -> Form:
    """The learner's posted form, checked against their session's token."""
    return await checked(request, learner.csrf_token)


FormDep = Annotated[Form, Depends(checked_form)]
