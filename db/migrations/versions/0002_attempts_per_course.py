"""attempt counters per course: the same student id in two courses is two students

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 22:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = ["task_id", "course", "student_id"]


def upgrade() -> None:
    with op.batch_alter_table("attempt_counters") as batch_op:
        batch_op.add_column(
            sa.Column("course", sa.String(length=100), nullable=False, server_default="")
        )
    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table("attempt_counters", recreate="always") as batch_op:
            batch_op.create_primary_key("attempt_counters_pkey", COLUMNS)
    else:
        op.drop_constraint("attempt_counters_pkey", "attempt_counters", type_="primary")
        op.create_primary_key("attempt_counters_pkey", "attempt_counters", COLUMNS)


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        op.drop_constraint("attempt_counters_pkey", "attempt_counters", type_="primary")
    with op.batch_alter_table("attempt_counters", recreate="always") as batch_op:
        batch_op.drop_column("course")
        batch_op.create_primary_key("attempt_counters_pkey", ["task_id", "student_id"])
