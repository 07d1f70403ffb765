"""LTI on SQLite (the application tests' database and recording broker) against a platform
of the tests' own: an HTTP server on 127.0.0.1 that publishes its key set, signs id_tokens
with its own keys, and holds our token and score requests to the OAuth 2 client-credentials
and AGS rules (each breach is recorded in `errors`, and the request refused)."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwcrypto.jwk import JWK
from jwt.api_jws import PyJWS

from api.main import create_app
from db.models import Role
from lti import adapter
from tests.application.conftest import (  # noqa: F401  (fixtures)
    add_task,
    broker,
    ctx,
    made_key,
    principal,
    settings,
    template_db,
)

CLIENT_ID = "grader-tool"
DEPLOYMENT = "deployment-1"
CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
AGS = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
DL = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"
LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
INSTRUCTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"
SCORE_TYPE = "application/vnd.ims.lis.v1.score+json"
LINEITEM_TYPE = "application/vnd.ims.lis.v2.lineitem+json"
SCOPES = [
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
    "https://purl.imsglobal.org/spec/lti-ags/scope/score",
]
NRPS = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
NRPS_SCOPE = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
MEMBERSHIPS_TYPE = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
OFFERED_SCOPES = {  # what a platform may grant: the AGS and NRPS scopes
    *SCOPES, NRPS_SCOPE,
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
}  # fmt: skip
ISO_8601 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$")


def rsa_key() -> tuple[str, dict]:
    """A private key (PEM) and its public JWK (kid: its thumbprint)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip
    jwk = JWK.from_pem(pem.encode())
    public = json.loads(jwk.export_public()) | {
        "alg": "RS256",
        "use": "sig",
        "kid": jwk.thumbprint(),
    }
    return pem, public


