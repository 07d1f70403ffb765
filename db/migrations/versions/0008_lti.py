"""LTI 1.3: registered platforms, the tool's keys, server-side launch values, the courses and
links launches made, and the passback log

`lti_platforms` and `lti_deployments`: what an admin registered. `lti_keys`: the tool's key
pairs (one signs, retired ones are still published a while). `lti_values`: states, nonces,
launch data, platforms' key sets and access tokens, each until it expires. `lti_contexts`:
a platform's course as a course of ours. `lti_links`: a resource link's task, line item and
grade policy. `lti_learners`: who launched a link, and the score the LMS shows for them.
`lti_passbacks`: each final result's passback to a line item.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-23 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "lti_platforms",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("client_id", sa.String(200), nullable=False),
        sa.Column("auth_login_url", sa.String(2000), nullable=False),
        sa.Column("auth_token_url", sa.String(2000), nullable=False),
        sa.Column("key_set_url", sa.String(2000), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("issuer", "client_id", name="uq_lti_platforms_issuer"),
    )
    op.create_table(
        "lti_deployments",
        sa.Column(
            "platform_id",
            sa.String(32),
            sa.ForeignKey(
                "lti_platforms.id", name="fk_lti_deployments_platform_id", ondelete="CASCADE"
            ),
            primary_key=True,
        ),
        sa.Column("deployment_id", sa.String(200), primary_key=True),
    )
    op.create_table(
        "lti_keys",
        sa.Column("kid", sa.String(100), primary_key=True),
        sa.Column("private_pem", sa.Text, nullable=False),
        sa.Column("public_jwk", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("retired_at", TZ, nullable=True),
    )
    op.create_table(
        "lti_values",
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.JSON, nullable=True),
        sa.Column("expires_at", TZ, nullable=False),
    )
    op.create_index("ix_lti_values_expires_at", "lti_values", ["expires_at"])
    op.create_table(
        "lti_contexts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "platform_id",
            sa.String(32),
            sa.ForeignKey(
                "lti_platforms.id", name="fk_lti_contexts_platform_id", ondelete="CASCADE"
            ),
            nullable=False,
        ),
        sa.Column("deployment_id", sa.String(200), nullable=False),
        sa.Column("context_id", sa.String(200), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("course", sa.String(100), nullable=False, unique=True),
        sa.Column(
            "lms_key_id",
            sa.String(32),
            sa.ForeignKey("api_keys.id", name="fk_lti_contexts_lms"),
            nullable=False,
        ),
        sa.Column(
            "staff_key_id",
            sa.String(32),
            sa.ForeignKey("api_keys.id", name="fk_lti_contexts_staff"),
            nullable=False,
        ),
        sa.Column("memberships_url", sa.String(2000), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint(
            "platform_id", "deployment_id", "context_id", name="uq_lti_contexts_context"
        ),
    )
    op.create_table(
        "lti_links",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "context_pk",
            sa.String(32),
            sa.ForeignKey("lti_contexts.id", name="fk_lti_links_context_pk", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("resource_link_id", sa.String(200), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("ags_scopes", sa.JSON, nullable=False),
        sa.Column("lineitems_url", sa.String(2000), nullable=True),
        sa.Column("lineitem_url", sa.String(2000), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("context_pk", "resource_link_id", name="uq_lti_links_resource_link"),
    )
    op.create_table(
        "lti_learners",
        sa.Column(
            "link_id",
            sa.String(32),
            sa.ForeignKey("lti_links.id", name="fk_lti_learners_link_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sub", sa.String(200), primary_key=True),
        sa.Column("shown_score", sa.Float, nullable=True),
        sa.Column("launched_at", TZ, nullable=False),
    )
    op.create_table(
        "lti_passbacks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "submission_id",
            sa.String(32),
            sa.ForeignKey("submissions.id", name="fk_lti_passbacks_submission_id"),
            nullable=False,
        ),
        sa.Column(
            "link_id",
            sa.String(32),
            sa.ForeignKey("lti_links.id", name="fk_lti_passbacks_link_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("score_given", sa.Float, nullable=True),
        sa.Column("score_maximum", sa.Float, nullable=True),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("sent_at", TZ, nullable=True),
        sa.Column("next_attempt_at", TZ, nullable=True),
        sa.UniqueConstraint("submission_id", "link_id", name="uq_lti_passbacks_submission_link"),
    )
    op.create_index("ix_lti_passbacks_submission_id", "lti_passbacks", ["submission_id"])
    op.create_index("ix_lti_passbacks_link_id", "lti_passbacks", ["link_id"])
    op.create_index("ix_lti_passbacks_state", "lti_passbacks", ["state"])


def downgrade() -> None:
    for table in (
        "lti_passbacks",
        "lti_learners",
        "lti_links",
        "lti_contexts",
        "lti_values",
        "lti_keys",
        "lti_deployments",
        "lti_platforms",
    ):
        op.drop_table(table)
