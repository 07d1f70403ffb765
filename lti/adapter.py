"""PyLTI1p3 bound to plain values: a request is `Incoming` (its parameters, cookies, and
whether it came over https), the cookies the library sets are collected for the front door
to send, and everything the library keeps (states' parameters, nonces, launch data, the
platforms' key sets, access tokens) is a row of `lti_values`, never a cookie session.

The library is synchronous (it calls platforms with `requests`): front doors run these in a
thread pool. Where the library checks less than a launch must pass, the subclasses here
check the rest with PyJWT: the audience (and `azp` when there are several), `exp` and `iat`
with a small leeway (and an `iat` no older than an hour), the issuer, the claims' shape
(lti/claims.py, before anything reads them), a nonce used once (consumed only once the
signature holds), a key set refetched when a token names a kid it lacks (at most once a
minute per key set), and only the message types we serve. A state is the one our login set:
its cookie, or, where the browser keeps no cookie in the platform's frame, a proof our login
page put in the platform's storage frame (the LTI client-side storage messages) and our
launch page read back; either way it is bound to the nonce, issuer, client and deployment
its login was for, and good for one launch.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import typing as t
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from pylti1p3.cookie import CookieService
from pylti1p3.deployment import Deployment
from pylti1p3.exception import LtiException, LtiKeyException, OIDCException
from pylti1p3.launch_data_storage.base import LaunchDataStorage
from pylti1p3.message_launch import MessageLaunch
from pylti1p3.oidc_login import OIDCLogin
from pylti1p3.redirect import Redirect
from pylti1p3.registration import Registration
from pylti1p3.request import Request
from pylti1p3.service_connector import ServiceConnector
from pylti1p3.session import SessionService
from pylti1p3.tool_config.abstract import ToolConfAbstract
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.lti_models import LtiDeployment, LtiPlatform, LtiValue
from db.models import aware, now
from lti.claims import CLAIM, DEEP_LINKING, RESOURCE_LINK, check_message
from lti.keys import SigningKey

HTTP_TIMEOUT_S = 10.0
SERVED_MESSAGES = (RESOURCE_LINK, DEEP_LINKING)
LaunchError = (LtiException, OIDCException)  # what the library raises on a refused launch
STORAGE_TARGET = "lti_storage_target"  # the platform's storage frame, offered at the login
STORAGE_PROOF = "lti_storage_proof"  # the launch form's field: the proof read back from it
STORAGE_TTL_S = 5 * 60  # as long as the library's state cookie
STATE_TTL_S = 5 * 60  # a state's binding: as long as its cookie
TOKEN_MAX_AGE_S = 3600  # an id_token issued longer ago is refused, however late its exp
KEY_SET_REFETCH_S = 60  # a key set is refetched for an unknown kid at most this often


def storage_key(state: str) -> str:
    """The key of a state's proof in the platform's storage: the name the library gives the
    state's cookie."""
    return f"{CookieService._cookie_prefix}-{state}"


def proof_key(state: str) -> str:
    """Where a state's proof (its digest) is kept in `lti_values`."""
    return f"storage-proof-{state}"


def state_key(state: str) -> str:
    """Where what a state was issued for (its nonce, issuer, client, deployment) is kept."""
    return f"state-binding-{state}"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class Incoming:
    """What a front door read from the HTTP request."""

    params: dict[str, str]
    cookies: dict[str, str]
    secure: bool


@dataclass
class SetCookie:
    name: str
    value: str
    max_age_s: int | None


class LtiRequest(Request):
    def __init__(self, incoming: Incoming) -> None:
        self.incoming = incoming

    @property
    def session(self) -> dict:
        return {}  # nothing is kept in a cookie session

    def is_secure(self) -> bool:
        return self.incoming.secure

    def get_param(self, key: str) -> str:
        return self.incoming.params.get(key, "")


class Cookies(CookieService):
    """The library's cookies (the state's): read from the request, collected to be set."""

    def __init__(self, request: LtiRequest) -> None:
        self.request = request
        self.to_set: list[SetCookie] = []

    def _name(self, name: str) -> str:
        return f"{self._cookie_prefix}-{name}"

    def get_cookie(self, name: str) -> str | None:
        return self.request.incoming.cookies.get(self._name(name))

    def set_cookie(self, name: str, value: str | int, exp: int | None = 3600) -> None:
        self.to_set.append(SetCookie(self._name(name), str(value), exp))

    def clear(self, name: str) -> None:
        """Expire a cookie in the browser: a state's, once its launch used it."""
        self.to_set.append(SetCookie(self._name(name), "", 0))


