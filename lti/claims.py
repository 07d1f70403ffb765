"""The shape of a launch's id_token, checked in one place, right after it is decoded and
before anything (the registration's lookup, the library, the database) reads it: a claim of
the wrong type, an identifier that is empty, padded with spaces, too long for the tables
that keep it, or text a database refuses (a lone surrogate, a NUL) is a refused launch,
never an error of ours. What the claims mean is decided elsewhere (usecases/lti_launch.py).
"""

from __future__ import annotations

from pylti1p3.exception import LtiException

from db.lti_models import GradePolicy

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
AGS_CLAIM = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
NRPS_CLAIM = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
DL_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"
RESOURCE_LINK = "LtiResourceLinkRequest"
DEEP_LINKING = "LtiDeepLinkingRequest"
ID_MAX_CHARS = 200  # the columns that keep a sub, a context, link or deployment id
TASK_ID_MAX_CHARS = 64
ISSUER_MAX_CHARS = 500
URL_MAX_CHARS = 2000
TIME_BOUND_S = 1e11  # seconds either side of 1970 that a time claim may be (some 3,000 years)


class ClaimRefused(LtiException):
    """An id_token whose claims are not of the shape a launch needs: the message names the
    claim, what was expected and what was found."""


def kind(value: object) -> str:
    """What a JSON value is, in words, for a refusal's message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def check_message(header: object, body: object) -> None:
    """Refuse a decoded id_token whose header or claims a launch could not read safely."""
    if not isinstance(header, dict) or not isinstance(body, dict):
        raise ClaimRefused("the id_token's header and body must be JSON objects")
    _check_text_everywhere(header, "the id_token's header")
    _check_text_everywhere(body, "the id_token")
    for name in ("kid", "alg"):
        if name in header:
            identifier(header[name], f"the id_token's header {name}")
    _check_core(body)
    _check_roles(body.get(CLAIM + "roles"))
    _check_context(body.get(CLAIM + "context"))
    _check_resource_link(body)
    _check_custom(body.get(CLAIM + "custom"))
    _check_ags(body.get(AGS_CLAIM))
    _check_nrps(body.get(NRPS_CLAIM))
    _check_deep_linking(body)


def _check_text_everywhere(value: object, where: str) -> None:
    """Every string in the token (names and values, at any depth) is text a database keeps:
    no lone surrogate (not UTF-8), no NUL. Walked without recursion: depth is the token's."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and not _is_text(item):
            raise ClaimRefused(f"{where} holds a string that is not text (a NUL or not UTF-8)")


def _is_text(value: str) -> bool:
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def identifier(value: object, name: str, max_chars: int = ID_MAX_CHARS) -> str:
    """An id the tool keeps or looks up: a non-empty string without surrounding spaces (a
    padded id is refused, never trimmed into another one), within its column."""
    if not isinstance(value, str):
        raise ClaimRefused(f"{name} must be a string, found {kind(value)}")
    if not value:
        raise ClaimRefused(f"{name} must not be empty")
    if value != value.strip():
        raise ClaimRefused(f"{name} must not begin or end with spaces, found {value!r}")
    if len(value) > max_chars:
        raise ClaimRefused(f"{name} must be at most {max_chars} characters, found {len(value)}")
    return value


def _optional_text(claim: dict, field: str, name: str) -> None:
    if field in claim and not isinstance(claim[field], str):
        raise ClaimRefused(f"{name}'s {field} must be a string, found {kind(claim[field])}")


