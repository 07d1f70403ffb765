"""learners get into the pages with one-time links, and stay in with server-side sessions

`learner_links`: a link an LMS key made for one student of its course (its token stored
hashed), used at most once. `learner_sessions`: the session opening it started (its cookie
stored hashed), with the token the session's forms send back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "learner_links",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "key_id",
            sa.String(32),
            sa.ForeignKey("api_keys.id", name="fk_learner_links_key_id"),
            nullable=False,
        ),
        sa.Column("course", sa.String(100), nullable=False),
        sa.Column("student_id", sa.String(200), nullable=False),
        sa.Column("task_ids", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "learner_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "key_id",
            sa.String(32),
            sa.ForeignKey("api_keys.id", name="fk_learner_sessions_key_id"),
            nullable=False,
        ),
        sa.Column("course", sa.String(100), nullable=False),
        sa.Column("student_id", sa.String(200), nullable=False),
        sa.Column("task_ids", sa.JSON(), nullable=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_learner_sessions_expires_at", "learner_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_learner_sessions_expires_at", table_name="learner_sessions")
    op.drop_table("learner_sessions")
    op.drop_table("learner_links")