@dataclass
class Platform:
    """The tests' LMS: its keys, what it received, and what it found wrong."""

    url: str = ""
    pem: str = ""
    jwk: dict = field(default_factory=dict)
    published: list[dict] = field(default_factory=list)
    tool_jwks: dict = field(default_factory=dict)  # the tool's key set, as registered here
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> expiry
    token_requests: list[dict] = field(default_factory=list)
    lineitems: list[dict] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    jti_seen: set[str] = field(default_factory=set)
    score_status: int = 200  # what the score endpoint answers (a test makes it fail)
    members: list[dict] = field(default_factory=list)  # the course's roster (NRPS)
    token_lifetime_s: int = 3600
    key_set_reads: int = 0  # how often the tool read the platform's key set

    @property
    def issuer(self) -> str:
        return self.url

    def id_token(
        self, nonce: str, *, kind: str = "LtiResourceLinkRequest", sub: str = "learner-1",
        roles: tuple[str, ...] = (LEARNER,), custom: dict | None = None, aud=CLIENT_ID,
        lifetime_s: int = 300, iat_shift_s: int = 0, pem: str | None = None,
        kid: str | None = None, iss: str | None = None, deployment: str = DEPLOYMENT,
        context: str = "course-101", resource_link: str = "link-1", lineitem: str | None = None,
        drop: tuple[str, ...] = (), extra: dict | None = None,
    ) -> str:  # fmt: skip
        moment = int(time.time()) + iat_shift_s
        body = {
            "iss": iss or self.issuer, "aud": aud, "sub": sub, "nonce": nonce,
            "iat": moment, "exp": moment + lifetime_s,
            CLAIM + "message_type": kind, CLAIM + "version": "1.3.0",
            CLAIM + "deployment_id": deployment, CLAIM + "roles": list(roles),
            CLAIM + "context": {"id": context, "title": "Deep Learning 101"},
            CLAIM + "target_link_uri": "http://testserver/lti/launch",
            NRPS: {
                "context_memberships_url": f"{self.url}/memberships",
                "service_versions": ["2.0"],
            },
        }  # fmt: skip
        if kind == "LtiResourceLinkRequest":
            body[CLAIM + "resource_link"] = {"id": resource_link}
            ags = {"scope": SCOPES, "lineitems": f"{self.url}/lineitems"}
            if lineitem:
                ags["lineitem"] = lineitem
            body[AGS] = ags
        else:
            body[DL] = {
                "deep_link_return_url": f"{self.url}/deep-link-return",
                "accept_types": ["ltiResourceLink"],
                "accept_presentation_document_targets": ["iframe", "window"],
                "accept_multiple": True, "data": "opaque-data",
            }  # fmt: skip
        if custom:
            body[CLAIM + "custom"] = custom
        body |= extra or {}
        for name in drop:
            body.pop(name, None)
        headers = {"kid": kid or self.jwk["kid"]}
        payload = json.dumps(body).encode()  # signed as JSON, whatever its claims' types
        return PyJWS().encode(payload, pem or self.pem, algorithm="RS256", headers=headers)

    def check_token_request(self, form: dict[str, str]) -> str | None:
        """RFC 6749 §4.4 with an RFC 7523 client assertion, as the LTI security framework
        asks; None when it holds, else what is wrong."""
        self.token_requests.append(form)
        if form.get("grant_type") != "client_credentials":
            return "grant_type must be client_credentials"
        if form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return "client_assertion_type must be the JWT bearer type"
        if not set(form.get("scope", "").split()) <= OFFERED_SCOPES or not form.get("scope"):
            return f"scope must be AGS scopes, got {form.get('scope')!r}"
        assertion = form.get("client_assertion", "")
        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
            keys = {k["kid"]: k for k in self.tool_jwks.get("keys", [])}
            if kid not in keys:
                return f"the assertion's kid {kid!r} is not in the tool's key set"
            key = jwt.PyJWK(keys[kid]).key
            claims = jwt.decode(
                assertion, key, algorithms=["RS256"], audience=f"{self.url}/token",
                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
            )  # fmt: skip
        except jwt.InvalidTokenError as exc:
            return f"the client assertion is invalid: {exc}"
        if claims["iss"] != CLIENT_ID or claims["sub"] != CLIENT_ID:
            return "the assertion's iss and sub must be the client id"
        if claims["exp"] - claims["iat"] > 3600:
            return "the assertion lives too long"
        if claims["jti"] in self.jti_seen:
            return "the assertion's jti was used before"
        self.jti_seen.add(claims["jti"])
        return None

    def check_score(self, headers, body: dict) -> str | None:
        """The AGS score publish service's rules for one score."""
        if headers.get("Content-Type") != SCORE_TYPE:
            return f"a score's content type must be {SCORE_TYPE}"
        required = {"userId", "activityProgress", "gradingProgress", "timestamp"}
        if missing := required - set(body):
            return f"a score needs {sorted(missing)}"
        if body["activityProgress"] not in (
            "Initialized", "Started", "InProgress", "Submitted", "Completed"
        ):  # fmt: skip
            return "activityProgress is not one of the AGS values"
        if body["gradingProgress"] not in (
            "FullyGraded", "Pending", "PendingManual", "Failed", "NotReady"
        ):  # fmt: skip
            return "gradingProgress is not one of the AGS values"
        if not ISO_8601.match(body["timestamp"]):
            return f"timestamp must be ISO 8601 with a zone, got {body['timestamp']}"
        if "scoreGiven" in body:
            if "scoreMaximum" not in body or body["scoreMaximum"] <= 0:
                return "scoreGiven needs a positive scoreMaximum"
            if body["scoreGiven"] < 0:
                return "scoreGiven must not be negative"
        earlier = [s for s in self.scores if s["body"]["userId"] == body["userId"]]
        if earlier and earlier[-1]["body"]["timestamp"] >= body["timestamp"]:
            return "a learner's scores must have increasing timestamps"
        return None


class Handler(BaseHTTPRequestHandler):
    platform: Platform

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body=None, content_type: str = "application/json") -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: int, why: str) -> None:
        self.platform.errors.append(why)
        self._reply(status, {"error": why})

    def _authorised(self) -> bool:
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.platform.tokens.get(token, 0) < time.time():
            self._refuse(401, "no valid access token")
            return False
        return True

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        platform, parts = self.platform, urlsplit(self.path)
        if parts.path == "/jwks":
            platform.key_set_reads += 1
            return self._reply(200, {"keys": platform.published})
        if parts.path == "/memberships" and self._authorised():
            if self.headers.get("Accept") != MEMBERSHIPS_TYPE:
                return self._refuse(406, f"the roster is served as {MEMBERSHIPS_TYPE}")
            roster = {"id": f"{platform.url}/memberships", "members": platform.members}
            return self._reply(200, roster, MEMBERSHIPS_TYPE)
        if parts.path == "/lineitems" and self._authorised():
            query = parse_qs(parts.query)
            items = [
                i for i in platform.lineitems
                if all(i.get(k) == query[q][0] for q, k in (
                    ("resource_id", "resourceId"), ("resource_link_id", "resourceLinkId"),
                ) if q in query)
            ]  # fmt: skip
            return self._reply(200, items, "application/vnd.ims.lis.v2.lineitemcontainer+json")
        if parts.path.startswith("/lineitems/") and self._authorised():
            found = [i for i in platform.lineitems if i["id"].endswith(parts.path)]
            return self._reply(200 if found else 404, found[0] if found else None, LINEITEM_TYPE)
        return None if parts.path.startswith("/lineitems") else self._reply(404)

    def do_POST(self) -> None:
        platform, parts = self.platform, urlsplit(self.path)
        body = self._body()
        if parts.path == "/token":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if why := platform.check_token_request(form):
                return self._refuse(400, why)
            token = secrets.token_urlsafe(16)
            platform.tokens[token] = time.time() + platform.token_lifetime_s
            return self._reply(
                200, {"access_token": token, "token_type": "Bearer", "expires_in": platform.token_lifetime_s,
                      "scope": form["scope"]},
            )  # fmt: skip
        if not self._authorised():
            return None
        data = json.loads(body or b"null")
        if parts.path == "/lineitems":
            if self.headers.get("Content-Type") != LINEITEM_TYPE:
                return self._refuse(415, f"a line item's content type must be {LINEITEM_TYPE}")
            if not data.get("label") or not data.get("scoreMaximum", 0) > 0:
                return self._refuse(400, "a line item needs a label and a positive scoreMaximum")
            item = data | {"id": f"{platform.url}/lineitems/{len(platform.lineitems) + 1}"}
            platform.lineitems.append(item)
            return self._reply(201, item, LINEITEM_TYPE)
        match = re.fullmatch(r"/lineitems/(\d+)/scores", parts.path)
        if match:
            if not any(
                i["id"].endswith(f"/lineitems/{match.group(1)}") for i in platform.lineitems
            ):
                return self._refuse(404, f"no line item {match.group(1)}")
            if why := platform.check_score(self.headers, data):
                return self._refuse(400, why)
            if platform.score_status != 200:
                return self._reply(platform.score_status, {"error": "the platform is down"})
            platform.scores.append({"lineitem": int(match.group(1)), "body": data})
            return self._reply(200, {})
        return self._reply(404)


