"""Security keys and passkeys (WebAuthn) as an authentication method."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.auth import assurance
from idp.auth.contract import Enrolment, NoSuchEnrolmentError
from idp.models import WebAuthnCredential


def level_of(credential: WebAuthnCredential) -> str:
    """phrh only for an attested key that can never leave its device (NIST-17, AMR-02)."""
    return assurance.HIGH if credential.hardware_bound else assurance.PHISHING_RESISTANT


def listed_credentials(db: Session, practitioner_id: int) -> list[WebAuthnCredential]:
    """Everything not removed, blocked ones included (the account page shows them)."""
    return list(
        db.execute(
            select(WebAuthnCredential)
            .where(
                WebAuthnCredential.practitioner_id == practitioner_id,
                WebAuthnCredential.removed_at.is_(None),
            )
            .order_by(WebAuthnCredential.created_at, WebAuthnCredential.id)
        ).scalars()
    )


class WebAuthnMethod:
    kind: ClassVar[str] = "webauthn"
    limiter: ClassVar[str] = "webauthn"
    identifies: ClassVar[bool] = True  # a passkey, alone
    standalone: ClassVar[bool] = False  # after a password, the default choice
    invitation_endpoint: ClassVar[str | None] = None
    login_endpoint: ClassVar[str] = "webauthn.login"
    account_template: ClassVar[str] = "factors/webauthn_account.html"
    enrolment_field: ClassVar[str] = "credential"
    switch_label: ClassVar[str] = _l("Use a security key or passkey instead")
    messages: ClassVar[dict] = {}

    def enrolments(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> list[Enrolment]:
        return [
            Enrolment(
                kind=self.kind,
                id=credential.id,
                name=credential.name,
                level=level_of(credential),
                usable=credential.is_usable,
                created_at=credential.created_at,
                last_used_at=credential.last_used_at,
                record=credential,
            )
            for credential in listed_credentials(db, practitioner_id)
        ]

    def remove(self, db: Session, practitioner_id: int, enrolment_id: int, *, now: dt.datetime):
        credential = db.get(WebAuthnCredential, enrolment_id)
        if (
            credential is None
            or credential.practitioner_id != practitioner_id
            or credential.removed_at is not None
        ):
            raise NoSuchEnrolmentError()
        credential.removed_at = now

    def revoke_all(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> int:
        credentials = listed_credentials(db, practitioner_id)
        for credential in credentials:
            credential.removed_at = now
        return len(credentials)
