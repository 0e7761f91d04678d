"""ID token signing keys: generated on first use, encrypted at rest, published in the JWKS.

One RSA 2048 key serves RS256 (the OIDC default) and PS256; one P-256 key serves ES256.
Rotation keeps retired keys published for ``RETIRED_KEY_GRACE`` so relying parties can still
verify tokens signed just before.
"""

from __future__ import annotations

import datetime as dt
import functools
import json

from joserfc.jwk import ECKey, RSAKey, import_key
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.clock import Clock
from idp.crypto import DataCipher
from idp.models import SigningKey

ALGORITHMS = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC"}
RETIRED_KEY_GRACE = dt.timedelta(days=7)


class UnsupportedAlgorithmError(ValueError):
    pass


def _generate(kty: str):
    return RSAKey.generate_key(2048, private=True) if kty == "RSA" else ECKey.generate_key("P-256")


def _aad(kid: str) -> str:
    return f"signing-key:{kid}"


def create_key(db: Session, *, kty: str, cipher: DataCipher, clock: Clock) -> SigningKey:
    key = _generate(kty)
    kid = key.thumbprint()
    private = json.dumps(key.as_dict(private=True)).encode()
    row = SigningKey(
        kid=kid,
        kty=kty,
        private_jwk_encrypted=cipher.encrypt(private, aad=_aad(kid)),
        public_jwk=json.dumps(key.as_dict(private=False)),
        created_at=clock.now(),
    )
    db.add(row)
    return row


def active_key(db: Session, kty: str) -> SigningKey | None:
    return (
        db.execute(
            select(SigningKey)
            .where(SigningKey.kty == kty, SigningKey.retired_at.is_(None))
            .order_by(SigningKey.created_at.desc())
        )
        .scalars()
        .first()
    )


def ensure_keys(db: Session, *, cipher: DataCipher, clock: Clock) -> None:
    for kty in ("RSA", "EC"):
        if active_key(db, kty) is None:
            create_key(db, kty=kty, cipher=cipher, clock=clock)
    db.commit()


def rotate_keys(db: Session, *, cipher: DataCipher, clock: Clock) -> list[str]:
    now = clock.now()
    for row in db.execute(select(SigningKey).where(SigningKey.retired_at.is_(None))).scalars():
        row.retired_at = now
    created = [create_key(db, kty=kty, cipher=cipher, clock=clock).kid for kty in ("RSA", "EC")]
    db.commit()
    return created


def signing_row(db: Session, *, alg: str, cipher: DataCipher, clock: Clock) -> SigningKey:
    if alg not in ALGORITHMS:
        raise UnsupportedAlgorithmError(alg)
    row = active_key(db, ALGORITHMS[alg])
    if row is None:
        ensure_keys(db, cipher=cipher, clock=clock)
        row = active_key(db, ALGORITHMS[alg])
    return row


def signing_key(db: Session, *, alg: str, cipher: DataCipher, clock: Clock):
    """(kid, joserfc private key) for ``alg``."""
    row = signing_row(db, alg=alg, cipher=cipher, clock=clock)
    return row.kid, _import_private(row.kid, row.private_jwk_encrypted, cipher)


@functools.lru_cache(maxsize=16)
def _import_private(kid: str, encrypted: str, cipher: DataCipher):
    """Loading an RSA key runs a consistency check costing tens of milliseconds: do it once
    per process. Keyed by the ciphertext, so a rotated or replaced key is never served."""
    return import_key(json.loads(cipher.decrypt(encrypted, aad=_aad(kid))))


def public_jwks(db: Session, *, clock: Clock) -> dict:
    horizon = clock.now() - RETIRED_KEY_GRACE
    rows = db.execute(
        select(SigningKey).where(
            (SigningKey.retired_at.is_(None)) | (SigningKey.retired_at > horizon)
        )
    ).scalars()
    keys = []
    for row in rows:
        keys.append({**json.loads(row.public_jwk), "kid": row.kid, "use": "sig"})
    return {"keys": keys}
