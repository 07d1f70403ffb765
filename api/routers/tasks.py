"""/v1/tasks: instructors post specs (new immutable versions), everyone with access reads them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import PrincipalDep, SessionDep, SettingsDep, StaffDep
from services import catalog, queue, submissions
from services.errors import InvalidInput

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
    request: Request,
    response: Response,
    who: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    course: CourseParam = None,
) -> dict:
    """Post a spec as JSON or YAML. It is stored as a new version and self-tested in the background.

    The id is the course's own (an instructor's course, or an admin's `course`; no course: the
    shared bank). 409 when a course's new task would take an id the shared bank has."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the spec must be UTF-8 text (JSON or YAML)") from None
    spec = catalog.parse_posted_spec(text, settings)
    owner = who.course if who.role == "instructor" else (course or None)
    version, created = catalog.add_version(session, spec, course=owner)
    session.commit()
    if created and version.status == "validating":
        queue.validate(settings, version.id)
    response.status_code = 202 if created else 200
    return {
        "id": spec.id,
        "version": version.number,
        "status": version.status,
        "digest": version.digest,
        "created": created,
    }


@router.get("")
def list_tasks(
    who: PrincipalDep, session: SessionDep, include_archived: bool = False
) -> list[dict]:
    return [
        catalog.public_view(
            t, catalog.current_version(session, t) or catalog.latest_version(session, t)
        )
        for t in catalog.list_tasks(session, who, include_archived)
    ]


@router.get("/{task_id}")
def get_task(
    task_id: str, who: PrincipalDep, session: SessionDep, course: CourseParam = None
) -> dict:
    task = catalog.get_task(session, task_id, who, course)
    version = catalog.current_version(session, task) or catalog.latest_version(session, task)
    if catalog.is_staff_for(who, task.course):
        return catalog.staff_view(task, version)
    return catalog.public_view(task, version)


@router.get("/{task_id}/versions/{number}")
def get_version(
    task_id: str, number: int, who: StaffDep, session: SessionDep, course: CourseParam = None
) -> dict:
    task = catalog.get_task(session, task_id, who, course)
    catalog.require_staff(who, task.course)
    return catalog.staff_view(task, catalog.version_by_number(session, task, number))


@router.post("/{task_id}/archive")
def archive_task(
    task_id: str, who: StaffDep, session: SessionDep, course: CourseParam = None
) -> dict:
    task = catalog.get_task(session, task_id, who, course)
    catalog.archive(session, task, who)
    session.commit()
    return {"id": task.id, "archived": True}


@router.post("/{task_id}/versions/{number}/regrade", status_code=202)
def regrade_version(
    task_id: str,
    number: int,
    who: StaffDep,
    session: SessionDep,
    settings: SettingsDep,
    course: CourseParam = None,
) -> dict:
    task = catalog.get_task(session, task_id, who, course)
    version = catalog.version_by_number(session, task, number)
    rows = submissions.regrade_version(session, who, version)
    session.commit()
    for row in rows:
        queue.grade(settings, row.id, row.queue)
    return {"task_id": task.id, "version": number, "regrading": len(rows)}
