"""The instructor's desk: the course's tasks with their state, and one task's submissions
(numbered by attempt, filtered by student and outcome), its learners' best scores and
their spread, and one submission with what it sent. The same views the REST API returns,
read as the course's staff read them (usecases/access.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select

from db.models import Submission, SubmissionStatus, TaskVersion, aware
from graders.result import Outcome
from services import catalog
from services.errors import InvalidInput
from services.keys import Principal
from usecases import access, views
from usecases.submissions import read, visible_submission
from usecases.tasks import get_task, list_tasks, visible_task
from usecases.unit_of_work import Context

OUTCOMES = (*Outcome.__args__, "pending")  # "pending": not graded yet
SHOWN = 200  # submissions a task's page lists, the newest first
BINS = 10


def task_list(ctx: Context, who: Principal) -> list[dict[str, Any]]:
    """The tasks the course can name (its own, then the shared bank's), each as
    `GET /v1/tasks/{id}` shows it to the caller (its own with the self-test report), and
    `shared` for the bank's."""
    access.require(access.may_act_as_staff(who))
    listed = list_tasks(ctx, who, include_archived=True)
    shown = [get_task(ctx, who, t["id"]) | {"shared": t["course"] is None} for t in listed]
    return sorted(shown, key=lambda t: (t["shared"], t["id"]))


def task_desk(
    ctx: Context, who: Principal, task_id: str, student_id: str | None = None,
    outcome: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One task for its course's staff: its view, its submissions (each with `attempt`,
    the student's how-manieth at the task) filtered by student and outcome, each student's
    best score and their histogram, how many submissions each version graded, and whether
    the caller may regrade a version's submissions (as `regrade_version` decides: not a
    shared bank task's, which every course's answers share)."""
    access.require(access.may_act_as_staff(who))
    if outcome and outcome not in OUTCOMES:
        raise InvalidInput(f"outcome: must be one of {', '.join(OUTCOMES)}")
    task = get_task(ctx, who, task_id)
    scope = access.readable(who)
    with ctx.unit_of_work() as work:
        found = visible_task(work.session, who, task_id)
        mine = [Submission.task_key == found.key]
        if not scope.every_course:
            mine.append(Submission.course == scope.course)
        attempt = (
            func.row_number()
            .over(
                partition_by=Submission.student_id, order_by=(Submission.created_at, Submission.id)
            )
            .label("attempt")
        )
        numbered = select(Submission.id, attempt).where(*mine).subquery()
        query = (
            select(Submission, numbered.c.attempt)
            .join(numbered, numbered.c.id == Submission.id)
            .order_by(Submission.created_at.desc(), Submission.id)
            .limit(SHOWN)
        )
        if student_id:
            query = query.where(Submission.student_id == student_id)
        if outcome == "pending":
            query = query.where(Submission.status != SubmissionStatus.COMPLETED)
        elif outcome:
            query = query.where(Submission.outcome == outcome)
        rows = [views.submission(row) | {"attempt": n} for row, n in work.session.execute(query)]
        by_version = dict(
            work.session.execute(
                select(TaskVersion.number, func.count())
                .join(Submission, Submission.task_version_id == TaskVersion.id)
                .where(*mine)
                .group_by(TaskVersion.number)
                .order_by(TaskVersion.number)
            ).all()
        )
        best = _best_scores(work.session, mine)
    return {
        "task": task,
        "submissions": rows,
        "best": best,
        "histogram": histogram([b["best_score"] for b in best], task.get("max_score")),
        "by_version": by_version,
        "may_regrade_all": bool(access.may_manage_task(who, found.course)),
        "outcomes": OUTCOMES,
    }


def best_scores(ctx: Context, who: Principal, task_id: str) -> list[dict[str, Any]]:
    """Each student of the caller's course who answered the task: their best score (None
    while none is graded), the task's maximum, their attempts and their last one's time."""
    access.require(access.may_act_as_staff(who))
    scope = access.readable(who)
    with ctx.unit_of_work() as work:
        task = visible_task(work.session, who, task_id)
        mine = [Submission.task_key == task.key]
        if not scope.every_course:
            mine.append(Submission.course == scope.course)
        return _best_scores(work.session, mine)


def submission(ctx: Context, who: Principal, submission_id: str) -> dict[str, Any]:
    """One submission with what it sent (views.answer), the student's how-manieth attempt
    at the task it is, and whether the caller may regrade it."""
    access.require(access.may_act_as_staff(who))
    view = read(ctx, who, submission_id, with_answer=True)
    with ctx.unit_of_work() as work:
        row = visible_submission(work.session, who, submission_id)
        view["attempt"] = work.session.scalar(
            select(func.count()).where(
                Submission.task_key == row.task_key,
                Submission.course == row.course,
                Submission.student_id == row.student_id,
                Submission.created_at <= row.created_at,
            )  # fmt: skip
        )
        view["kind"] = catalog.spec_by_id(work.session, row.task_version_id).kind
        view["may_regrade"] = bool(access.may_regrade(who, row.course))
    return view


def histogram(scores: list[float | None], max_score: float | None) -> dict[str, Any]:
    """How many of `scores` fall in each bin from 0 to `max_score`: one per whole score
    when the maximum is a whole number up to ten (the last holds the maximum alone), else
    ten of equal width (the last holds the maximum too). The scores not graded yet are
    counted apart. Each bin's `label` says which scores it holds ("1.5 to under 2", the
    last "2 to 2.5", the maximum alone "10") and its `tick` where it starts, with as many
    decimals as tell its edges apart; `top` is the maximum so written."""
    graded = [s for s in scores if s is not None]
    top = float(max_score or max(graded, default=0.0) or 1.0)
    if top.is_integer() and top <= BINS:
        whole = int(top)
        bins = [{"low": k, "high": k + 1 if k < whole else k, "count": 0} for k in range(whole + 1)]
        width = 1.0
    else:
        width = top / BINS
        bins = [{"low": i * width, "high": (i + 1) * width, "count": 0} for i in range(BINS)]
    for score in graded:
        bins[min(max(int(score // width), 0), len(bins) - 1)]["count"] += 1
    edges = [b["low"] for b in bins] + [bins[-1]["high"]]
    decimals = _decimals(edges, width)
    for i, b in enumerate(bins):
        low, high = _edge(b["low"], decimals), _edge(b["high"], decimals)
        last = i == len(bins) - 1
        b["tick"] = low
        b["label"] = (
            low if low == high else f"{low} to {high}" if last else f"{low} to under {high}"
        )
    top = _edge(bins[-1]["high"], decimals)
    return {"bins": bins, "graded": len(graded), "pending": len(scores) - len(graded), "top": top}


def _decimals(edges: list[float], width: float) -> int:
    """The fewest decimals (up to six) that write each edge within a twentieth of a bin's
    width of its value, and every two edges differently."""
    for decimals in range(7):
        rounded = [round(e, decimals) for e in edges]
        close = all(abs(r - e) <= width / 20 for r, e in zip(rounded, edges, strict=True))
        if close and len(set(rounded)) == len(set(edges)):
            return decimals
    return 6


def _edge(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _best_scores(session, mine: list) -> list[dict[str, Any]]:
    rows = session.execute(
        select(
            Submission.student_id,
            func.max(case((Submission.status == SubmissionStatus.COMPLETED, Submission.score))),
            func.max(Submission.max_score),
            func.count(),
            func.max(Submission.created_at),
        )
        .where(*mine)
        .group_by(Submission.student_id)
        .order_by(Submission.student_id)
    )
    return [
        {
            "student_id": student,
            "best_score": best,
            "max_score": top,
            "attempts": attempts,
            "last_at": aware(last).isoformat() if last else None,
        }  # fmt: skip
        for student, best, top, attempts, last in rows
    ]
