"""What each front door shows: the public views of submissions, tasks and webhook
deliveries, the same for the REST API and the pages. A task's public view holds enough to
answer it and nothing that grades it (no reference, setup, check parameters or expected
facts); its staff view adds the spec and the self-test report."""

from __future__ import annotations

from typing import Any

from db.models import (
    Submission,
    SubmissionStatus,
    Task,
    TaskVersion,
    VersionStatus,
    WebhookDelivery,
    aware,
)
from graders.errors import AnswerError
from graders.result import printable_data
from graders.spec import ChoiceTask, CodeTask
from services.answers import fill_blanks
from services.catalog import spec_of


def submission(row: Submission, attempts_left: int | None = None) -> dict[str, Any]:
    """The submission as its readers see it. Results are stored printable; the stored
    result's texts are made printable again here, so that a row whatever wrote it (an
    older version, a hand repair) is always served."""
    out: dict[str, Any] = {
        "id": row.id, "task_id": row.task_id, "student_id": row.student_id, "status": row.status,
        "created_at": aware(row.created_at).isoformat(),
        "finished_at": aware(row.finished_at).isoformat() if row.finished_at else None,
    }  # fmt: skip
    if attempts_left is not None:
        out["attempts_left"] = attempts_left
    if row.status == SubmissionStatus.COMPLETED and row.result is not None:
        out |= {
            "outcome": row.outcome,
            "score": row.score,
            "max_score": row.max_score,
            "charged": row.charged,
            "result": printable_data(row.result),
        }
    return out


def answer(row: Submission, spec: CodeTask | ChoiceTask) -> dict[str, Any]:
    """What the submission sent, for its own student and its course's staff: the code, the
    blanks' fills (each with the code it puts in, and the template filled), or the choice
    (with its option's text)."""
    if row.code is not None:
        return {"kind": "code", "code": row.code}
    if row.blanks is not None:
        template = spec.template if isinstance(spec, CodeTask) else None
        options = {b.id: b.options for b in template.blanks} if template else {}
        fills = {int(blank): value for blank, value in row.blanks.items()}
        try:
            filled = fill_blanks(spec, fills) if isinstance(spec, CodeTask) else None
        except AnswerError:
            filled = None
        return {
            "kind": "blanks",
            "blanks": [
                {"blank": n, "value": v, "code": options.get(n, {}).get(v, v)}
                for n, v in sorted(fills.items())
            ],
            "code": filled,
        }
    options = spec.options if isinstance(spec, ChoiceTask) else {}
    return {"kind": "choice", "choice": row.choice, "text": options.get(row.choice or "")}


def task(task: Task, version: TaskVersion | None) -> dict[str, Any]:
    """What anyone who may see the task sees."""
    view: dict[str, Any] = {"id": task.id, "course": task.course, "archived": task.archived}
    if version is None:
        return view | {"status": VersionStatus.VALIDATING, "version": None}
    spec = spec_of(version)
    view |= {
        "version": version.number,
        "status": version.status,
        "kind": spec.kind,
        "title": spec.title,
        "difficulty": spec.difficulty,
        "prompt": spec.prompt,
        "hint": spec.hint,
        "max_attempts": spec.max_attempts,
        "max_score": spec.max_score,
    }
    if isinstance(spec, ChoiceTask):
        view["options"] = spec.options
    else:
        view["template"] = spec.template.model_dump() if spec.template else None
        view["checks"] = [{"name": c.name, "points": c.points} for c in spec.checks]
        view["limits"] = {"time_limit_s": spec.limits.time_limit_s, "gpu": spec.limits.gpu}
    return view


def staff_task(task_: Task, version: TaskVersion) -> dict[str, Any]:
    """What the task's staff see: the public view, the spec and its self-test report."""
    return task(task_, version) | {
        "spec": version.spec,
        "report": version.report,
        "digest": version.digest,
    }


def delivery(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id, "url": delivery.url, "status": delivery.status, "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code, "last_error": delivery.last_error,
        "delivered_at": aware(delivery.delivered_at).isoformat() if delivery.delivered_at else None,
    }  # fmt: skip
