"""Start-up chores shared by `gradectl serve` and the worker: schema, task bank, first admin key."""

from __future__ import annotations

import logging

from sqlalchemy import select

from core.settings import Settings
from db.models import ApiKey
from db.session import migrate, serialize, session_scope
from services import catalog, keys, queue
from services.taskbank import load_tasks

log = logging.getLogger(__name__)
BOOTSTRAP_LOCK = 0x626F6F74


def prepare(settings: Settings) -> list[str]:
    """Migrate the database, load the bundled task bank, create the bootstrap admin key.

    Returns the ids of task versions that need a self-test (already enqueued when the
    broker answers; the reaper enqueues them otherwise).
    """
    url = settings.effective_database_url
    migrate(url)
    pending: list[str] = []
    with session_scope(url) as session:
        serialize(session, BOOTSTRAP_LOCK)  # the API and each worker start up at once
        if settings.load_task_bank:
            for spec in load_tasks(settings.tasks_dir).values():
                version, created = catalog.add_version(session, spec, course=None)
                if created and version.status == "validating":
                    pending.append(version.id)
        if (
            settings.bootstrap_admin_key
            and session.scalar(
                select(ApiKey).where(ApiKey.key_hash == keys.hash_key(settings.bootstrap_admin_key))
            )
            is None
        ):
            keys.create_key(
                session,
                name="bootstrap admin",
                role="admin",
                course=None,
                key=settings.bootstrap_admin_key,
            )
    for version_id in pending:
        queue.validate(settings, version_id)
    return pending
