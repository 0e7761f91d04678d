"""Single-use, short-lived challenges for factor ceremonies (WebAuthn now, smart card next).

A challenge lives in the database (any process may serve the next request) and its id in the
browser session, which binds it to that browser. ``consume`` claims it with one
``UPDATE ... WHERE used_at IS NULL AND expires_at > now`` that must touch exactly one row, and
commits at once, *before* the caller verifies anything: a replayed or concurrent response
finds the row already used, and a failed verification cannot hand the challenge back
(STANDARDS C7, WA-01, SC-02).
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from idp.clock import Clock
from idp.crypto import new_token
from idp.models import AuthChallenge

CHALLENGE_BYTES = 32
CHALLENGE_TTL = dt.timedelta(minutes=5)
MAX_ID_LENGTH = 64


class ChallengeError(Exception):
    pass


class ChallengeInvalidError(ChallengeError):
    """Unknown, already used, expired, or issued for another purpose: one error for all."""


def issue(
    db: Session,
    *,
    purpose: str,
    practitioner_id: int | None,
    clock: Clock,
    ttl: dt.timedelta = CHALLENGE_TTL,
    nbytes: int = CHALLENGE_BYTES,
) -> tuple[str, bytes]:
    """Store a fresh random challenge; returns (id for the session, challenge bytes).

    Added to the caller's transaction, which commits it with whatever else it does.
    """
    if nbytes < 16:
        raise ValueError("a challenge needs at least 128 bits")
    now = clock.now()
    purge_expired(db, clock=clock)
    challenge_id = new_token(32)
    challenge = secrets.token_bytes(nbytes)
    db.add(
        AuthChallenge(
            id=challenge_id,
            purpose=purpose,
            practitioner_id=practitioner_id,
            challenge=challenge,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    return challenge_id, challenge


def consume(db: Session, *, challenge_id: str | None, purpose: str, clock: Clock) -> AuthChallenge:
    """Claim the challenge for this one verification, and commit the claim.

    The one place infrastructure commits the caller's session, on purpose: a verification
    calls this before it writes anything, so the commit holds the claim alone, and it must be
    durable before anything is verified. (On a connection of its own the claim would wait on
    SQLite's single writer whenever a caller still held a write.)"""
    if not challenge_id or not isinstance(challenge_id, str) or len(challenge_id) > MAX_ID_LENGTH:
        raise ChallengeInvalidError()
    now = clock.now()
    claimed = db.execute(
        update(AuthChallenge)
        .where(
            AuthChallenge.id == challenge_id,
            AuthChallenge.purpose == purpose,
            AuthChallenge.used_at.is_(None),
            AuthChallenge.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.commit()
    if claimed != 1:
        raise ChallengeInvalidError()
    return db.execute(
        select(AuthChallenge)
        .where(AuthChallenge.id == challenge_id)
        .execution_options(populate_existing=True)
    ).scalar_one()


def discard(db: Session, *, challenge_id: str | None) -> None:
    """Drop a challenge superseded in the same session (a second click, a reloaded page)."""
    if challenge_id:
        db.execute(
            delete(AuthChallenge).where(
                AuthChallenge.id == challenge_id, AuthChallenge.used_at.is_(None)
            )
        )


def purge_expired(db: Session, *, clock: Clock) -> None:
    """Expired rows can never be consumed again: keep the table small."""
    db.execute(delete(AuthChallenge).where(AuthChallenge.expires_at <= clock.now()))
