"""task ids per course: a task's key is its id in the shared bank, `course/id` in a course

Tasks get a primary key `key` (db.models.task_key); versions, submissions and attempt
counters refer to it. Submissions and counters keep the public `task_id` beside it.
Existing rows keep what they meant: a shared task's key is its id, a course's task's key
is its course and id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# PostgreSQL's own names for the constraints 0001 left unnamed; SQLite reflects them with
# these names too, so one set of operations serves both.
NAMES = {
    "pk": "%(table_name)s_pkey",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "uq": "%(table_name)s_%(column_0N_name)s_key",
}
REFERRING = ("task_versions", "submissions", "attempt_counters")
KEY = sa.String(length=200)

tasks = sa.table(
    "tasks", sa.column("key", sa.String), sa.column("id", sa.String), sa.column("course", sa.String)
)


def _referrer(name: str) -> sa.TableClause:
    return sa.table(name, sa.column("task_id", sa.String), sa.column("task_key", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.add_column(sa.Column("key", KEY, nullable=True))
    op.execute(
        tasks.update().values(
            key=sa.case(
                (tasks.c.course.is_(None), tasks.c.id), else_=tasks.c.course + "/" + tasks.c.id
            )
        )
    )
    for name in REFERRING:
        with op.batch_alter_table(name) as batch_op:
            batch_op.add_column(sa.Column("task_key", KEY, nullable=True))
        table = _referrer(name)
        op.execute(
            table.update().values(
                task_key=sa.select(tasks.c.key)
                .where(tasks.c.id == table.c.task_id)
                .scalar_subquery()
            )
        )

    with op.batch_alter_table("task_versions", naming_convention=NAMES) as batch_op:
        batch_op.drop_constraint("task_versions_task_id_fkey", type_="foreignkey")
        batch_op.drop_index("ix_task_versions_task_id")
        batch_op.drop_column("task_id")  # and its unique constraints with it
        batch_op.alter_column("task_key", existing_type=KEY, nullable=False)
    for name in ("submissions", "attempt_counters"):
        with op.batch_alter_table(name, naming_convention=NAMES) as batch_op:
            batch_op.drop_constraint(f"{name}_task_id_fkey", type_="foreignkey")
            batch_op.alter_column("task_key", existing_type=KEY, nullable=False)

    with op.batch_alter_table("tasks", naming_convention=NAMES) as batch_op:
        batch_op.drop_constraint("tasks_pkey", type_="primary")
        batch_op.alter_column("key", existing_type=KEY, nullable=False)
        batch_op.create_primary_key("tasks_pkey", ["key"])
        batch_op.create_index("ix_tasks_id", ["id"])

    with op.batch_alter_table("task_versions") as batch_op:
        batch_op.create_foreign_key("fk_task_versions_task_key", "tasks", ["task_key"], ["key"])
        batch_op.create_unique_constraint(
            "uq_task_versions_task_key_number", ["task_key", "number"]
        )
        batch_op.create_unique_constraint(
            "uq_task_versions_task_key_digest", ["task_key", "digest"]
        )
        batch_op.create_index("ix_task_versions_task_key", ["task_key"])
    for name in ("submissions", "attempt_counters"):
        with op.batch_alter_table(name) as batch_op:
            batch_op.create_foreign_key(f"fk_{name}_task_key", "tasks", ["task_key"], ["key"])


def downgrade() -> None:
    """Back to one namespace: refused while two tasks share an id."""
    shared = (
        op.get_bind()
        .execute(sa.select(tasks.c.id).group_by(tasks.c.id).having(sa.func.count() > 1))
        .scalars()
        .all()
    )
    if shared:
        raise RuntimeError(
            f"cannot downgrade: task ids used by more than one course or the bank: {shared[:20]}"
        )
    for name in ("submissions", "attempt_counters"):
        with op.batch_alter_table(name) as batch_op:
            batch_op.drop_constraint(f"fk_{name}_task_key", type_="foreignkey")
    with op.batch_alter_table("task_versions") as batch_op:
        batch_op.drop_constraint("fk_task_versions_task_key", type_="foreignkey")
        batch_op.drop_constraint("uq_task_versions_task_key_number", type_="unique")
        batch_op.drop_constraint("uq_task_versions_task_key_digest", type_="unique")
        batch_op.drop_index("ix_task_versions_task_key")
        batch_op.add_column(sa.Column("task_id", sa.String(length=64), nullable=True))
    versions = _referrer("task_versions")
    op.execute(
        versions.update().values(
            task_id=sa.select(tasks.c.id)
            .where(tasks.c.key == versions.c.task_key)
            .scalar_subquery()
        )
    )
    with op.batch_alter_table("tasks", naming_convention=NAMES) as batch_op:
        batch_op.drop_index("ix_tasks_id")
        batch_op.drop_constraint("tasks_pkey", type_="primary")
        batch_op.create_primary_key("tasks_pkey", ["id"])
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.drop_column("key")
    with op.batch_alter_table("task_versions") as batch_op:
        batch_op.alter_column("task_id", existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_column("task_key")
        batch_op.create_foreign_key("task_versions_task_id_fkey", "tasks", ["task_id"], ["id"])
        batch_op.create_unique_constraint("task_versions_task_id_number_key", ["task_id", "number"])
        batch_op.create_unique_constraint("task_versions_task_id_digest_key", ["task_id", "digest"])
        batch_op.create_index("ix_task_versions_task_id", ["task_id"])
    for name in ("submissions", "attempt_counters"):
        with op.batch_alter_table(name) as batch_op:
            batch_op.drop_column("task_key")
            batch_op.create_foreign_key(f"{name}_task_id_fkey", "tasks", ["task_id"], ["id"])
