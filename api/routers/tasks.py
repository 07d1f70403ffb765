"""/v1/tasks: instructors post specs (new immutable versions), everyone with access reads them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import ContextDep, PrincipalDep
from usecases import tasks

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

# Task ids are unique per course: an admin (who belongs to no course) names the course.
CourseParam = Annotated[
    str | None,
    Query(
        max_length=100,
        description="Admin only: the course whose task the id names (default: the shared bank's).",
    ),
]


@router.post("", status_code=202)
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


@router.get("/{task_id}")
def get_task(task_id: str, who: PrincipalDep, ctx: ContextDep, course: CourseParam = None) -> dict:
    return tasks.get_task(ctx, who, task_id, course)


@router.get("/{task_id}/versions/{number}")
def get_version(
    task_id: str, number: int, who: PrincipalDep, ctx: ContextDep, course: CourseParam = None
) -> dict:
    return tasks.get_version(ctx, who, task_id, number, course)


@router.post("/{task_id}/archive")
def archive_task(
    task_id: str, who: PrincipalDep, ctx: ContextDep, course: CourseParam = None
) -> dict:
    return tasks.archive(ctx, who, task_id, course)


@router.post("/{task_id}/versions/{number}/regrade", status_code=202)
def regrade_version(
    task_id: str, number: int, who: PrincipalDep, ctx: ContextDep, course: CourseParam = None
) -> dict:
    return tasks.regrade_version(ctx, who, task_id, number, course)
