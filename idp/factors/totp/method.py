"""An authenticator app (TOTP, RFC 6238) as an authentication method."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from idp.auth import assurance
from idp.auth.contract import Attempt, Enrolment, MethodError, NoSuchEnrolmentError, Verified
from idp.clock import Clock, FrozenClock
from idp.crypto import DataCipher
from idp.db import memoized
from idp.factors.totp import verify as totp
from idp.models import Practitioner, TotpDevice

AMR = ("pwd", "otp", "mfa")


class InvalidCodeError(MethodError):
    """Wrong, already used, or valid only at another time: one answer for all (no oracle)."""

    code = "invalid_code"


def totp_aad(device: TotpDevice) -> str:
    """Binds a ciphertext to its row: a seed copied to another row or practitioner won't
    decrypt. The row must have its id (flushed) before its seed is encrypted."""
    if device.id is None:
        raise ValueError("flush the device before encrypting its seed")
    return f"totp:{device.id}:{device.practitioner_id}"


def totp_secret(device: TotpDevice, cipher: DataCipher) -> str:
    return cipher.decrypt(device.secret_encrypted, aad=totp_aad(device)).decode()


def consume_totp_step(db: Session, *, device: TotpDevice, step: int, now: dt.datetime) -> bool:
    """Atomically claim a time step: of two concurrent requests only one updates the row."""
    result = db.execute(
        update(TotpDevice)
        .where(
            TotpDevice.id == device.id,
            or_(TotpDevice.last_used_step.is_(None), TotpDevice.last_used_step < step),
        )
        .values(last_used_step=step, last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def start_totp_enrolment(
    db: Session, *, practitioner: Practitioner, name: str, clock: Clock, cipher: DataCipher
) -> tuple[TotpDevice, str]:
    """A pending device: its seed only works once a correct code confirms it."""
    secret = totp.generate_secret()
    device = TotpDevice(
        practitioner_id=practitioner.id,
        name=(name or "Authenticator").strip()[:100],
        secret_encrypted="",
        created_at=clock.now(),
    )
    db.add(device)
    db.flush()  # the row's id is part of the seed's associated data
    device.secret_encrypted = cipher.encrypt(secret.encode(), aad=totp_aad(device))
    return device, secret


def pending_secret(device: TotpDevice, cipher: DataCipher) -> str:
    return totp_secret(device, cipher)


def confirm_totp_enrolment(
    db: Session, *, device: TotpDevice, code: str, clock: Clock, cipher: DataCipher
) -> None:
    step = totp.verify(
        secret=pending_secret(device, cipher), code=code, now=clock.now(), last_used_step=None
    )
    if not consume_totp_step(db, device=device, step=step, now=clock.now()):
        raise totp.ReplayedCodeError()
    device.confirmed_at = clock.now()


ACTIVE_DEVICES = (
    select(TotpDevice)
    .where(
        TotpDevice.practitioner_id == bindparam("practitioner_id"),
        TotpDevice.confirmed_at.is_not(None),
        TotpDevice.removed_at.is_(None),
    )
    .order_by(TotpDevice.id)
)
"""Built once: every sign-in with a code reads it."""


def active_devices(db: Session, practitioner_id: int) -> list[TotpDevice]:
    def read() -> list[TotpDevice]:
        params = {"practitioner_id": practitioner_id}
        return list(db.execute(ACTIVE_DEVICES, params).scalars())

    return list(memoized(db, ("totp devices", practitioner_id), read))


class TotpMethod:
    kind: ClassVar[str] = "totp"
    limiter: ClassVar[str] = "2fa"
    identifies: ClassVar[bool] = False
    standalone: ClassVar[bool] = False
    limited: ClassVar[bool] = False
    login_endpoint: ClassVar[str] = "totp.login"
    invitation_endpoint: ClassVar[str | None] = "totp.enrol"
    account_template: ClassVar[str] = "factors/totp_account.html"
    add_endpoint: ClassVar[str | None] = "totp.add"
    enrolment_field: ClassVar[str] = "device_id"
    choice_label: ClassVar[str] = _l("Code from my authenticator app")
    choice_description: ClassVar[str] = _l("Type the 6-digit code your app shows.")
    confirm_label: ClassVar[str] = _l("Enter a code from my authenticator app")
    confirm_template: ClassVar[str | None] = None
    messages: ClassVar[dict] = {
        "invalid_code": _l("Incorrect code. Wait for the next code in your app and try again."),
    }

    def __init__(self, cipher: DataCipher) -> None:
        self.cipher = cipher

    def finish(self, db: Session, attempt: Attempt, answer) -> Verified:
        """The code against each of the practitioner's apps; its time step is used once."""
        for device in active_devices(db, attempt.practitioner_id):
            try:
                step = totp.verify(
                    secret=totp_secret(device, self.cipher),
                    code=answer.get("code") or "",
                    now=attempt.now,
                    last_used_step=device.last_used_step,
                )
            except totp.TotpError:
                continue
            if consume_totp_step(db, device=device, step=step, now=attempt.now):
                return Verified(
                    attempt.practitioner_id,
                    acr=assurance.SUBSTANTIAL,
                    amr=AMR,
                    enrolment_id=device.id,
                    details={"device_id": device.id},
                )
            db.rollback()
        raise InvalidCodeError()

    def refused(self, db: Session, attempt: Attempt, error: MethodError) -> None:
        pass

    def begin_enrol(self, db: Session, attempt: Attempt) -> dict:
        """A pending app whose seed only works once a correct code confirms it."""
        device, _secret = start_totp_enrolment(
            db,
            practitioner=db.get(Practitioner, attempt.practitioner_id),
            name=str(_l("Authenticator app")),
            clock=FrozenClock(attempt.now),
            cipher=self.cipher,
        )
        return {"device": device.id}

    def begin(self, db: Session, attempt: Attempt) -> dict:
        """Nothing to send: the app computes its codes from the seed it scanned."""
        return {}

    def pending_device(self, db: Session, practitioner_id: int, device_id: object):
        device = db.get(TotpDevice, device_id) if isinstance(device_id, int) else None
        if device is None or device.practitioner_id != practitioner_id or device.confirmed_at:
            return None
        return device

    def finish_enrol(self, db: Session, attempt: Attempt, answer) -> Enrolment:
        """A correct code from the app confirms the pending seed (its step is used once)."""
        device = self.pending_device(db, attempt.practitioner_id, answer.get("device"))
        if device is None:
            raise NoSuchEnrolmentError()
        try:
            confirm_totp_enrolment(
                db,
                device=device,
                code=answer.get("code") or "",
                clock=FrozenClock(attempt.now),
                cipher=self.cipher,
            )
        except totp.TotpError as exc:
            raise InvalidCodeError() from exc
        return self._enrolment(device)

    def _enrolment(self, device: TotpDevice) -> Enrolment:
        return Enrolment(
            kind=self.kind,
            id=device.id,
            name=device.name,
            level=assurance.SUBSTANTIAL,
            created_at=device.created_at,
            last_used_at=device.last_used_at,
            record=device,
        )

    def enrolments(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> list[Enrolment]:
        return [self._enrolment(device) for device in active_devices(db, practitioner_id)]

    def remove(self, db: Session, practitioner_id: int, enrolment_id: int, *, now: dt.datetime):
        device = next(
            (d for d in active_devices(db, practitioner_id) if d.id == enrolment_id), None
        )
        if device is None:
            raise NoSuchEnrolmentError()
        device.removed_at = now

    def revoke_all(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> int:
        devices = active_devices(db, practitioner_id)
        for device in devices:
            device.removed_at = now
        return len(devices)
