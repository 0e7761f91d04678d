"""Finishing an invitation: the invited practitioner's first factor is bound, the account opens.

Whichever factor the practitioner binds, the binding and the acceptance are one transaction:
the factor's view commits both together, or neither. The first set of recovery codes (the
registry's limited method, when the deployment runs one) is issued in that same transaction.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update
from sqlalchemy.orm import Session

from idp import audit, mail
from idp.models import Invitation, Practitioner, PractitionerStatus
from idp.services import methods


class InvitationInvalidError(Exception):
    """Unknown, expired or already used invitation."""


def accept_invitation(
    db: Session, *, invitation: Invitation, now: dt.datetime, codes: list[str] | None = None
) -> Practitioner:
    """Single use, atomically: two tabs finishing enrolment cannot both activate.

    The account's first recovery codes are issued here (their plaintext appended to ``codes``,
    for the caller to show once after the commit)."""
    result = db.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise InvitationInvalidError()
    practitioner = db.get(Practitioner, invitation.practitioner_id)
    practitioner.status = PractitionerStatus.ACTIVE
    mail.remember_language(db, practitioner.id)  # their emails' language
    audit.record(db, "account:invitation:accepted", practitioner_id=practitioner.id)
    limited = methods().limited_method()
    if limited is not None:
        issued = limited.issue(db, practitioner.id, now=now, reason="first_factor")
        if codes is not None:
            codes.extend(issued)
    return practitioner
