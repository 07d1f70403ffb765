"""Assignment and Grade Services: a learner's score goes to their link's line item after each
final result, in the worker, never in a request.

`passbacks_for` runs in the worker's finish transaction (usecases/worker.py): one passback
row per link the learner launched for the task, and its message. `send_passback` (a worker
task) computes what the LMS should show under the link's policy (the best score, or the
latest), and sends it only when that differs from what the platform last accepted for the
learner there; the line item is the launch's, else found (by resourceId, the task id) or
created once, under the link's row lock. Access tokens come by the client-credentials grant
(lti/adapter.py, `Connector`). A failed try is retried with backoff as webhooks are, and the
log (state, tries, the platform's status and error text) is read per submission and per
task; staff may resync a task (every learner's current score sent again).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import requests
from pylti1p3.assignments_grades import AssignmentsGradesService
from pylti1p3.exception import LtiException, LtiServiceException
from pylti1p3.grade import Grade
from pylti1p3.lineitem import LineItem
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.lti_models import (
    GradePolicy,
    LtiContext,
    LtiLearner,
    LtiLink,
    LtiPassback,
    LtiPlatform,
    PassbackState,
)
from db.models import Submission, SubmissionStatus, aware, now
from lti import keys
from lti.adapter import Connector, Values, http, registration_of
from services import catalog, queue
from services.errors import NotFound
from services.keys import Principal
from services.queue import Message
from usecases import access
from usecases.submissions import visible_submission
from usecases.tasks import get_task, visible_task
from usecases.unit_of_work import Context

MAX_ERROR_CHARS = 500
SHOWN = 200
NOT_A_SCORE = ("internal_error",)  # our failure: the LMS keeps what it shows


def passbacks_for(session: Session, row: Submission) -> list[Message]:
    """A pending passback per link of the submission's course and task its learner launched,
    and the messages that send them (once the transaction commits)."""
    links = session.scalars(
        select(LtiLink.id)
        .join(LtiContext, LtiContext.id == LtiLink.context_pk)
        .join(LtiLearner, LtiLearner.link_id == LtiLink.id)
        .where(
            LtiContext.course == row.course,
            LtiLink.task_id == row.task_id,
            LtiLearner.sub == row.student_id,
        )
    ).all()
    messages = []
    for link_id in links:
        if session.scalar(select(LtiPassback.id).filter_by(submission_id=row.id, link_id=link_id)):
            continue  # a regrade's result: its row is sent again below
        passback = LtiPassback(
            submission_id=row.id, link_id=link_id, user_id=row.student_id, next_attempt_at=now()
        )
        session.add(passback)
        session.flush()
        messages.append(queue.passback(passback.id))
    for passback in session.scalars(
        select(LtiPassback).where(
            LtiPassback.submission_id == row.id, LtiPassback.state != PassbackState.PENDING
        )
    ):
        _reset(passback)
        messages.append(queue.passback(passback.id))
    return messages


def _reset(passback: LtiPassback) -> None:
    passback.state, passback.tries, passback.next_attempt_at = PassbackState.PENDING, 0, now()
    passback.last_status_code = passback.last_error = None


def _shown(session: Session, link: LtiLink, course: str, sub: str) -> Submission | None:
    """The submission whose score the LMS should show: the best (the earliest of equal
    best scores) or the latest graded one; our own failures never count."""
    query = select(Submission).where(
        Submission.course == course,
        Submission.student_id == sub,
        Submission.task_id == link.task_id,
        Submission.status == SubmissionStatus.COMPLETED,
        Submission.score.is_not(None),
        Submission.outcome.not_in(NOT_A_SCORE),
    )
    if link.policy == GradePolicy.LATEST:
        query = query.order_by(Submission.finished_at.desc(), Submission.id)
    else:
        query = query.order_by(Submission.score.desc(), Submission.finished_at, Submission.id)
    return session.scalars(query.limit(1)).first()


def send_passback(ctx: Context, passback_id: str) -> float | None:
    """Try one passback; the delay before the next try, or None when done."""
    settings = ctx.settings
    with ctx.unit_of_work() as work:
        session = work.session
        passback = session.get(LtiPassback, passback_id, with_for_update=True)
        if passback is None or passback.state != PassbackState.PENDING:
            return None
        due = aware(passback.next_attempt_at)
        if due is not None and due > now() + timedelta(seconds=1):
            return None
        link = session.get(LtiLink, passback.link_id, with_for_update=True)
        context = session.get(LtiContext, link.context_pk)
        learner = session.get(LtiLearner, (link.id, passback.user_id), with_for_update=True)
        shown = _shown(session, link, context.course, passback.user_id)
        if shown is None or learner is None:
            passback.state = PassbackState.SKIPPED
            passback.last_error = "no graded score to send (our own failures do not count)"
            return None
        passback.score_given, passback.score_maximum = shown.score, shown.max_score
        if learner.shown_score is not None and abs(learner.shown_score - shown.score) < 1e-9:
            passback.state = PassbackState.UNCHANGED
            return None
        passback.tries += 1
        platform = session.get(LtiPlatform, context.platform_id)
        client = http()
        statuses: list[int] = []
        client.hooks["response"].append(lambda r, *a, **k: statuses.append(r.status_code))
        registration = registration_of(platform, keys.signing_key(session))
        connector = Connector.bound(Values(session))(registration, client)
        try:
            ags = AssignmentsGradesService(connector, _service_data(link))
            lineitem = _lineitem(session, ags, link, shown)
            ags.put_grade(_grade(shown, passback.user_id), lineitem)
        except LtiServiceException as exc:
            passback.last_status_code = exc.response.status_code
            passback.last_error = f"{exc}: {exc.response.text}"[:MAX_ERROR_CHARS]
        except requests.RequestException as exc:
            passback.last_status_code = None
            passback.last_error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        except LtiException as exc:  # the launch gave no way to post scores: trying is futile
            passback.state, passback.last_error = PassbackState.FAILED, str(exc)[:MAX_ERROR_CHARS]
            return None
        else:
            passback.state, passback.sent_at = PassbackState.SENT, now()
            passback.last_status_code, passback.last_error = (
                statuses[-1] if statuses else None,
                None,
            )
            learner.shown_score = shown.score
            return None
        if passback.tries >= settings.lti_passback_max_attempts:
            passback.state = PassbackState.FAILED
            return None
        delay = settings.lti_passback_backoff_s * 2 ** (passback.tries - 1)
        passback.next_attempt_at = now() + timedelta(seconds=delay)
        work.enqueue(queue.passback(passback.id, countdown=delay))
        return delay


def _service_data(link: LtiLink) -> dict[str, Any]:
    data: dict[str, Any] = {"scope": list(link.ags_scopes or [])}
    if link.lineitems_url:
        data["lineitems"] = link.lineitems_url
    if link.lineitem_url:
        data["lineitem"] = link.lineitem_url
    return data


def _lineitem(
    session: Session, ags: AssignmentsGradesService, link: LtiLink, shown: Submission
) -> LineItem:
    """The link's line item: the launch's, else the platform's with the task as resourceId
    (and this link's resourceLinkId, where the item has one), else one created now; kept on
    the link (whose row lock this transaction holds), so it is created once."""
    if link.lineitem_url:
        return LineItem({"id": link.lineitem_url})
    if not link.lineitems_url:
        raise LtiException("the launch gave no line item and no line items URL (AGS claim)")
    task_id, resource_link_id = link.task_id, link.resource_link_id

    def ours(item: dict) -> bool:
        return item.get("resourceId") == task_id and item.get("resourceLinkId") in (
            None, resource_link_id,
        )  # fmt: skip

    found = ags.find_lineitem_satisfying(ours) if ags.can_read_lineitem() else None
    if found is None:
        title = catalog.spec_by_id(session, shown.task_version_id).title
        found = ags.create_lineitem(
            LineItem()
            .set_label(title)
            .set_score_maximum(shown.max_score or 1)
            .set_resource_id(task_id)
            .set_resource_link_id(resource_link_id)
        )
    link.lineitem_url = found.get_id()
    return found


def _grade(shown: Submission, sub: str) -> Grade:
    outcome = str(shown.outcome or "").replace("_", " ")
    return (
        Grade()
        .set_score_given(shown.score)
        .set_score_maximum(shown.max_score)
        .set_activity_progress("Completed")
        .set_grading_progress("FullyGraded")
        .set_timestamp(now().isoformat(timespec="milliseconds"))
        .set_user_id(sub)
        .set_comment(f"{outcome}: {shown.score:g} of {shown.max_score:g}")
    )


# --- the log and resyncing -----------------------------------------------------------


def _view(passback: LtiPassback) -> dict[str, Any]:
    return {
        "id": passback.id,
        "submission_id": passback.submission_id,
        "user_id": passback.user_id,
        "state": passback.state,
        "score_given": passback.score_given,
        "score_maximum": passback.score_maximum,
        "tries": passback.tries,
        "last_status_code": passback.last_status_code,
        "last_error": passback.last_error,
        "created_at": aware(passback.created_at).isoformat(),
        "sent_at": aware(passback.sent_at).isoformat() if passback.sent_at else None,
    }


def submission_log(ctx: Context, who: Principal, submission_id: str) -> list[dict[str, Any]]:
    """A submission's passbacks, for those who may read it."""
    with ctx.unit_of_work() as work:
        visible_submission(work.session, who, submission_id)
        rows = work.session.scalars(
            select(LtiPassback)
            .where(LtiPassback.submission_id == submission_id)
            .order_by(LtiPassback.created_at)
        )
        return [_view(row) for row in rows]


def task_log(ctx: Context, who: Principal, task_id: str) -> list[dict[str, Any]]:
    """The newest passbacks of the caller's course at a task, for its staff."""
    access.require(access.may_act_as_staff(who))
    with ctx.unit_of_work() as work:
        visible_task(work.session, who, task_id)
        rows = work.session.scalars(
            select(LtiPassback)
            .join(LtiLink, LtiLink.id == LtiPassback.link_id)
            .join(LtiContext, LtiContext.id == LtiLink.context_pk)
            .where(LtiContext.course == who.course, LtiLink.task_id == task_id)
            .order_by(LtiPassback.created_at.desc())
            .limit(SHOWN)
        )
        return [_view(row) for row in rows]


def resync_task(ctx: Context, who: Principal, task_id: str) -> dict[str, int]:
    """Send every learner's current score at the task again, to each link of the course
    that opens it (as if the LMS showed nothing yet)."""
    access.require(access.may_act_as_staff(who))
    get_task(ctx, who, task_id)
    with ctx.unit_of_work() as work:
        session = work.session
        learners = session.execute(
            select(LtiLearner, LtiLink)
            .join(LtiLink, LtiLink.id == LtiLearner.link_id)
            .join(LtiContext, LtiContext.id == LtiLink.context_pk)
            .where(LtiContext.course == who.course, LtiLink.task_id == task_id)
        ).all()
        if not learners:
            raise NotFound(f"no learner of this course has launched {task_id} from the LMS yet")
        sent = 0
        for learner, link in learners:
            shown = _shown(session, link, who.course, learner.sub)
            if shown is None:
                continue
            learner.shown_score = None
            passback = session.scalar(
                select(LtiPassback).filter_by(submission_id=shown.id, link_id=link.id)
            )
            if passback is None:
                passback = LtiPassback(
                    submission_id=shown.id, link_id=link.id, user_id=learner.sub,
                    next_attempt_at=now(),
                )  # fmt: skip
                session.add(passback)
                session.flush()
            else:
                _reset(passback)
            work.enqueue(queue.passback(passback.id))
            sent += 1
    return {"resyncing": sent}


def overdue(session: Session, settings) -> list[str]:
    """Pending passbacks whose next try is long past due: their message was lost (the
    reaper sends them again)."""
    limit = now() - timedelta(seconds=settings.stuck_grace_s + 30)
    found = session.scalars(
        select(LtiPassback)
        .where(
            LtiPassback.state == PassbackState.PENDING,
            func.coalesce(LtiPassback.next_attempt_at, LtiPassback.created_at) < limit,
        )
        .with_for_update(skip_locked=True)
    ).all()
    for passback in found:
        passback.next_attempt_at = now()
    return [p.id for p in found]
