"""The CPS card and its PIN as an authentication method: a whole login by itself."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.auth import assurance
from idp.auth.contract import Enrolment, NoSuchEnrolmentError
from idp.models import Smartcard


def listed_cards(db: Session, practitioner_id: int) -> list[Smartcard]:
    """Every card not removed, expired ones included (the account page shows them)."""
    return list(
        db.execute(
            select(Smartcard)
            .where(Smartcard.practitioner_id == practitioner_id, Smartcard.removed_at.is_(None))
            .order_by(Smartcard.created_at, Smartcard.id)
        ).scalars()
    )


class SmartcardMethod:
    kind: ClassVar[str] = "smartcard"
    limiter: ClassVar[str] = "smartcard"
    identifies: ClassVar[bool] = True
    standalone: ClassVar[bool] = True  # card + PIN: a whole login by itself
    invitation_endpoint: ClassVar[str | None] = None
    login_endpoint: ClassVar[str] = "smartcard.login"
    account_template: ClassVar[str] = "factors/smartcard_account.html"
    enrolment_field: ClassVar[str] = "card"
    switch_label: ClassVar[str] = _l("Use my CPS card instead")
    login_label: ClassVar[str] = _l("Sign in with my CPS card")
    login_option_template: ClassVar[str] = "factors/smartcard_login_option.html"
    messages: ClassVar[dict] = {}

    def __init__(self, trust) -> None:
        self.trust = trust

    def enrolments(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> list[Enrolment]:
        return [
            Enrolment(
                kind=self.kind,
                id=card.id,
                name=card.serial,
                level=assurance.HIGH,
                usable=card.not_after > now,
                created_at=card.created_at,
                last_used_at=card.last_used_at,
                record=card,
            )
            for card in listed_cards(db, practitioner_id)
        ]

    def remove(self, db: Session, practitioner_id: int, enrolment_id: int, *, now: dt.datetime):
        card = db.get(Smartcard, enrolment_id)
        if card is None or card.practitioner_id != practitioner_id or card.removed_at is not None:
            raise NoSuchEnrolmentError()
        card.removed_at = now

    def revoke_all(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> int:
        cards = listed_cards(db, practitioner_id)
        for card in cards:
            card.removed_at = now
        return len(cards)