@pytest.fixture(autouse=True)
def _key_set_refetches_forgotten(monkeypatch):
    """Each test's platform is new: no refetch of its key set happened in an earlier test
    (the tool keeps that in the process)."""
    monkeypatch.setattr(adapter, "_refetched_at", {})


@contextmanager
def served_platform() -> Iterator[Platform]:
    """A platform of the tests' own, serving on 127.0.0.1 until the block ends."""
    pem, public = rsa_key()
    state = Platform(pem=pem, jwk=public, published=[public])
    handler = type("BoundHandler", (Handler,), {"platform": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def platform():
    with served_platform() as state:
        yield state


@pytest.fixture
def admin(made_key) -> dict[str, str]:  # noqa: F811
    return {"Authorization": f"Bearer {made_key(Role.ADMIN, None)}"}


@pytest.fixture
def client(ctx):  # noqa: F811
    add_task(ctx, "quiz", None, max_attempts=5)  # a shared bank task every course can name
    app = create_app(ctx.settings, prepare_on_start=False)
    app.state.context = ctx
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def register(client: TestClient, admin: dict, platform: Platform, **changes) -> dict:
    body = {
        "issuer": platform.issuer, "client_id": CLIENT_ID, "deployment_ids": [DEPLOYMENT],
        "auth_login_url": f"{platform.url}/auth", "auth_token_url": f"{platform.url}/token",
        "key_set_url": f"{platform.url}/jwks",
    } | changes  # fmt: skip
    response = client.post("/v1/lti/platforms", json=body, headers=admin)
    assert response.status_code == 201, response.text
    platform.tool_jwks = client.get("/lti/jwks").json()
    return response.json()


@pytest.fixture
def registered(client, admin, platform) -> Platform:
    register(client, admin, platform)
    return platform


def login(client: TestClient, platform: Platform, **params) -> tuple[str, str]:
    """The platform's third-party initiated login; the state and nonce it was sent."""
    query = {
        "iss": platform.issuer, "login_hint": "hint-1", "client_id": CLIENT_ID,
        "target_link_uri": "http://testserver/lti/launch", "lti_message_hint": "m-1",
    } | params  # fmt: skip
    response = client.get("/lti/login", params=query, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{platform.url}/auth"
    sent = parse_qs(location.query)
    assert sent["redirect_uri"] == [str(client.base_url).rstrip("/") + "/lti/launch"]
    assert sent["response_mode"] == ["form_post"] and sent["prompt"] == ["none"]
    return sent["state"][0], sent["nonce"][0]


def launch(client: TestClient, platform: Platform, state: str | None = None, **claims):
    """A login, then its launch with an id_token made of `claims`; the launch's response."""
    sent_state, nonce = login(client, platform)
    token = platform.id_token(claims.pop("nonce", nonce), **claims)
    form = {"id_token": token}
    if state != "":
        form["state"] = state or sent_state
    return client.post("/lti/launch", data=form, follow_redirects=False)


def uid() -> str:
    return uuid.uuid4().hex[:8]
