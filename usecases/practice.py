"""A learner's practice set: the tasks of their set with where they stand at each (tried or
not, attempts left, best score), one task with their attempts at it, and an answer to one. The same public
views the REST API returns, read as the learner (a student of the course) reads them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from db.models import Submission, SubmissionStatus
from services import catalog
from services.errors import NotFound
from services.keys import Principal
from usecases import attempts, submitting, views
from usecases.admission import NewSubmission
from usecases.submitting import Posted
from usecases.tasks import list_tasks, visible_task
from usecases.unit_of_work import Context

DIFFICULTY = {"easy": 0, "medium": 1, "hard": 2}
KIND = {"code": 0, "choice": 1}  # the code tasks first, then the questions


def practice_set(ctx: Context, who: Principal, task_ids: tuple[str, ...] | None) -> dict[str, Any]:
    """The set's tasks in order (code tasks, then questions; each by the set's order, else
    by difficulty), each with the learner's state, and their progress over the set."""
    tasks = [t for t in list_tasks(ctx, who) if task_ids is None or t["id"] in task_ids]
    place = {task_id: i for i, task_id in enumerate(task_ids or ())}
    tasks.sort(
        key=lambda t: (
            KIND.get(t.get("kind", "code"), 0),
            place.get(t["id"], DIFFICULTY.get(t.get("difficulty"), 0)),
        )
    )
    with ctx.unit_of_work() as work:
        for view in tasks:
            task = visible_task(work.session, who, view["id"])
            view["state"] = _state(work.session, who, task, _own(work.session, who, view["id"]))
    solved = sum(1 for t in tasks if t["state"]["solved"])
    return {
        "tasks": tasks,
        "progress": {
            "tasks": len(tasks),
            "tried": sum(1 for t in tasks if t["state"]["tried"]),
            "solved": solved,
            "points": sum(t["state"]["best_score"] or 0 for t in tasks),
            "max_points": sum(t.get("max_score") or 0 for t in tasks),
        },
    }


def task_page(
    ctx: Context, who: Principal, task_id: str, task_ids: tuple[str, ...] | None
) -> dict[str, Any]:
    """One task of the set: its public view, the learner's state at it and their attempts
    (newest first). A task outside the learner's set is not found."""
    _require_in_set(task_id, task_ids)
    with ctx.unit_of_work() as work:
        task = visible_task(work.session, who, task_id)
        rows = _own(work.session, who, task_id)
        return {
            "task": views.task(task, catalog.shown_version(work.session, task)),
            "state": _state(work.session, who, task, rows),
            "attempts": [views.submission(row) for row in rows],
        }


def submit(
    ctx: Context, who: Principal, task_ids: tuple[str, ...] | None, new: NewSubmission,
    idempotency_key: str | None,
) -> Posted:  # fmt: skip
    """A learner's answer to a task of their set (as `submitting.submit` takes any answer);
    a task outside the set their link allows is not found, as its page is not."""
    _require_in_set(new.task_id, task_ids)
    return submitting.submit(ctx, who, new, idempotency_key)


def _require_in_set(task_id: str, task_ids: tuple[str, ...] | None) -> None:
    if task_ids is not None and task_id not in task_ids:
        raise NotFound(f"no task {task_id} in your set")


def _own(session, who: Principal, task_id: str) -> list[Submission]:
    return list(
        session.scalars(
            select(Submission)
            .where(
                Submission.course == who.course,
                Submission.student_id == who.student_id,
                Submission.task_id == task_id,
            )  # fmt: skip
            .order_by(Submission.created_at.desc())
        )
    )


def _state(session, who: Principal, task, rows: list[Submission]) -> dict[str, Any]:
    scores = [
        r.score for r in rows if r.status == SubmissionStatus.COMPLETED and r.score is not None
    ]
    best = max(scores) if scores else None
    max_score = next((r.max_score for r in rows if r.max_score is not None), None)
    return {
        "tried": bool(rows),
        "attempts_left": attempts.left_at(session, task.key, task.id, who.course, who.student_id),
        "best_score": best,
        "solved": best is not None and max_score is not None and best >= max_score,
        "pending": any(r.status != SubmissionStatus.COMPLETED for r in rows),
    }