class Values(LaunchDataStorage[t.Any]):
    """`lti_values` as the library's launch data storage: every key global (no session-id
    cookie binds them: the state cookie, the one-time nonce and the launch id do)."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.db = session

    def get_session_cookie_name(self) -> str | None:
        return None

    def can_set_keys_expiration(self) -> bool:
        return True

    def get_value(self, key: str) -> t.Any:
        row = self.db.get(LtiValue, self._prepare_key(key))
        if row is None or aware(row.expires_at) <= now():
            return None
        return row.value

    def set_value(self, key: str, value: t.Any, exp: int | None = None) -> None:
        expires_at = now() + timedelta(seconds=exp or 86400)
        self.db.merge(LtiValue(key=self._prepare_key(key), value=value, expires_at=expires_at))
        self.db.flush()

    def check_value(self, key: str) -> bool:
        return self.get_value(key) is not None

    def take(self, key: str) -> bool:
        """Remove a value that has not expired; True for the one caller that removed it."""
        done = self.db.execute(
            delete(LtiValue).where(
                LtiValue.key == self._prepare_key(key), LtiValue.expires_at > now()
            )
        )
        return done.rowcount == 1

    def forget(self, key: str) -> None:
        self.db.execute(delete(LtiValue).where(LtiValue.key == self._prepare_key(key)))

    def sweep(self) -> None:
        self.db.execute(delete(LtiValue).where(LtiValue.expires_at < now()))


class OneTimeNonces(SessionService):
    """The library's session service over `Values`, with a nonce good for one launch."""

    def __init__(self, request: LtiRequest, values: Values) -> None:
        super().__init__(request)
        values.set_request(request)
        self.set_data_storage(values)
        self.values = values

    def check_nonce(self, nonce: str) -> bool:
        return self.values.take(self._get_key("nonce", nonce))


def registration_of(platform: LtiPlatform, key: SigningKey) -> Registration:
    return (
        Registration()
        .set_issuer(platform.issuer)
        .set_client_id(platform.client_id)
        .set_auth_login_url(platform.auth_login_url)
        .set_auth_token_url(platform.auth_token_url)
        .set_key_set_url(platform.key_set_url)
        .set_tool_private_key(key.private_pem)
        .set_tool_public_key(key.public_pem)
    )


class ToolConfig(ToolConfAbstract[LtiRequest]):
    """The registered platforms (`lti_platforms`, `lti_deployments`) as the library looks
    them up: by issuer and client id (one issuer may hold several registrations)."""

    def __init__(self, session: Session, key: SigningKey) -> None:
        self.db = session
        self.key = key

    def check_iss_has_one_client(self, iss: str) -> bool:
        return False

    def check_iss_has_many_clients(self, iss: str) -> bool:
        return True

    def platform(self, iss: str, client_id: str | None) -> LtiPlatform | None:
        query = select(LtiPlatform).where(LtiPlatform.issuer == iss)
        if client_id:
            query = query.where(LtiPlatform.client_id == client_id)
        found = list(self.db.scalars(query.limit(2)))
        return found[0] if len(found) == 1 else None  # no client id: only an issuer's one

    def find_registration_by_issuer(self, iss: str, *args, **kwargs) -> Registration | None:
        return self.find_registration_by_params(iss, "", *args, **kwargs)

    def find_registration_by_params(
        self, iss: str, client_id: str, *args, **kwargs
    ) -> Registration | None:
        platform = self.platform(iss, client_id)
        return registration_of(platform, self.key) if platform else None

    def find_deployment(self, iss: str, deployment_id: str) -> Deployment | None:
        return self.find_deployment_by_params(iss, deployment_id, "")

    def find_deployment_by_params(
        self, iss: str, deployment_id: str, client_id: str, *args, **kwargs
    ) -> Deployment | None:
        platform = self.platform(iss, client_id)
        if platform is None or self.db.get(LtiDeployment, (platform.id, deployment_id)) is None:
            return None
        return Deployment().set_deployment_id(deployment_id)


class TimeoutSession(requests.Session):
    """requests has no default timeout: a platform that does not answer must not hang us."""

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        return super().request(*args, **kwargs)


def http() -> requests.Session:
    session = TimeoutSession()
    session.headers["User-Agent"] = "ml-grader-lti"
    return session


@dataclass
class Tool:
    """Everything the library needs for one request."""

    request: LtiRequest
    config: ToolConfig
    values: Values
    sessions: OneTimeNonces
    cookies: Cookies
    leeway_s: int = 60
    key_set_ttl_s: int = 3600
    http: requests.Session = field(default_factory=http)

    @classmethod
    def of(
        cls, session: Session, key: SigningKey, incoming: Incoming, leeway_s: int, ttl_s: int
    ) -> Tool:
        request = LtiRequest(incoming)
        values = Values(session)
        return cls(
            request, ToolConfig(session, key), values, OneTimeNonces(request, values),
            Cookies(request), leeway_s, ttl_s,
        )  # fmt: skip


