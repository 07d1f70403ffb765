"""Alembic environment: the URL comes from the config (set by db.session.migrate) or the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool, text

from db import lti_models  # noqa: F401  (its tables are in Base.metadata)
from db.models import Base

MIGRATION_LOCK = 0x6772616465  # any constant, the same in every process of the service
config = context.config
if not config.get_main_option("sqlalchemy.url"):
    from core.settings import get_settings

    config.set_main_option("sqlalchemy.url", get_settings().effective_database_url)


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # The API and the workers all migrate when they start: on a fresh database
                # they would create the same tables at once. One goes first; the others
                # then find the schema current.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
