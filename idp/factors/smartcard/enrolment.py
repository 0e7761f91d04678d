"""CPS cards on the account: enrolment on first use, activation of an invited account.

A card is enrolled the first time a verified certificate carrying the practitioner's RPPS logs
in (a renewed card is a new certificate, so it enrols itself too). Removing a card blocks that
one certificate for good: presented again, it is refused instead of enrolled again, so a lost
card can be cut off without waiting for its revocation. Removal (``SmartcardMethod.remove``)
goes through the orchestrator, with the same last-factor rule as every factor; every change is
audited and rows are never deleted (NIST-12).
"""

from __future__ import annotations

from cryptography import x509
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp import audit
from idp.clock import Clock
from idp.factors.smartcard.verify import CardIdentity
from idp.models import Invitation, Practitioner, PractitionerStatus, Smartcard

MAX_ISSUER_LENGTH = 500


class CardEnrolmentConflictError(Exception):
    """The same certificate was enrolled concurrently, or belongs to another account."""


def find_card(db: Session, *, fingerprint: str) -> Smartcard | None:
    return db.execute(
        select(Smartcard).where(Smartcard.fingerprint_sha256 == fingerprint)
    ).scalar_one_or_none()


def enrol_card(
    db: Session,
    *,
    practitioner: Practitioner,
    identity: CardIdentity,
    certificate: x509.Certificate,
    clock: Clock,
) -> Smartcard:
    """Store the card's certificate details (no key material: the key never leaves the card)."""
    card = Smartcard(
        practitioner_id=practitioner.id,
        fingerprint_sha256=identity.certificate_fingerprint_sha256,
        id_nat=identity.id_nat,
        issuer_dn=certificate.issuer.rfc4514_string()[:MAX_ISSUER_LENGTH],
        serial=f"{certificate.serial_number:x}",
        not_after=identity.not_after,
        created_at=clock.now(),
    )
    db.add(card)
    try:
        db.flush()
    except IntegrityError as exc:  # the same new card logging in twice at the same moment
        raise CardEnrolmentConflictError() from exc
    audit.record(
        db,
        "account:two_factor:method_added",
        practitioner_id=practitioner.id,
        method="smartcard",
        card=card.id,
        id_nat=card.id_nat,
        serial=card.serial,
        issuer=card.issuer_dn,
    )
    return card


def activate_with_card(db: Session, *, practitioner: Practitioner, clock: Clock) -> bool:
    """An invited practitioner's first card login completes the invitation.

    Outstanding invitation links are burned: the account now has a factor, and a leaked link
    must not let anyone add a password and an authenticator app to it.
    """
    now = clock.now()
    activated = db.execute(
        update(Practitioner)
        .where(
            Practitioner.id == practitioner.id,
            Practitioner.status == PractitionerStatus.INVITED,
        )
        .values(status=PractitionerStatus.ACTIVE)
        .execution_options(synchronize_session=False)
    ).rowcount
    if activated != 1:
        return False
    db.execute(
        update(Invitation)
        .where(Invitation.practitioner_id == practitioner.id, Invitation.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    db.refresh(practitioner)
    audit.record(
        db, "account:invitation:accepted", practitioner_id=practitioner.id, method="smartcard"
    )
    return True