class _Redirect(Redirect[str]):
    def __init__(self, location: str) -> None:
        self.location = location

    def do_redirect(self) -> str:
        return self.location

    def do_js_redirect(self) -> str:
        return self.location

    def set_redirect_url(self, location: str) -> None:
        self.location = location

    def get_redirect_url(self) -> str:
        return self.location


class Login(OIDCLogin[LtiRequest, ToolConfig, OneTimeNonces, Cookies, str]):
    """The third-party initiated login: its answer is the platform's authorisation URL (the
    state cookie set, the nonce stored)."""

    def __init__(self, tool: Tool) -> None:
        super().__init__(
            tool.request, tool.config, session_service=tool.sessions, cookie_service=tool.cookies
        )
        self.tool = tool

    def get_redirect(self, url: str) -> Redirect[str]:
        return _Redirect(url)

    def _prepare_redirect_url(self, launch_url: str) -> str:
        """The library's authorisation URL, its state bound here to what it was issued for:
        the nonce sent with it, the registration's issuer and client, and the deployment the
        platform named (`lti_deployment_id`, where it did). The launch takes it once."""
        location = super()._prepare_redirect_url(launch_url)
        sent = parse_qs(urlsplit(location).query)
        binding = {
            "nonce": sent["nonce"][-1],
            "issuer": self._registration.get_issuer(),
            "client_id": self._registration.get_client_id(),
            "deployment_id": self._get_request_param("lti_deployment_id"),
        }
        self.tool.values.set_value(state_key(sent["state"][-1]), binding, STATE_TTL_S)
        return location


