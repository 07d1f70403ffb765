"""The Celery application: configured so that no accepted work is lost.

Late acknowledgement and reject-on-worker-lost put a message back if a worker dies
mid-grading; prefetch 1 keeps one job per process; the Redis visibility timeout is above
the longest job; the hard time limit is above the sandbox deadline. The reaper runs on a
timer in every worker's main process (worker/reaper.py), not in a beat.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from core.settings import get_settings
from services.queue import QUEUES
from usecases.unit_of_work import Context
from worker.reaper import Reaper

settings = get_settings()
context = Context.of(settings)  # what the tasks' use cases act on

app = Celery("grader", broker=settings.redis_url, include=["worker.tasks"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_queues=[Queue(q) for q in QUEUES],
    task_default_queue="cpu",
    task_time_limit=1800,
    task_soft_time_limit=1700,
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,  # a broker that is down for long is waited for
    # No remote control (its broadcast channel) and, in cmd_worker, no gossip, mingle or
    # heartbeat: nothing here uses them, and with their extra channels open a worker that
    # loses Redis could crash in kombu's reconnect and exit 0 instead of reconnecting.
    worker_enable_remote_control=False,
    worker_hijack_root_logger=False,
)
Reaper.context = context
app.steps["worker"].add(Reaper)
