"""Names and Roles: an LTI course's roster, read from the platform (NRPS, the launch's
`context_memberships_url`) and cached a few minutes, beside each learner's best score here
and the score the LMS shows, so learners who have not started are listed too."""

from __future__ import annotations

from typing import Any

import requests
from pylti1p3.exception import LtiException
from pylti1p3.names_roles import NamesRolesProvisioningService
from sqlalchemy import select

from db.lti_models import LtiContext, LtiLearner, LtiLink, LtiPlatform
from lti import keys
from lti.adapter import Connector, Values, http, registration_of
from services.keys import Principal
from usecases import access
from usecases.desk import best_scores
from usecases.unit_of_work import Context

ROSTER_TTL_S = 300
LEARNER = "Learner"


def roster(ctx: Context, who: Principal, task_id: str) -> dict[str, Any]:
    """The course's learners as the platform lists them (`members`; `error` when it could
    not be read, `available` False when the course is not an LTI course with NRPS), each
    with their best score at the task and the score last sent to the LMS."""
    access.require(access.may_act_as_staff(who))
    with ctx.unit_of_work() as work:
        context = work.session.scalar(select(LtiContext).where(LtiContext.course == who.course))
        if context is None or not context.memberships_url:
            return {"available": False, "members": [], "error": None}
    best = {row["student_id"]: row for row in best_scores(ctx, who, task_id)}
    with ctx.unit_of_work() as work:
        session = work.session
        shown = dict(
            session.execute(
                select(LtiLearner.sub, LtiLearner.shown_score)
                .join(LtiLink, LtiLink.id == LtiLearner.link_id)
                .where(LtiLink.context_pk == context.id, LtiLink.task_id == task_id)
            ).all()
        )
        values = Values(session)
        cache = f"roster-{context.id}"
        members, error = values.get_value(cache), None
        if members is None:
            platform = session.get(LtiPlatform, context.platform_id)
            registration = registration_of(platform, keys.signing_key(session))
            service = NamesRolesProvisioningService(
                Connector.bound(values)(registration, http()),
                {"context_memberships_url": context.memberships_url},
            )
            try:
                members = service.get_members()
                values.set_value(cache, members, ROSTER_TTL_S)
            except (LtiException, requests.RequestException) as exc:
                members, error = [], f"the platform's roster could not be read: {exc}"[:300]
    rows = []
    for member in members:
        roles = {str(r).rsplit("#", 1)[-1] for r in member.get("roles", [])}
        if LEARNER not in roles or member.get("status", "Active") != "Active":
            continue
        sub = str(member.get("user_id"))
        mine = best.get(sub, {})
        rows.append({
            "user_id": sub,
            "name": member.get("name") or " ".join(
                p for p in (member.get("given_name"), member.get("family_name")) if p
            ),
            "attempts": mine.get("attempts", 0),
            "best_score": mine.get("best_score"),
            "max_score": mine.get("max_score"),
            "shown_score": shown.get(sub),
        })  # fmt: skip
    rows.sort(key=lambda r: (r["attempts"] == 0, r["name"] or r["user_id"]))
    return {"available": True, "members": rows, "error": error}
