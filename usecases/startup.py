"""Start-up chores shared by `gradectl serve` and the worker: schema, task bank, first admin key."""

from __future__ import annotations

from sqlalchemy import select

from db.models import ApiKey, Role, VersionStatus
from db.session import migrate, serialize
from services import catalog, keys, queue
from services.taskbank import is_shipped_setup, load_tasks
from usecases.unit_of_work import Context

BOOTSTRAP_LOCK = 0x626F6F74


def prepare(ctx: Context) -> list[str]:
    """Migrate the database, load the bundled task bank, create the bootstrap admin key.

    Returns the ids of task versions that need a self-test (already enqueued when the
    broker answers; the reaper enqueues them otherwise).
    """
    settings = ctx.settings
    migrate(settings.effective_database_url)
    pending: list[str] = []
    with ctx.unit_of_work() as work:
        session = work.session
        serialize(session, BOOTSTRAP_LOCK)  # the API and each worker start up at once
        if settings.load_task_bank:
            for spec in load_tasks(settings.tasks_dir).values():
                version, created = catalog.add_version(
                    session, spec, course=None,
                    shared_setup=is_shipped_setup(spec, settings.tasks_dir),
                )  # fmt: skip
                if created and version.status == VersionStatus.VALIDATING:
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
                role=Role.ADMIN,
                course=None,
                key=settings.bootstrap_admin_key,
            )
        work.enqueue(*(queue.self_test(version_id) for version_id in pending))
    return pending
