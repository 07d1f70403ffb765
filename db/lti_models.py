"""The LTI 1.3 tables: registered platforms and their deployments, the tool's key pairs, the
short-lived values a launch needs kept server-side (states, nonces, launch data, platform key
sets, access tokens), the courses and resource links launches made, and the passback log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, new_id, now


class GradePolicy(StrEnum):
    """What a link's line item shows of a learner's attempts."""

    BEST = "best"
    LATEST = "latest"


class PassbackState(StrEnum):
    PENDING = "pending"  # a try is due (or running)
    SENT = "sent"  # the platform accepted the score
    UNCHANGED = "unchanged"  # the LMS shows this score already: nothing sent
    SKIPPED = "skipped"  # nothing to send (our own failure, no score)
    FAILED = "failed"  # every try failed, or the platform refused for good


class LtiPlatform(Base):
    """A platform (an LMS) an admin registered: its issuer and our client id there."""

    __tablename__ = "lti_platforms"
    __table_args__ = (UniqueConstraint("issuer", "client_id", name="uq_lti_platforms_issuer"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(200))
    auth_login_url: Mapped[str] = mapped_column(String(2000))
    auth_token_url: Mapped[str] = mapped_column(String(2000))
    key_set_url: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class LtiDeployment(Base):
    __tablename__ = "lti_deployments"

    platform_id: Mapped[str] = mapped_column(
        ForeignKey("lti_platforms.id", name="fk_lti_deployments_platform_id", ondelete="CASCADE"),
        primary_key=True,
    )
    deployment_id: Mapped[str] = mapped_column(String(200), primary_key=True)


class LtiKey(Base):
    """One of the tool's RSA key pairs: the newest unretired one signs; a retired one is
    still published until `retired_at` plus the grace, for tokens signed just before."""

    __tablename__ = "lti_keys"

    kid: Mapped[str] = mapped_column(String(100), primary_key=True)  # the JWK thumbprint
    private_pem: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LtiValue(Base):
    """A value a launch keeps server-side until it expires: a state's parameters, a nonce
    (removed by the one launch that uses it), launch data, a platform's key set, an access
    token."""

    __tablename__ = "lti_values"

    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[dict | list | str | bool | None] = mapped_column(JSON, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LtiContext(Base):
    """A platform's course (issuer, deployment, context id) as a course of ours, made on its
    first launch, with the keys its learners' and staff's sessions act through."""

    __tablename__ = "lti_contexts"
    __table_args__ = (
        UniqueConstraint(
            "platform_id", "deployment_id", "context_id", name="uq_lti_contexts_context"
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    platform_id: Mapped[str] = mapped_column(
        ForeignKey("lti_platforms.id", name="fk_lti_contexts_platform_id", ondelete="CASCADE")
    )
    deployment_id: Mapped[str] = mapped_column(String(200))
    context_id: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(500), default="")
    course: Mapped[str] = mapped_column(String(100), unique=True)
    lms_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", name="fk_lti_contexts_lms"))
    staff_key_id: Mapped[str] = mapped_column(
        ForeignKey("api_keys.id", name="fk_lti_contexts_staff")
    )
    memberships_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class LtiLink(Base):
    """A resource link of a platform's course: the task it opens, its line item and the
    grade policy."""

    __tablename__ = "lti_links"
    __table_args__ = (
        UniqueConstraint("context_pk", "resource_link_id", name="uq_lti_links_resource_link"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    context_pk: Mapped[str] = mapped_column(
        ForeignKey("lti_contexts.id", name="fk_lti_links_context_pk", ondelete="CASCADE")
    )
    resource_link_id: Mapped[str] = mapped_column(String(200))
    task_id: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str] = mapped_column(String(16), default=GradePolicy.BEST)
    ags_scopes: Mapped[list] = mapped_column(JSON, default=list)
    lineitems_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    lineitem_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class LtiLearner(Base):
    """A learner (their `sub`) who launched a link, and the score the LMS shows for them
    there (what was last accepted), so that a score is sent only when that changes."""

    __tablename__ = "lti_learners"

    link_id: Mapped[str] = mapped_column(
        ForeignKey("lti_links.id", name="fk_lti_learners_link_id", ondelete="CASCADE"),
        primary_key=True,
    )
    sub: Mapped[str] = mapped_column(String(200), primary_key=True)
    shown_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    launched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class LtiPassback(Base):
    """The passback of one final result to one link's line item: its state, tries, and
    the platform's last answer."""

    __tablename__ = "lti_passbacks"
    __table_args__ = (
        UniqueConstraint("submission_id", "link_id", name="uq_lti_passbacks_submission_link"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", name="fk_lti_passbacks_submission_id"), index=True
    )
    link_id: Mapped[str] = mapped_column(
        ForeignKey("lti_links.id", name="fk_lti_passbacks_link_id", ondelete="CASCADE"),
        index=True,
    )
    user_id: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default=PassbackState.PENDING, index=True)
    score_given: Mapped[float | None] = mapped_column(Float, nullable=True)
    score_maximum: Mapped[float | None] = mapped_column(Float, nullable=True)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
