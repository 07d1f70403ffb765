"""/v1/links: an LMS makes a one-time link that lets a learner into the pages."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api import errors
from api.deps import ContextDep, PrincipalDep
from api.schemas import LinkIn, LinkOut
from usecases import links

router = APIRouter(prefix="/v1/links", tags=["links"], responses=errors.documented(401, 422, 503))


@router.post(
    "",
    status_code=201,
    response_model=LinkOut,
    responses={
        201: {"description": "Created: the link and when it expires."},
        **errors.documented(
            (403, "Only an LMS key makes links."),
            (422, "Invalid input: the message names the field (a task not in the course too)."),
        ),
    },
)
def create_link(body: LinkIn, who: PrincipalDep, ctx: ContextDep, request: Request) -> dict:
    """A link for the learner `student_id` of the key's course: opened once, it starts their
    session in the pages (a cookie), for the tasks `task_ids` (default: the course's)."""
    return links.create_link(
        ctx, who, body.student_id, body.task_ids, body.expires_in_s, str(request.base_url)
    )
