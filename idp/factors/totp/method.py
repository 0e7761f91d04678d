"""An authenticator app (TOTP, RFC 6238) as an authentication method."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.auth import assurance
from idp.auth.contract import Enrolment, NoSuchEnrolmentError
from idp.models import TotpDevice


def active_devices(db: Session, practitioner_id: int) -> list[TotpDevice]:
    return list(
        db.execute(
            select(TotpDevice)
            .where(
                TotpDevice.practitioner_id == practitioner_id,
                TotpDevice.confirmed_at.is_not(None),
                TotpDevice.removed_at.is_(None),
            )
            .order_by(TotpDevice.id)
        ).scalars()
    )


class TotpMethod:
    kind: ClassVar[str] = "totp"
    limiter: ClassVar[str] = "2fa"
    identifies: ClassVar[bool] = False
    standalone: ClassVar[bool] = False
    login_endpoint: ClassVar[str] = "auth.login_totp"
    account_template: ClassVar[str] = "factors/totp_account.html"
    enrolment_field: ClassVar[str] = "device_id"
    messages: ClassVar[dict] = {
        "invalid_code": _l("Incorrect code. Wait for the next code in your app and try again."),
    }

    def enrolments(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> list[Enrolment]:
        return [
            Enrolment(
                kind=self.kind,
                id=device.id,
                name=device.name,
                level=assurance.SUBSTANTIAL,
                created_at=device.created_at,
                last_used_at=device.last_used_at,
                record=device,
            )
            for device in active_devices(db, practitioner_id)
        ]

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
