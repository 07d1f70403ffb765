"""/v1/lti: an admin registers LTI 1.3 platforms and rotates the tool's key; a course's
readers see each submission's grade passbacks, its staff a task's, and resync a task."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from api import errors
from api.deps import ContextDep, PrincipalDep
from usecases import lti_grades, lti_platforms

router = APIRouter(prefix="/v1/lti", tags=["lti"], responses=errors.documented(401, 422, 503))

Url = Annotated[str, Field(min_length=1, max_length=2000)]
Id = Annotated[str, Path(min_length=1, max_length=64)]


class PlatformIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(min_length=1, max_length=500, description="The platform's `iss`.")
    client_id: str = Field(
        min_length=1, max_length=200, description="This tool's client id on the platform."
    )
    deployment_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=100, description="The deployments whose launches are accepted."
    )
    auth_login_url: Url = Field(description="The platform's OIDC authorisation endpoint.")
    auth_token_url: Url = Field(description="The platform's OAuth 2 token endpoint.")
    key_set_url: Url = Field(description="The platform's JWKS.")


STAFF_403 = (403, "The key's role or course does not allow this.")


@router.post(
    "/platforms",
    status_code=201,
    responses={
        201: {"description": "Registered."},
        **errors.documented((403, "Only an admin registers platforms."), 409),
    },
)
def add_platform(body: PlatformIn, who: PrincipalDep, ctx: ContextDep) -> dict:
    """Register a platform: launches from its issuer, to our client id, in one of its
    deployments are accepted from now on."""
    return lti_platforms.add_platform(ctx, who, **body.model_dump())


@router.get("/platforms", responses=errors.documented((403, "Only an admin lists platforms.")))
def list_platforms(who: PrincipalDep, ctx: ContextDep) -> list[dict]:
    return lti_platforms.list_platforms(ctx, who)


@router.delete(
    "/platforms/{platform_id}",
    status_code=204,
    responses=errors.documented((403, "Only an admin removes platforms."), 404),
)
def remove_platform(platform_id: Id, who: PrincipalDep, ctx: ContextDep) -> Response:
    lti_platforms.remove_platform(ctx, who, platform_id)
    return Response(status_code=204)


@router.post(
    "/keys/rotate", responses=errors.documented((403, "Only an admin rotates the tool's key."))
)
def rotate_key(who: PrincipalDep, ctx: ContextDep) -> dict:
    """A new signing key; the old one stays at /lti/jwks for `GRADER_LTI_KEY_GRACE_S`."""
    return lti_platforms.rotate_key(ctx, who)


@router.get("/submissions/{submission_id}/passbacks", responses=errors.documented(404))
def submission_passbacks(submission_id: Id, who: PrincipalDep, ctx: ContextDep) -> list[dict]:
    """The submission's grade passbacks: state, tries, the platform's last status and error."""
    return lti_grades.submission_log(ctx, who, submission_id)


@router.get("/tasks/{task_id}/passbacks", responses=errors.documented(STAFF_403, 404, 409))
def task_passbacks(task_id: Id, who: PrincipalDep, ctx: ContextDep) -> list[dict]:
    """The newest passbacks of the caller's course at the task."""
    return lti_grades.task_log(ctx, who, task_id)


@router.post("/tasks/{task_id}/resync", responses=errors.documented(STAFF_403, 404, 409))
def resync_task(task_id: Id, who: PrincipalDep, ctx: ContextDep) -> dict:
    """Send every learner's current score at the task to the LMS again."""
    return lti_grades.resync_task(ctx, who, task_id)
