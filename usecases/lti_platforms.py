"""The LTI platforms an admin registers (`POST /v1/lti/platforms`, `gradectl lti
add-platform`), lists and removes, and the tool's key set: published at /lti/jwks, rotated
by an admin (the old key still published for `GRADER_LTI_KEY_GRACE_S`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from db.lti_models import LtiDeployment, LtiPlatform
from lti import keys
from services.errors import Conflict, InvalidInput, NotFound
from services.keys import Principal
from usecases import access
from usecases.unit_of_work import Context


def _view(platform: LtiPlatform, deployments: list[str]) -> dict[str, Any]:
    return {
        "id": platform.id,
        "issuer": platform.issuer,
        "client_id": platform.client_id,
        "deployment_ids": sorted(deployments),
        "auth_login_url": platform.auth_login_url,
        "auth_token_url": platform.auth_token_url,
        "key_set_url": platform.key_set_url,
        "created_at": platform.created_at.isoformat(),
    }


def _require_admin(who: Principal) -> None:
    access.require(
        access.Decision(
            access.sees_every_course(who), "only an admin registers LTI platforms"
        )  # fmt: skip
    )


def add_platform(
    ctx: Context, who: Principal, *, issuer: str, client_id: str, deployment_ids: list[str],
    auth_login_url: str, auth_token_url: str, key_set_url: str,
) -> dict[str, Any]:  # fmt: skip
    """Register a platform (issuer and our client id there) with its deployments; the same
    issuer and client id again is a conflict."""
    _require_admin(who)
    urls = {
        "auth_login_url": auth_login_url,
        "auth_token_url": auth_token_url,
        "key_set_url": key_set_url,
    }
    for name, url in urls.items():
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            raise InvalidInput(f"{name}: must be an http or https URL, got {url!r}")
    if not issuer.strip() or not client_id.strip():
        raise InvalidInput("issuer and client_id must not be empty")
    deployments = list(dict.fromkeys(d.strip() for d in deployment_ids if d.strip()))
    if not deployments:
        raise InvalidInput("deployment_ids: give at least one deployment id")
    with ctx.unit_of_work() as work:
        found = work.session.scalar(
            select(LtiPlatform).where(
                LtiPlatform.issuer == issuer, LtiPlatform.client_id == client_id
            )
        )
        if found is not None:
            raise Conflict(f"issuer {issuer} with client id {client_id} is registered already")
        platform = LtiPlatform(issuer=issuer, client_id=client_id, **urls)
        work.session.add(platform)
        work.session.flush()
        for deployment_id in deployments:
            work.session.add(LtiDeployment(platform_id=platform.id, deployment_id=deployment_id))
        keys.signing_key(work.session)  # the tool's key pair exists from the first registration
        return _view(platform, deployments)


def list_platforms(ctx: Context, who: Principal) -> list[dict[str, Any]]:
    _require_admin(who)
    with ctx.unit_of_work() as work:
        platforms = list(work.session.scalars(select(LtiPlatform).order_by(LtiPlatform.created_at)))
        return [_view(p, _deployments(work.session, p.id)) for p in platforms]


def remove_platform(ctx: Context, who: Principal, platform_id: str) -> None:
    """Remove a registration: its launches are refused from now on (its courses, their
    tasks and submissions stay)."""
    _require_admin(who)
    with ctx.unit_of_work() as work:
        platform = work.session.get(LtiPlatform, platform_id)
        if platform is None:
            raise NotFound(f"no LTI platform {platform_id}")
        for row in work.session.scalars(
            select(LtiDeployment).where(LtiDeployment.platform_id == platform_id)
        ):
            work.session.delete(row)
        work.session.delete(platform)


def _deployments(session, platform_id: str) -> list[str]:
    return list(
        session.scalars(
            select(LtiDeployment.deployment_id).where(LtiDeployment.platform_id == platform_id)
        )
    )


def jwks(ctx: Context) -> dict[str, Any]:
    """The tool's public keys: the signing one (made on first use) and the recently retired."""
    with ctx.unit_of_work() as work:
        return keys.published(work.session, ctx.settings.lti_key_grace_s)


def rotate_key(ctx: Context, who: Principal) -> dict[str, str]:
    """A new signing key; the old one stays published for the grace."""
    _require_admin(who)
    with ctx.unit_of_work() as work:
        return {"kid": keys.rotate(work.session)}