class Launch(MessageLaunch[LtiRequest, ToolConfig, OneTimeNonces, Cookies]):
    """A launch as the library validates it, with the checks it leaves out."""

    def __init__(self, tool: Tool) -> None:
        super().__init__(
            tool.request, tool.config, session_service=tool.sessions, cookie_service=tool.cookies,
            requests_session=tool.http, service_connector_cls=Connector.bound(tool.values),
        )  # fmt: skip
        self.tool = tool
        self._refetched = False

    @classmethod
    def restored(cls, tool: Tool, launch_id: str) -> Launch:
        """A launch validated before, from its stored data (for the deep-linking answer)."""
        launch = cls(tool)
        data = tool.sessions.get_launch_data(launch_id)
        if not data:
            raise LtiException("this launch is over: launch the tool again from the course")
        launch.set_launch_id(launch_id).set_auto_validation(enable=False)
        launch.set_jwt({"body": data}).set_restored().validate_registration()
        return launch

    def _get_request_param(self, key: str) -> str:
        return self._request.get_param(key)

    def validate(self) -> Launch:
        """The library's checks in an order that consumes the nonce last, once the token
        is the platform's (a forged token burns no learner's login)."""
        if self._restored:
            raise LtiException("a restored launch cannot be validated again")
        self._validated = True
        try:
            self.validate_state().validate_jwt_format().validate_claims()
            self.validate_registration().validate_jwt_signature().validate_deployment()
            self.validate_message().take_state().validate_nonce().save_launch_data()
        except Exception:
            self._validated = False
            raise
        return self

    def validate_state(self) -> Launch:
        """The state our login set: its cookie (the library's check), or the proof our
        login page put in the platform's storage for it, read back by our launch page
        (`lti_storage_proof`); a proof is good for one launch, and only with its state."""
        proof = self._get_request_param(STORAGE_PROOF)
        if not proof:
            return super().validate_state()
        state = self._get_request_param("state")
        kept = self.tool.values.get_value(proof_key(state)) if state else None
        if not isinstance(kept, dict) or not hmac.compare_digest(
            str(kept.get("proof")), digest(proof)
        ):
            raise LtiException("State not found in the platform's storage")
        if not self.tool.values.take(proof_key(state)):
            raise LtiException("State was used already")
        return self

    def validate_claims(self) -> Launch:
        """The decoded token's shape, before the registration's lookup or anything else reads
        a claim (lti/claims.py)."""
        check_message(self._jwt.get("header"), self._jwt.get("body"))
        return self

    def take_state(self) -> Launch:
        """The state's binding, taken once the token is the platform's: the token must carry
        the nonce that state's login sent, for the issuer, client and deployment it was for.
        A second launch with the same state finds nothing."""
        state = self._get_request_param("state")
        bound = self.tool.values.get_value(state_key(state))
        if not isinstance(bound, dict):
            raise LtiException("State not found: it was used already, expired or never issued")
        body = self._get_jwt_body()
        issued_for = (bound["nonce"], bound["issuer"], bound["client_id"])
        if issued_for != (body["nonce"], body["iss"], self.get_client_id()) or (
            bound["deployment_id"] and bound["deployment_id"] != body[CLAIM + "deployment_id"]
        ):
            raise LtiException(
                "the id_token was not issued for this state's login (its nonce, issuer, "
                "client or deployment differ)"
            )
        if not self.tool.values.take(state_key(state)):
            raise LtiException("State was used already")
        return self

    def get_client_id(self) -> str:
        """The audience that names us: `azp` when there are several, else the only one."""
        body = self._get_jwt_body()
        aud = body.get("aud")
        if isinstance(aud, list):
            if len(aud) > 1:
                return str(body.get("azp") or "")
            return str(aud[0]) if aud else ""
        return str(aud or "")

    def validate_jwt_signature(self) -> Launch:
        public_key, alg = self.get_public_key()
        registration = self._registration
        try:
            jwt.decode(
                self._get_id_token(), public_key, algorithms=[alg],
                audience=registration.get_client_id(), issuer=registration.get_issuer(),
                leeway=self.tool.leeway_s, options={"require": ["exp", "iat", "aud", "iss"]},
            )  # fmt: skip
        except jwt.InvalidTokenError as exc:
            raise LtiException(f"the id_token was refused: {exc}") from exc
        aud = self._get_jwt_body().get("aud")
        azp = self._get_jwt_body().get("azp")
        if azp is not None and azp != registration.get_client_id():
            raise LtiException("the id_token's azp is not this tool's client id")
        if isinstance(aud, list) and len(aud) > 1 and azp is None:
            raise LtiException("the id_token has several audiences and no azp")
        age_s = time.time() - self._get_jwt_body()["iat"]
        if age_s > TOKEN_MAX_AGE_S + self.tool.leeway_s:
            raise LtiException(
                f"the id_token was issued {int(age_s)} s ago, more than {TOKEN_MAX_AGE_S} s"
            )
        return self

    def validate_message(self) -> Launch:
        kind = self._get_jwt_body().get("https://purl.imsglobal.org/spec/lti/claim/message_type")
        if kind not in SERVED_MESSAGES:
            raise LtiException(f"this tool does not serve {kind or 'that'} message")
        super().validate_message()
        return self

    def fetch_public_key(self, key_set_url: str) -> dict:
        """The platform's key set, cached in `lti_values`; fetched anew when the cached one
        lacks the token's kid."""
        cache = "key-set-" + hashlib.sha256(key_set_url.encode()).hexdigest()[:40]
        cached = None if self._refetched else self.tool.values.get_value(cache)
        if cached:
            return cached
        try:
            found = self._requests_session.get(key_set_url).json()
        except (requests.RequestException, ValueError) as exc:
            raise LtiKeyException(f"the platform's key set could not be read: {exc}") from exc
        if not isinstance(found, dict) or not isinstance(found.get("keys"), list):
            raise LtiKeyException("the platform's key set is not a JWKS")
        self.tool.values.set_value(cache, found, self.tool.key_set_ttl_s)
        return found

    def get_public_key(self) -> tuple[str, str]:
        try:
            return super().get_public_key()
        except LtiKeyException:
            if self._refetched:
                raise
            if not refetch_allowed(self._registration.get_key_set_url()):
                raise LtiKeyException(
                    "Unable to find public key: the platform's key set was refetched less "
                    f"than {KEY_SET_REFETCH_S} s ago"
                ) from None
            self._refetched = True
            self._registration.set_key_set(None)
            return super().get_public_key()


_refetched_at: dict[str, float] = {}
_refetch_lock = threading.Lock()


def refetch_allowed(key_set_url: str) -> bool:
    """Whether a key set may be fetched again for a kid it lacks: once per
    `KEY_SET_REFETCH_S` per key set, so that tokens naming made-up kids cannot make us
    hammer the platform. Kept in the process, since a refused launch stores nothing."""
    moment = time.monotonic()
    with _refetch_lock:
        last = _refetched_at.get(key_set_url)
        if last is not None and moment - last < KEY_SET_REFETCH_S:
            return False
        _refetched_at[key_set_url] = moment
        return True


class Connector(ServiceConnector):
    """The library's service connector (client-credentials grant, its assertion signed with
    the tool's key) with access tokens cached in `lti_values` until just before they expire."""

    values: Values

    @classmethod
    def bound(cls, values: Values) -> type[Connector]:
        return type("BoundConnector", (cls,), {"values": values})

    def __init__(self, registration: Registration, requests_session=None) -> None:
        super().__init__(registration, requests_session or http())

    def _get_cached_access_token(self, scope_key: str) -> str | None:
        return self.values.get_value(f"token-{scope_key}")

    def _cache_access_token(self, scope_key: str, access_token: str, expires_in: float) -> None:
        keep_s = int(float(expires_in or 0)) - 30
        if keep_s > 0:
            self.values.set_value(f"token-{scope_key}", access_token, keep_s)
