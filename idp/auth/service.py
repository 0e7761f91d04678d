"""Login steps: password, then a second factor. Owns throttling, replay checks and audit.

Views call these functions and only translate the typed errors into pages.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from idp import audit
from idp.auth import assurance
from idp.auth.devices import Client
from idp.auth.flow import Authentication
from idp.clock import Clock
from idp.crypto import DataCipher, verify_password
from idp.factors.totp import verify as totp
from idp.models import (
    Practitioner,
    PractitionerStatus,
    Smartcard,
    TotpDevice,
    WebAuthnCredential,
)
from idp.ratelimit import (
    SECOND_STEP_FAILURES,
    Reservation,
    Throttle,
    key,
)


class LoginError(Exception):
    pass


class InvalidCredentialsError(LoginError):
    """Wrong identifier or password; deliberately says nothing about which."""


class AccountUnavailableError(LoginError):
    """Correct password, but the account is locked or disabled."""


class LoginRestartError(LoginError):
    """Too many wrong answers at the second step: the login starts again at the password."""


def find_practitioner(db: Session, identifier: str) -> Practitioner | None:
    identifier = (identifier or "").strip()
    if not identifier or len(identifier) > 254 or not identifier.isprintable():
        return None  # control characters (NUL) never match and must not reach the database
    return db.execute(
        select(Practitioner).where(
            or_(Practitioner.rpps == identifier, Practitioner.email == identifier.lower())
        )
    ).scalar_one_or_none()


def unknown_subject(identifier: str) -> str:
    """Throttle key for an identifier matching no account: hashed, because people do type
    their password into the identifier field."""
    normalised = (identifier or "").strip().lower().encode("utf-8", "replace")
    return "?" + hashlib.sha256(normalised).hexdigest()[:32]


def check_password(
    db: Session, *, identifier: str, password: str, client: Client, throttle: Throttle
) -> Practitioner:
    practitioner = find_practitioner(db, identifier)
    subject = practitioner.id if practitioner else unknown_subject(identifier)
    keys = [key("login.ip", client.ip), *client.account_keys("login", subject)]
    reservation = throttle.reserve(keys)
    stored = practitioner.password_hash if practitioner else None
    if not verify_password(stored, password or ""):
        audit.record(
            db,
            "auth:password:failed",
            practitioner_id=practitioner.id if practitioner else None,
        )
        db.commit()
        raise InvalidCredentialsError()
    if practitioner.status != PractitionerStatus.ACTIVE:
        audit.record(
            db, "auth:password:refused", practitioner_id=practitioner.id, status=practitioner.status
        )
        db.commit()
        throttle.succeeded(reservation)  # the password was right: no guess
        raise AccountUnavailableError(practitioner.status)
    audit.record(db, "auth:password:succeeded", practitioner_id=practitioner.id)
    db.commit()
    throttle.succeeded(reservation)  # after the commit: the throttle writes on its own
    return practitioner


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


def active_totp_devices(db: Session, practitioner_id: int) -> list[TotpDevice]:
    return list(
        db.execute(
            select(TotpDevice).where(
                TotpDevice.practitioner_id == practitioner_id,
                TotpDevice.confirmed_at.is_not(None),
                TotpDevice.removed_at.is_(None),
            )
        ).scalars()
    )


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


def usable_smartcards(
    db: Session, practitioner_id: int, *, now: dt.datetime | None = None
) -> list[Smartcard]:
    """Enrolled CPS cards not removed (and, given ``now``, not expired)."""
    query = select(Smartcard).where(
        Smartcard.practitioner_id == practitioner_id, Smartcard.removed_at.is_(None)
    )
    if now is not None:
        query = query.where(Smartcard.not_after > now)
    return list(db.execute(query.order_by(Smartcard.id)).scalars())


def usable_factor_count(
    db: Session, practitioner_id: int, *, now: dt.datetime | None = None
) -> int:
    """Second factors that can still log in; an account must never drop to zero.

    A card counts although any new card with the same RPPS would enrol itself: the practitioner
    may not hold one, and an account must keep a factor it has actually used.
    """
    return (
        len(active_totp_devices(db, practitioner_id))
        + len(usable_webauthn_credentials(db, practitioner_id))
        + len(usable_smartcards(db, practitioner_id, now=now))
    )


def highest_level(db: Session, practitioner_id: int) -> str | None:
    """The strongest acr the practitioner's usable factors can reach."""
    levels = [webauthn_level(c) for c in usable_webauthn_credentials(db, practitioner_id)]
    if active_totp_devices(db, practitioner_id):
        levels.append(assurance.SUBSTANTIAL)
    if usable_smartcards(db, practitioner_id):
        levels.append(assurance.HIGH)
    return max(levels, key=assurance.rank) if levels else None


def consume_totp_step(db: Session, *, device: TotpDevice, step: int, clock: Clock) -> bool:
    """Atomically claim a time step: of two concurrent requests only one updates the row."""
    result = db.execute(
        update(TotpDevice)
        .where(
            TotpDevice.id == device.id,
            or_(TotpDevice.last_used_step.is_(None), TotpDevice.last_used_step < step),
        )
        .values(last_used_step=step, last_used_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def check_totp(
    db: Session,
    *,
    practitioner: Practitioner,
    code: str,
    login: str,
    client: Client,
    throttle: Throttle,
    clock: Clock,
    cipher: DataCipher,
) -> Authentication:
    """Every wrong code gets the same answer (InvalidCodeError): a code that would be right
    in a few minutes, or one already used, must tell an attacker holding the password nothing."""
    keys = second_step_keys("2fa", practitioner_id=practitioner.id, client=client, login=login)
    reservation = throttle.reserve(keys)
    for device in active_totp_devices(db, practitioner.id):
        secret = totp_secret(device, cipher)
        try:
            step = totp.verify(
                secret=secret, code=code, now=clock.now(), last_used_step=device.last_used_step
            )
        except totp.TotpError:
            continue
        if consume_totp_step(db, device=device, step=step, clock=clock):
            audit.record(
                db, "auth:totp:succeeded", practitioner_id=practitioner.id, device_id=device.id
            )
            db.commit()
            throttle.succeeded(reservation)
            return Authentication(practitioner.id, ("pwd", "otp", "mfa"), assurance.SUBSTANTIAL)
        db.rollback()
    audit.record(db, "auth:totp:failed", practitioner_id=practitioner.id)
    db.commit()
    raise refuse_second_step(reservation, totp.InvalidCodeError())


def totp_aad(device: TotpDevice) -> str:
    """Binds a ciphertext to its row: a seed copied to another row or practitioner won't
    decrypt. The row must have its id (flushed) before its seed is encrypted."""
    if device.id is None:
        raise ValueError("flush the device before encrypting its seed")
    return f"totp:{device.id}:{device.practitioner_id}"


def totp_secret(device: TotpDevice, cipher: DataCipher) -> str:
    return cipher.decrypt(device.secret_encrypted, aad=totp_aad(device)).decode()
