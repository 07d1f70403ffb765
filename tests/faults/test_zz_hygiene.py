"""Last in the folder: after the faults above (killed workers, lost messages, cut connections) the
stack leaves nothing behind: no unfinished row, no job message in Redis, no sandbox container
(the reaper sweeps those of the killed worker), no process and no temp file (checked when
the stack stops)."""

from __future__ import annotations

import json
import time

import docker
import docker.errors
import pytest
from sqlalchemy import text

from sandbox.docker_backend import EXPIRES_LABEL
from services.queue import QUEUES, REAP
from tests.e2e.conftest import start_worker

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

SWEEP_ALLOWANCE_S = 15


def _unfinished(stack) -> list:
    with stack.db.connect() as conn:
        return conn.execute(
            text(
                "SELECT id, status FROM submissions WHERE status <> 'completed' "
                "UNION ALL SELECT id, status FROM webhook_deliveries WHERE status = 'pending'"
            )
        ).all()


def _job_messages(stack) -> list[str]:
    """Task names of every message waiting or unacknowledged, the reaper's own ticks excepted."""
    client = stack.broker.client()
    raw = [m for q in QUEUES for m in client.lrange(q, 0, -1)]
    raw += [json.loads(v)[0] for v in client.hvals("unacked")] if client.exists("unacked") else []
    names = [(json.loads(m) if isinstance(m, bytes) else m)["headers"]["task"] for m in raw]
    return [name for name in names if name != REAP]


def _existing(engine: docker.APIClient, ids: set[str]) -> dict[str, float]:
    """The containers among `ids` that still exist, with the time their sweep may remove them."""
    found = {}
    for container in ids:
        try:
            labels = engine.inspect_container(container)["Config"]["Labels"] or {}
        except docker.errors.NotFound:
            continue
        found[container] = float(labels.get(EXPIRES_LABEL, "0"))
    return found


def test_nothing_is_left_behind(stack, wait_until):
    wait_until(lambda: not _unfinished(stack), 120, "every submission and webhook to settle")
    wait_until(lambda: not _job_messages(stack), 60, "Redis to hold no job message")
    for process in stack.workers:
        process.stop(grace_s=30.0)
    assert _job_messages(stack) == []

    # Sandboxes of the killed pool process outlive it until their expiry; a reaper removes them.
    reaper = start_worker(stack.env | {"DOCKER_HOST": f"unix://{stack.engine.listen}"},
                          stack.log_dir, "reaper", "--beat")  # fmt: skip
    engine = docker.APIClient(version="auto")
    try:
        left = _existing(engine, stack.engine.containers)
        deadline = max(left.values(), default=0) + SWEEP_ALLOWANCE_S
        assert deadline - time.time() < 300, f"containers expiring too late: {left}"
        wait_until(
            lambda: not _existing(engine, stack.engine.containers),
            max(deadline - time.time(), SWEEP_ALLOWANCE_S),
            f"the reaper to remove the stack's sandbox containers {sorted(left)}",
        )
    finally:
        engine.close()
        reaper.stop(grace_s=30.0)
    assert stack.engine.containers, "the forwarder saw no container: the check proved nothing"
