"""ID token signing keys: generated on first use, encrypted at rest, published in the JWKS.

One RSA 2048 key serves RS256 (the OIDC default) and PS256; one P-256 key serves ES256.
Rotation keeps retired keys published for ``RETIRED_KEY_GRACE`` so relying parties can still
verify tokens signed just before.

Each process keeps its keys, decrypted, and its JWKS document, serialised with its ETag, in a
``KeyRing``. The table's stamp (how many keys, the newest creation and retirement) is read at
most once every ``STAMP_CHECK_SECONDS``: one tiny query on a table of a few rows. A rotation in
this process is seen at once, one in another process within that delay (tokens signed with a
just-retired key stay verifiable: retired keys stay published).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace

from joserfc.jwk import ECKey, RSAKey, import_key
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from idp.clock import Clock
from idp.crypto import DataCipher
from idp.models import SigningKey

ALGORITHMS = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC"}
RETIRED_KEY_GRACE = dt.timedelta(days=7)
STAMP_CHECK_SECONDS = 1.0


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
    KeyRing.changed_here()


def rotate_keys(db: Session, *, cipher: DataCipher, clock: Clock) -> list[str]:
    now = clock.now()
    for row in db.execute(select(SigningKey).where(SigningKey.retired_at.is_(None))).scalars():
        row.retired_at = now
    created = [create_key(db, kty=kty, cipher=cipher, clock=clock).kid for kty in ("RSA", "EC")]
    db.commit()
    KeyRing.changed_here()
    return created


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


@dataclass(frozen=True)
class Published:
    """A document served from memory: its bytes and their entity tag (unquoted)."""

    body: bytes
    etag: str


def published(document: dict) -> Published:
    body = json.dumps(document, separators=(",", ":")).encode()
    return Published(body, hashlib.sha256(body).hexdigest()[:32])


@dataclass(frozen=True)
class _Snapshot:
    stamp: tuple
    signing: dict  # kty -> (kid, private joserfc key)
    jwks: Published
    valid_until: float  # when a retired key leaves the JWKS: rebuild then
    checked_at: float


_STAMP = select(
    func.count(SigningKey.kid), func.max(SigningKey.created_at), func.max(SigningKey.retired_at)
)


class KeyRing:
    """This process's signing keys and JWKS, rebuilt when the table's stamp changes.

    Reads go through the caller's session (``session``: a function returning the request's,
    called only when the stamp is due): a first use creates the keys in it, as the token
    endpoint would, with no second writer waiting on the first."""

    _rings: weakref.WeakSet[KeyRing] = weakref.WeakSet()

    def __init__(self, *, cipher: DataCipher, clock: Clock) -> None:
        self._cipher = cipher
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        KeyRing._rings.add(self)

    @classmethod
    def changed_here(cls) -> None:
        """Keys were created or retired by this process: every ring looks again."""
        for ring in list(cls._rings):
            ring._snapshot = None

    def signing_key(self, session: Callable[[], Session], alg: str) -> tuple[str, object]:
        """(kid, joserfc private key) for ``alg``."""
        if alg not in ALGORITHMS:
            raise UnsupportedAlgorithmError(alg)
        return self._current(session).signing[ALGORITHMS[alg]]

    def jwks(self, session: Callable[[], Session]) -> Published:
        return self._current(session).jwks

    def _current(self, session: Callable[[], Session]) -> _Snapshot:
        now = self._clock.now().timestamp()
        snapshot = self._snapshot
        if (
            snapshot is not None
            and now - snapshot.checked_at < STAMP_CHECK_SECONDS
            and now < snapshot.valid_until
        ):
            return snapshot
        with self._lock:
            db = session()
            stamp = tuple(db.execute(_STAMP).one())
            snapshot = self._snapshot
            if snapshot is not None and snapshot.stamp == stamp and now < snapshot.valid_until:
                snapshot = replace(snapshot, checked_at=now)
            else:
                snapshot = self._build(db, now)
            self._snapshot = snapshot
            return snapshot

    def _build(self, db: Session, now: float) -> _Snapshot:
        if active_key(db, "RSA") is None or active_key(db, "EC") is None:
            ensure_keys(db, cipher=self._cipher, clock=self._clock)
        stamp = tuple(db.execute(_STAMP).one())
        signing = {}
        for kty in ("RSA", "EC"):
            row = active_key(db, kty)
            signing[kty] = (
                row.kid,
                _import_private(row.kid, row.private_jwk_encrypted, self._cipher),
            )
        document = public_jwks(db, clock=self._clock)
        retired = db.execute(
            select(func.min(SigningKey.retired_at)).where(
                SigningKey.retired_at > self._clock.now() - RETIRED_KEY_GRACE
            )
        ).scalar()
        valid_until = (
            (retired + RETIRED_KEY_GRACE).timestamp() if retired is not None else float("inf")
        )
        return _Snapshot(
            stamp=stamp,
            signing=signing,
            jwks=published(document),
            valid_until=valid_until,
            checked_at=now,
        )
