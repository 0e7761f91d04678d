"""Login steps: password, then a second factor. Owns throttling, replay checks and audit.

Views call these functions and only translate the typed errors into pages.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.auth import assurance
from idp.auth.contract import AccountUnavailableError, LoginRestartError, MethodError
from idp.auth.devices import Client
from idp.auth.flow import Authentication
from idp.models import WebAuthnCredential
from idp.ratelimit import SECOND_STEP_FAILURES, Reservation, key
from idp.services import clock, methods

__all__ = ["AccountUnavailableError", "Authentication", "LoginRestartError"]  # shared errors

LoginError = MethodError


def second_step_keys(step: str, *, practitioner_id: int, client: Client, login: str) -> list:
    """An answer after the password counts on the address, the account (or this browser's
    device) and the login in progress."""
    return [
        key(f"{step}.ip", client.ip),
        *client.account_keys(step, practitioner_id),
        key("2fa.login", login),
    ]


def refuse_second_step(reservation: Reservation, error: Exception) -> Exception:
    """The error to raise after a failed second-step answer: the login restarts after a few."""
    if reservation.count("2fa.login") >= SECOND_STEP_FAILURES:
        return LoginRestartError()
    return error


def usable_webauthn_credentials(db: Session, practitioner_id: int) -> list[WebAuthnCredential]:
    """Credentials that can still log in: not removed, not blocked as a possible clone."""
    return list(
        db.execute(
            select(WebAuthnCredential)
            .where(
                WebAuthnCredential.practitioner_id == practitioner_id,
                WebAuthnCredential.removed_at.is_(None),
                WebAuthnCredential.flagged_at.is_(None),
            )
            .order_by(WebAuthnCredential.id)
        ).scalars()
    )


def webauthn_level(credential: WebAuthnCredential) -> str:
    """phrh only for an attested key that can never leave its device (NIST-17, AMR-02)."""
    return assurance.HIGH if credential.hardware_bound else assurance.PHISHING_RESISTANT


def usable_factor_count(
    db: Session, practitioner_id: int, *, now: dt.datetime | None = None
) -> int:
    """Second factors that can still log in, over every method; never drop to zero."""
    return methods().usable_count(db, practitioner_id, now=now or clock().now())


def highest_level(
    db: Session, practitioner_id: int, *, now: dt.datetime | None = None
) -> str | None:
    """The strongest acr the practitioner's usable factors can reach."""
    return methods().highest_level(db, practitioner_id, now=now or clock().now())
