"""Persistence: SQLAlchemy models, sessions and Alembic migrations. The database is the source of truth."""
