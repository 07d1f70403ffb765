"""Registering platforms (the API and gradectl) and the tool's key set: made once and kept,
rotated with the old key still published for the grace."""

from __future__ import annotations

from datetime import timedelta

import jwt
from sqlalchemy import update

from db.lti_models import LtiKey
from db.models import Role, now
from tests.conftest import gradectl
from tests.lti.conftest import CLIENT_ID, DEPLOYMENT, register
from usecases import lti_platforms


def test_an_admin_registers_lists_and_removes_a_platform(client, admin, platform, made_key):
    made = register(client, admin, platform, deployment_ids=[DEPLOYMENT, "d-2", DEPLOYMENT])
    assert made["issuer"] == platform.issuer and made["client_id"] == CLIENT_ID
    assert made["deployment_ids"] == sorted([DEPLOYMENT, "d-2"])
    listed = client.get("/v1/lti/platforms", headers=admin).json()
    assert [p["id"] for p in listed] == [made["id"]]
    again = client.post(
        "/v1/lti/platforms", headers=admin,
        json={k: v for k, v in made.items() if k not in ("id", "created_at")},
    )  # fmt: skip
    assert again.status_code == 409
    for role in (Role.INSTRUCTOR, Role.LMS):
        other = {"Authorization": f"Bearer {made_key(role)}"}
        assert client.get("/v1/lti/platforms", headers=other).status_code == 403
        assert client.delete(f"/v1/lti/platforms/{made['id']}", headers=other).status_code == 403
    assert client.delete(f"/v1/lti/platforms/{made['id']}", headers=admin).status_code == 204
    assert client.get("/v1/lti/platforms", headers=admin).json() == []
    assert client.delete(f"/v1/lti/platforms/{made['id']}", headers=admin).status_code == 404


def test_a_registration_is_refused_with_the_field_named(client, admin, platform):
    good = {
        "issuer": platform.issuer, "client_id": CLIENT_ID, "deployment_ids": [DEPLOYMENT],
        "auth_login_url": f"{platform.url}/auth", "auth_token_url": f"{platform.url}/token",
        "key_set_url": f"{platform.url}/jwks",
    }  # fmt: skip
    for change, named in (
        ({"key_set_url": "file:///etc/passwd"}, "key_set_url"),
        ({"deployment_ids": []}, "deployment_ids"),
        ({"issuer": ""}, "issuer"),
        ({"extra": 1}, "extra"),
    ):
        response = client.post("/v1/lti/platforms", json=good | change, headers=admin)
        assert response.status_code == 422 and named in response.json()["error"]["message"]


def test_gradectl_registers_lists_and_removes_a_platform(settings, platform):
    env = {"GRADER_DATABASE_URL": settings.effective_database_url}
    added = gradectl(
        "lti", "add-platform", "--issuer", platform.issuer, "--client-id", CLIENT_ID,
        "--deployment-id", DEPLOYMENT, "--deployment-id", "d-2",
        "--auth-login-url", f"{platform.url}/auth", "--auth-token-url", f"{platform.url}/token",
        "--key-set-url", f"{platform.url}/jwks", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert '"deployment_ids"' in added.stdout.decode() and "d-2" in added.stdout.decode()
    listed = gradectl("lti", "list-platforms", env=env).stdout.decode()
    assert platform.issuer in listed and f"d-2,{DEPLOYMENT}" in listed
    platform_id = listed.split()[0]
    assert gradectl("lti", "remove-platform", platform_id, env=env).returncode == 0
    assert platform.issuer not in gradectl("lti", "list-platforms", env=env).stdout.decode()


def test_the_key_pair_is_made_once_and_kept(client):
    first = client.get("/lti/jwks").json()
    assert client.get("/lti/jwks").json() == first
    [key] = first["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
    assert "d" not in key and "p" not in key  # public parts only
    assert jwt.PyJWK(key).key.key_size >= 2048


def test_a_rotated_key_is_still_published_for_the_grace(client, ctx, admin, made_key):
    old = client.get("/lti/jwks").json()["keys"][0]["kid"]
    instructor = {"Authorization": f"Bearer {made_key(Role.INSTRUCTOR)}"}
    assert client.post("/v1/lti/keys/rotate", headers=instructor).status_code == 403
    new = client.post("/v1/lti/keys/rotate", headers=admin).json()["kid"]
    assert new != old
    assert [k["kid"] for k in client.get("/lti/jwks").json()["keys"]] == [new, old]
    with ctx.unit_of_work() as work:  # the grace has passed
        retired = now() - timedelta(seconds=ctx.settings.lti_key_grace_s + 1)
        work.session.execute(update(LtiKey).where(LtiKey.kid == old).values(retired_at=retired))
    assert [k["kid"] for k in lti_platforms.jwks(ctx)["keys"]] == [new]
