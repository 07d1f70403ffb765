"""The tool's RSA key pairs: made once and kept (`lti_keys`), the newest unretired one signs
(deep-linking responses, client assertions); rotating retires it and makes a new one, and a
retired key stays published at /lti/jwks for the grace, so a platform that cached the old
key set still verifies what it signed. Keys are made by `cryptography`, their JWKs (kid: the
RFC 7638 thumbprint, which PyLTI1p3 computes alike) by `jwcrypto`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto.jwk import JWK
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from db.lti_models import LtiKey
from db.models import aware, now

KEY_BITS = 2048


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: str
    public_pem: str


def _new_key() -> LtiKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    jwk = JWK.from_pem(pem.encode())
    public = json.loads(jwk.export_public())
    public |= {"alg": "RS256", "use": "sig", "kid": jwk.thumbprint()}
    return LtiKey(kid=public["kid"], private_pem=pem, public_jwk=public, created_at=now())


def signing_key(session: Session) -> SigningKey:
    """The key that signs now; the first is made on first use."""
    row = session.scalar(
        select(LtiKey).where(LtiKey.retired_at.is_(None)).order_by(LtiKey.created_at.desc())
    )
    if row is None:
        row = _new_key()
        session.add(row)
        session.flush()
    public_pem = (
        serialization.load_pem_private_key(row.private_pem.encode(), password=None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return SigningKey(row.kid, row.private_pem, public_pem)


def rotate(session: Session) -> str:
    """Retire the signing key (still published for the grace) and make a new one; its kid."""
    moment = now()
    for row in session.scalars(select(LtiKey).where(LtiKey.retired_at.is_(None))):
        row.retired_at = moment
    row = _new_key()
    session.add(row)
    session.flush()
    return row.kid


def published(session: Session, grace_s: int) -> dict:
    """The JWKS: the signing key (made if none yet) and those retired within the grace."""
    signing_key(session)
    since = now() - timedelta(seconds=grace_s)
    rows = session.scalars(
        select(LtiKey)
        .where(or_(LtiKey.retired_at.is_(None), LtiKey.retired_at > since))
        .order_by(LtiKey.created_at.desc())
    )
    return {"keys": [row.public_jwk for row in rows if _published(row, since)]}


def _published(row: LtiKey, since) -> bool:
    return row.retired_at is None or aware(row.retired_at) > since
