"""/v1/tasks: instructors post specs (new immutable versions), everyone with access reads them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import errors
from api.deps import ContextDep, PrincipalDep
from usecases import tasks

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], responses=errors.documented(401, 422, 503))
AMBIGUOUS = (409, "An admin named an id that several courses' tasks have: say which with `course`.")
SPEC_BODY = {
    "requestBody": {
        "required": True,
        "description": "A task spec (`gradectl schema` prints its JSON Schema).",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}

# A version's number, as the database stores it (a 32-bit integer).
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]
# Task ids are unique per course: an admin (who belongs to no course) names the course.
CourseParam = Annotated[
    str | None,
    Query(
        max_length=100,
        description="Admin only: the course whose task the id names (default: the shared bank's).",
    ),
]


@router.post(
    "",
    status_code=202,
    openapi_extra=SPEC_BODY,
    responses={
        200: {
            "description": "This spec is already the task's version: that version.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **errors.documented(
            403, (409, "A course's new task would take an id the shared bank has.")
        ),
    },
)
async def post_task(
    request: Request, response: Response, who: PrincipalDep, ctx: ContextDep,
    course: CourseParam = None,
) -> dict:  # fmt: skip
    """Post a spec as JSON or YAML. It is stored as a new version and self-tested in the background.

    The id is the course's own (an instructor's course, or an admin's `course`; no course: the
    shared bank). 409 when a course's new task would take an id the shared bank has."""
    posted = await run_in_threadpool(tasks.post_spec, ctx, who, await request.body(), course)
    response.status_code = 202 if posted["created"] else 200
    return posted


@router.get("")
def list_tasks(who: PrincipalDep, ctx: ContextDep, include_archived: bool = False) -> list[dict]:
    return tasks.list_tasks(ctx, who, include_archived)


@router.get("/{task_id}", responses=errors.documented(404, AMBIGUOUS))
def get_task(task_id: str, who: PrincipalDep, ctx: ContextDep, course: CourseParam = None) -> dict:
    return tasks.get_task(ctx, who, task_id, course)


@router.get("/{task_id}/versions/{number}", responses=errors.documented(403, 404, AMBIGUOUS))
def get_version(
    task_id: str,
    number: VersionNumber,
    who: PrincipalDep,
    ctx: ContextDep,
    course: CourseParam = None,
) -> dict:
    return tasks.get_version(ctx, who, task_id, number, course)


@router.post("/{task_id}/archive", responses=errors.documented(403, 404, AMBIGUOUS))
def archive_task(
    task_id: str, who: PrincipalDep, ctx: ContextDep, course: CourseParam = None
) -> dict:
    return tasks.archive(ctx, who, task_id, course)


@router.post(
    "/{task_id}/versions/{number}/regrade",
    status_code=202,
    responses=errors.documented(403, 404, AMBIGUOUS),
)
def regrade_version(
    task_id: str,
    number: VersionNumber,
    who: PrincipalDep,
    ctx: ContextDep,
    course: CourseParam = None,
) -> dict:
    return tasks.regrade_version(ctx, who, task_id, number, course)
