"""Tasks: post a spec (a new immutable version, self-tested in the background), list and
read tasks, read a version, archive a task, regrade a version's submissions.

A caller names a task by its id: its course's task with that id, else the shared bank's
(services/catalog.py); an admin, in no course, names the course (`course`), else means the
shared bank's task, else the one course's task with that id.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from db.models import Submission, Task, VersionStatus
from graders.spec import TASK_ID_PATTERN
from services import catalog, queue
from services.errors import NotFound
from services.keys import Principal
from services.posted_spec import parse_posted_spec
from services.taskbank import is_shipped_setup
from usecases import access, views
from usecases.submissions import requeue
from usecases.unit_of_work import Context


def visible_task(session: Session, who: Principal, task_id: str, course: str | None = None) -> Task:
    """The task `task_id` names for the caller (`course`: an admin's choice), or NotFound."""
    task = (
        catalog.find_task(
            session, task_id, access.acting_course(who, course), access.sees_every_course(who)
        )
        if re.fullmatch(TASK_ID_PATTERN, task_id)
        else None
    )
    if task is None or not access.may_see_task(who, task.course):
        raise NotFound(f"no task {task_id}")
    return task


def post_spec(ctx: Context, who: Principal, body: bytes, course: str | None) -> dict[str, Any]:
    """Store the spec `body` holds (UTF-8 JSON or YAML) as a new version of its task in the
    caller's course (an admin's: `course`, else the shared bank), and send it to be
    self-tested; an identical spec returns its version (`created` false). A setup that is
    byte for byte a bundled task's is the service's own code, and is stored as such."""
    access.require(access.may_act_as_staff(who))
    spec = parse_posted_spec(body, ctx.settings)
    with ctx.unit_of_work() as work:
        version, created = catalog.add_version(
            work.session, spec, course=access.spec_course(who, course),
            shared_setup=is_shipped_setup(spec, ctx.settings.tasks_dir),
        )  # fmt: skip
        if created and version.status == VersionStatus.VALIDATING:
            work.enqueue(queue.self_test(version.id))
    return {
        "id": spec.id,
        "version": version.number,
        "status": version.status,
        "digest": version.digest,
        "created": created,
    }


def list_tasks(ctx: Context, who: Principal, include_archived: bool = False) -> list[dict]:
    """The public views of the tasks the caller can name: for a course, its own and the
    shared bank's that no task of its own shadows (archived ones too, with
    `include_archived`); every task for an admin."""
    with ctx.unit_of_work() as work:
        query = select(Task).order_by(Task.id, Task.course)
        if not access.sees_every_course(who):
            query = query.where(or_(Task.course.is_(None), Task.course == who.course))
        tasks = list(work.session.scalars(query))
        own = {t.id for t in tasks if t.course is not None and not access.sees_every_course(who)}
        return [
            views.task(t, catalog.shown_version(work.session, t))
            for t in tasks
            if (t.course is not None or t.id not in own) and (include_archived or not t.archived)
        ]


def get_task(ctx: Context, who: Principal, task_id: str, course: str | None = None) -> dict:
    """The task's view: the staff view for its staff, else the public one."""
    with ctx.unit_of_work() as work:
        task = visible_task(work.session, who, task_id, course)
        version = catalog.shown_version(work.session, task)
        if access.may_manage_task(who, task.course):
            return views.staff_task(task, version)
        return views.task(task, version)


def get_version(
    ctx: Context, who: Principal, task_id: str, number: int, course: str | None = None
) -> dict:
    """One version of the task with its spec and self-test report (its staff only)."""
    access.require(access.may_act_as_staff(who))
    with ctx.unit_of_work() as work:
        task = visible_task(work.session, who, task_id, course)
        access.require(access.may_manage_task(who, task.course))
        return views.staff_task(task, catalog.version_by_number(work.session, task, number))


def archive(ctx: Context, who: Principal, task_id: str, course: str | None = None) -> dict:
    """Take no more submissions for the task (posting a new version opens it again)."""
    access.require(access.may_act_as_staff(who))
    with ctx.unit_of_work() as work:
        task = visible_task(work.session, who, task_id, course)
        access.require(access.may_manage_task(who, task.course))
        task.archived = True
    return {"id": task.id, "archived": True}


def regrade_version(
    ctx: Context, who: Principal, task_id: str, number: int, course: str | None = None
) -> dict:
    """Grade every submission graded by the version again, each on its own queue."""
    access.require(access.may_act_as_staff(who))
    with ctx.unit_of_work() as work:
        task = visible_task(work.session, who, task_id, course)
        version = catalog.version_by_number(work.session, task, number)
        access.require(access.may_manage_task(who, task.course))
        rows = list(
            work.session.scalars(select(Submission).where(Submission.task_version_id == version.id))
        )
        for row in rows:
            requeue(row)
            row.tries = 0
            work.enqueue(queue.grading(row.id, row.queue))
    return {"task_id": task.id, "version": number, "regrading": len(rows)}
