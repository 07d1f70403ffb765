"""a version records whether its setup is the service's own, so grading need not read the bank

`task_versions.shared_setup`: true when the version's setup is byte for byte the setup of a
task of the bundled bank, which a fork server may run once in a zygote for many jobs.
Existing versions start false (each job runs its own setup, as for an instructor's); start-up
marks the bundled tasks' versions again when it loads the bank (usecases/startup.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_versions") as batch_op:
        batch_op.add_column(
            sa.Column("shared_setup", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("task_versions") as batch_op:
        batch_op.drop_column("shared_setup")
