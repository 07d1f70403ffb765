"""Liveness, readiness (database, broker, sandbox and whether it isolates) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from sqlalchemy import select, text

from api.deps import SettingsDep
from core.settings import Settings
from db.models import Submission
from db.session import session_scope
from sandbox.factory import describe_configured_backend
from services import queue

router = APIRouter(tags=["health"])
BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(settings: SettingsDep, response: Response) -> dict:
    checks: dict[str, dict] = {}
    try:
        with session_scope(settings.effective_database_url) as session:
            session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": str(exc)[:200]}
    depth = queue.broker_depth(settings)
    checks["broker"] = {"ok": depth is not None, "queues": depth}
    checks["sandbox"] = describe_configured_backend(settings)
    ready = checks["database"]["ok"] and checks["broker"]["ok"] and checks["sandbox"]["ok"]
    response.status_code = 200 if ready else 503
    return {"ready": ready, "checks": checks}


class _Collector:
    """Reads the database and the broker at scrape time, so API and workers report one truth."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self):
        depth = GaugeMetricFamily(
            "grader_queue_depth", "Messages waiting in the broker per queue", labels=["queue"]
        )
        for name, n in (queue.broker_depth(self.settings) or {}).items():
            depth.add_metric([name], n)
        yield depth
        with session_scope(self.settings.effective_database_url) as session:
            by_status = GaugeMetricFamily(
                "grader_submissions", "Submissions by status", labels=["status"]
            )
            outcomes = CounterMetricFamily(
                "grader_outcomes", "Completed submissions by outcome", labels=["outcome"]
            )
            rows = session.execute(
                select(
                    Submission.status,
                    Submission.outcome,
                    Submission.started_at,
                    Submission.finished_at,
                )
            ).all()
        durations, counts, statuses = [], {}, {}
        for status, outcome, started, finished in rows:
            statuses[status] = statuses.get(status, 0) + 1
            if status == "completed":
                counts[outcome] = counts.get(outcome, 0) + 1
                if started and finished:
                    durations.append((finished - started).total_seconds())
        for status, n in statuses.items():
            by_status.add_metric([status], n)
        for outcome, n in counts.items():
            outcomes.add_metric([outcome], n)
        yield by_status
        yield outcomes
        buckets = [(str(b), sum(d <= b for d in durations)) for b in BUCKETS_S] + [
            ("+Inf", len(durations))
        ]
        hist = HistogramMetricFamily(
            "grader_grading_duration_seconds", "Time from claim to stored result"
        )
        hist.add_metric([], buckets, sum_value=sum(durations))
        yield hist


@router.get("/metrics")
def metrics(settings: SettingsDep) -> Response:
    registry = CollectorRegistry()
    registry.register(_Collector(settings))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
