"""leases and schedules: a live grading try heartbeats; lost messages are found and sent again

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_webhook_deliveries_status", ["status"])
    with op.batch_alter_table("task_versions") as batch_op:
        batch_op.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_versions") as batch_op:
        batch_op.drop_column("enqueued_at")
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_status")
        batch_op.drop_column("next_attempt_at")
    with op.batch_alter_table("submissions") as batch_op:
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("heartbeat_at")
