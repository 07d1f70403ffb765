"""Liveness, readiness (database, broker, sandbox and whether it isolates, the reaper) and
Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from api import errors
from api.deps import ContextDep
from usecases import health
from usecases.unit_of_work import Context

router = APIRouter(tags=["health"])
BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


READINESS = {"type": "object", "description": "`ready` and each dependency's check."}


@router.get(
    "/readyz",
    responses={
        200: {"description": "Ready.", "content": {"application/json": {"schema": READINESS}}},
        503: {
            "description": "A dependency is not ready; the body says which.",
            "content": {"application/json": {"schema": READINESS}},
        },
    },
)
def readyz(ctx: ContextDep, response: Response) -> dict:
    report = health.readiness(ctx)
    response.status_code = 200 if report["ready"] else 503
    return report


class _Collector:
    """The figures as Prometheus metric families, read at scrape time."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self):
        found = health.figures(self.ctx, BUCKETS_S)
        depth = GaugeMetricFamily(
            "grader_queue_depth", "Messages waiting in the broker per queue", labels=["queue"]
        )
        for name, n in found.queued_messages.items():
            depth.add_metric([name], n)
        yield depth
        by_status = GaugeMetricFamily(
            "grader_submissions", "Submissions by status", labels=["status"]
        )
        for status, n in found.by_status.items():
            by_status.add_metric([status], n)
        yield by_status
        outcomes = CounterMetricFamily(
            "grader_outcomes", "Completed submissions by outcome", labels=["outcome"]
        )
        for outcome, n in found.by_outcome.items():
            outcomes.add_metric([outcome], n)
        yield outcomes
        durations = found.durations
        buckets = [(str(b), n) for b, n in durations.buckets] + [("+Inf", durations.count)]
        hist = HistogramMetricFamily(
            "grader_grading_duration_seconds", "Time from claim to stored result"
        )
        hist.add_metric([], buckets, sum_value=durations.sum_s)
        yield hist
        if found.reaper_last_run_at is not None:
            yield GaugeMetricFamily(
                "grader_reaper_last_run_timestamp_seconds",
                "When a reaper last ran (Unix time)",
                value=found.reaper_last_run_at,
            )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "The figures in the Prometheus text format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **errors.documented((503, "The database is unavailable: no figures.")),
    },
)
def metrics(ctx: ContextDep) -> Response:
    registry = CollectorRegistry()
    registry.register(_Collector(ctx))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
