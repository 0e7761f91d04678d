"""'Forgot your password?' for a practitioner who still has their factors.

An emailed link alone never changes anything: it only stands in for the password step of a
login (``idp.auth.flow.PasswordResetInProgress``). The practitioner then proves one of their
enrolled factors on the usual second-step pages, and only then chooses a new password; the
link is consumed atomically with the change, every session of the account ends, and they sign
in again with the new password.

The request page answers the same whatever was typed (an account or not, active or not,
throttled or not): no one learns which accounts exist. An address may ask a few times an hour
(``password_reset.ip``, a visible wait), an account gets a few links an hour
(``password_reset.account``, silent: no email, same page), so the link cannot flood a mailbox.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp import audit
from idp.accounts import service
from idp.auth.password import find_practitioner
from idp.crypto import hash_token, new_token
from idp.models import PasswordReset, Practitioner, PractitionerStatus
from idp.notifications import notify
from idp.ratelimit import Throttle, ThrottledError, key

RESET_TTL = dt.timedelta(hours=1)
"""NIST SP 800-63B allows an emailed secret up to 24 hours; one hour is enough."""
MAX_TOKEN_LENGTH = 100


class ResetInvalidError(Exception):
    """Unknown, expired, already used, or its account cannot sign in."""


def request_reset(
    db: Session,
    identifier: str,
    *,
    ip: str,
    throttle: Throttle,
    methods,
    now: dt.datetime,
    issuer: str,
) -> str | None:
    """Email a reset link if ``identifier`` names an active practitioner with a usable
    factor; returns the token (for the caller's tests, never shown), or None.

    Raises ThrottledError only for the address (it says nothing about any account). The
    caller commits."""
    throttle.reserve([key("password_reset.ip", ip)])
    practitioner = find_practitioner(db, identifier)
    if (
        practitioner is None
        or practitioner.status != PractitionerStatus.ACTIVE
        or methods.usable_count(db, practitioner.id, now=now) < 1
    ):
        return None
    try:
        throttle.reserve([key("password_reset.account", practitioner.id)])
    except ThrottledError:
        return None  # silent: the same page, no email
    db.execute(
        update(PasswordReset)
        .where(
            PasswordReset.practitioner_id == practitioner.id,
            PasswordReset.used_at.is_(None),
            PasswordReset.expires_at > now,
        )
        .values(expires_at=now)
    )
    token = new_token(32)
    reset = PasswordReset(
        practitioner_id=practitioner.id,
        token_hash=hash_token(token),
        created_at=now,
        expires_at=now + RESET_TTL,
    )
    db.add(reset)
    db.flush()
    audit.record(
        db, "account:password:reset_requested", practitioner_id=practitioner.id, reset=reset.id
    )
    notify(db, practitioner, "password_reset", link=f"{issuer}/password/reset/{token}")
    return token


def find_reset(db: Session, token: str, *, now: dt.datetime) -> PasswordReset:
    """The open reset this link names, for an active practitioner; else ResetInvalidError."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise ResetInvalidError()
    reset = db.execute(
        select(PasswordReset).where(PasswordReset.token_hash == hash_token(token))
    ).scalar_one_or_none()
    if (
        reset is None
        or usable_reset(db, reset_id=reset.id, practitioner_id=reset.practitioner_id, now=now)
        is None
    ):
        raise ResetInvalidError()
    return reset


def usable_reset(
    db: Session, *, reset_id: object, practitioner_id: object, now: dt.datetime
) -> tuple[Practitioner, PasswordReset] | None:
    """The reset, if still open and its practitioner still active."""
    if not isinstance(reset_id, int) or not isinstance(practitioner_id, int):
        return None
    reset = db.get(PasswordReset, reset_id)
    if (
        reset is None
        or reset.practitioner_id != practitioner_id
        or reset.used_at is not None
        or reset.expires_at <= now
    ):
        return None
    practitioner = db.get(Practitioner, practitioner_id)
    if practitioner is None or practitioner.status != PractitionerStatus.ACTIVE:
        return None
    return practitioner, reset


def complete_reset(
    db: Session,
    *,
    practitioner: Practitioner,
    reset_id: int,
    password: str,
    now: dt.datetime,
    sessions,
) -> int:
    """Consume the reset (once, atomically), replace the password, audit and notify in one
    unit of work, committed here; then end every session of the account (``sessions``: the
    session store, which writes on its own connection). Returns how many sessions ended.

    Raises ResetInvalidError when the reset was used meanwhile (a concurrent submission won)
    or has expired: nothing changes then."""
    consumed = db.execute(
        update(PasswordReset)
        .where(
            PasswordReset.id == reset_id,
            PasswordReset.practitioner_id == practitioner.id,
            PasswordReset.used_at.is_(None),
            PasswordReset.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if consumed != 1:
        db.rollback()
        raise ResetInvalidError()
    practitioner.password_hash = service.hashed_password(password)
    audit.record(db, "account:password:reset", practitioner_id=practitioner.id, reset=reset_id)
    notify(db, practitioner, "password_changed")
    db.commit()
    # After the commit: a session signed in before now used the old password and ends; the
    # store is not the request's transaction (SQLite would wait on its own write lock).
    return sessions.delete_for(practitioner.id)
