"""What the service reports about itself: readiness (database, broker, sandbox and whether
it isolates, a reaper that runs) and the figures the metrics expose, read at scrape time
from the database (as aggregates) and the broker so that the API and the workers report
one truth."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, text

from db.models import Submission, SubmissionStatus
from db.sql import seconds_between
from sandbox.factory import describe_configured_backend
from services import queue
from usecases.unit_of_work import Context

# A reaper runs once an interval in some worker; missing this many, nothing recovers a
# submission whose every message was lost, and the service is not ready.
REAPER_MISSED_INTERVALS = 3
# What a freshly started API allows the workers to come up in before it asks for a reaper.
START_ALLOWANCE_S = 300.0
_started_at = time.time()


def readiness(ctx: Context) -> dict[str, Any]:
    checks: dict[str, dict] = {}
    try:
        with ctx.unit_of_work() as work:
            work.session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": str(exc)[:200]}
    depth = ctx.broker.depth()
    checks["broker"] = {"ok": depth is not None, "queues": depth}
    checks["sandbox"] = describe_configured_backend(ctx.settings)
    checks["reaper"] = reaper(ctx)
    ready = all(check["ok"] for check in checks.values())
    return {"ready": ready, "checks": checks}


def reaper(ctx: Context) -> dict[str, Any]:
    """When a reaper last ran, by whom and what it did; ok while one ran within the last
    REAPER_MISSED_INTERVALS intervals, or, until one has run since this process started,
    for START_ALLOWANCE_S after its start (the workers may start after the API)."""
    last = queue.last_reap(ctx.settings)
    at = time.time()
    allowed_s = REAPER_MISSED_INTERVALS * ctx.settings.reaper_interval_s
    ago_s = None if last is None else round(max(0.0, at - last["at"]), 3)
    starting = (last is None or last["at"] < _started_at) and (
        at - _started_at <= max(allowed_s, START_ALLOWANCE_S)
    )
    return {
        "ok": (ago_s is not None and ago_s <= allowed_s) or starting,
        "last_run_at": None if last is None else last["at"],
        "seconds_ago": ago_s,
        "by": None if last is None else last["by"],
        "did": None if last is None else last["did"],
        "interval_s": ctx.settings.reaper_interval_s,
    }


@dataclass
class Durations:
    """How long grading took (from claim to stored result), as a cumulative histogram."""

    buckets: list[tuple[float, int]]  # (upper bound in seconds, completed within it)
    count: int
    sum_s: float


@dataclass
class Figures:
    queued_messages: dict[str, int]  # per broker queue
    by_status: dict[str, int]  # submissions
    by_outcome: dict[str, int]  # completed submissions
    durations: Durations
    reaper_last_run_at: float | None  # a Unix time; None: no run recorded


def figures(ctx: Context, buckets_s: Sequence[float]) -> Figures:
    """The figures, counted by the database (GROUP BY, one sum per bucket): a scrape reads
    a few rows, however many submissions there are."""
    took = seconds_between(Submission.started_at, Submission.finished_at)
    timed = select(
        func.count(), func.sum(took), *(func.sum(case((took <= b, 1), else_=0)) for b in buckets_s)
    ).where(
        Submission.status == SubmissionStatus.COMPLETED,
        Submission.started_at.is_not(None),
        Submission.finished_at.is_not(None),
    )
    counted = select(Submission.status, Submission.outcome, func.count()).group_by(
        Submission.status, Submission.outcome
    )
    with ctx.unit_of_work() as work:
        groups = work.session.execute(counted).all()
        count, total, *within = work.session.execute(timed).one()
    by_status: dict[str, int] = {}
    by_outcome: dict[str, int] = {}
    for status, outcome, n in groups:
        by_status[status] = by_status.get(status, 0) + n
        if status == SubmissionStatus.COMPLETED:
            by_outcome[outcome] = by_outcome.get(outcome, 0) + n
    durations = Durations(
        buckets=[(b, int(n or 0)) for b, n in zip(buckets_s, within, strict=True)],
        count=int(count),
        sum_s=float(total or 0.0),
    )
    last = queue.last_reap(ctx.settings)
    return Figures(ctx.broker.depth() or {}, by_status, by_outcome, durations, last and last["at"])