def _strings(value: object, name: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ClaimRefused(f"{name} must be a list of strings, found {kind(value)}")


def _url(value: object, name: str) -> None:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ClaimRefused(f"{name} must be an http(s) URL, found {kind(value)}")
    if len(value) > URL_MAX_CHARS or value != value.strip():
        raise ClaimRefused(f"{name} must be a URL of at most {URL_MAX_CHARS} characters")


def _object(value: object, name: str) -> dict:
    if not isinstance(value, dict):
        raise ClaimRefused(f"the claim {name} must be an object, found {kind(value)}")
    return value


def _number(value: object, name: str) -> None:
    """A time in seconds since 1970, within a few thousand years of it (an integer too
    large for a float, or NaN, would break the library's time checks)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ClaimRefused(f"{name} must be a number (seconds), found {kind(value)}")
    if not -TIME_BOUND_S < value < TIME_BOUND_S:
        raise ClaimRefused(f"{name} is not a time in seconds since 1970")


def _check_core(body: dict) -> None:
    """The claims every launch has, as the registration, signature and nonce checks read
    them."""
    identifier(body.get("iss"), "the issuer (iss)", ISSUER_MAX_CHARS)
    identifier(body.get("sub"), "the user (sub)")
    identifier(body.get("nonce"), "the nonce")
    identifier(body.get(CLAIM + "deployment_id"), "the deployment_id")
    identifier(body.get(CLAIM + "message_type"), "the message_type")
    identifier(body.get(CLAIM + "version"), "the version")
    aud = body.get("aud")
    if isinstance(aud, list):
        if not aud:
            raise ClaimRefused("the audience (aud) must name this tool, found an empty list")
        for each in aud:
            identifier(each, "each audience (aud)")
    else:
        identifier(aud, "the audience (aud)")
    if "azp" in body:
        identifier(body["azp"], "the authorized party (azp)")
    for name in ("exp", "iat"):
        _number(body.get(name), f"the id_token's {name}")
    if "nbf" in body:
        _number(body["nbf"], "the id_token's nbf")
    if CLAIM + "target_link_uri" in body:
        _url(body[CLAIM + "target_link_uri"], "the target_link_uri")


def _check_roles(roles: object) -> None:
    """Roles are compared exactly with the IMS vocabulary: a role padded with spaces is
    refused here rather than matched (or not) by accident."""
    _strings(roles, "the roles claim")
    for role in roles:
        identifier(role, "each role", URL_MAX_CHARS)


def _check_context(value: object) -> None:
    if value is None:
        return
    claim = _object(value, "context")
    identifier(claim.get("id"), "the context's id")
    _optional_text(claim, "title", "the context")
    _optional_text(claim, "label", "the context")
    if "type" in claim:
        _strings(claim["type"], "the context's type")


def _check_resource_link(body: dict) -> None:
    value = body.get(CLAIM + "resource_link")
    if value is None and body.get(CLAIM + "message_type") != RESOURCE_LINK:
        return
    claim = _object(value, "resource_link")
    identifier(claim.get("id"), "the resource link's id")
    _optional_text(claim, "title", "the resource link")
    _optional_text(claim, "description", "the resource link")


def _check_custom(value: object) -> None:
    if value is None:
        return
    claim = _object(value, "custom")
    if "task_id" in claim:
        identifier(claim["task_id"], "the custom parameter task_id", TASK_ID_MAX_CHARS)
    if "grade_policy" in claim:
        policy = identifier(claim["grade_policy"], "the custom parameter grade_policy")
        if policy not in set(GradePolicy):
            raise ClaimRefused(
                f"the custom parameter grade_policy must be one of "
                f"{', '.join(GradePolicy)}, found {policy[:40]!r}"
            )


def _check_ags(value: object) -> None:
    if value is None:
        return
    claim = _object(value, "endpoint (Assignment and Grade Services)")
    if "scope" in claim:
        _strings(claim["scope"], "the AGS claim's scope")
    for field in ("lineitems", "lineitem"):
        if field in claim:
            _url(claim[field], f"the AGS claim's {field}")


def _check_nrps(value: object) -> None:
    if value is None:
        return
    claim = _object(value, "namesroleservice (Names and Role Provisioning)")
    if "context_memberships_url" in claim:
        _url(claim["context_memberships_url"], "the NRPS claim's context_memberships_url")
    if "service_versions" in claim:
        _strings(claim["service_versions"], "the NRPS claim's service_versions")


def _check_deep_linking(body: dict) -> None:
    value = body.get(DL_CLAIM)
    if value is None and body.get(CLAIM + "message_type") != DEEP_LINKING:
        return
    claim = _object(value, "deep_linking_settings (Deep Linking)")
    _url(claim.get("deep_link_return_url"), "the deep linking claim's deep_link_return_url")
    for field in ("accept_types", "accept_presentation_document_targets"):
        if field in claim:
            _strings(claim[field], f"the deep linking claim's {field}")
    multiple = claim.get("accept_multiple", True)
    if not isinstance(multiple, bool) and multiple not in ("true", "false"):
        raise ClaimRefused(
            "the deep linking claim's accept_multiple must be true or false, "
            f"found {kind(claim['accept_multiple'])}"
        )
    _optional_text(claim, "title", "the deep linking claim")
    _optional_text(claim, "text", "the deep linking claim")
