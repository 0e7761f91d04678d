"""Recovery codes as an authentication method: a limited one (``limited = True``).

A correct code after the password opens a limited login that can only bind a new factor
(``idp.auth.policy``); it is never a factor itself: it does not count for "the last factor",
for the levels or for the choice after a password (``idp.auth.registry``).
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from idp import audit
from idp.auth import assurance
from idp.auth.contract import Attempt, Enrolment, MethodError, NoSuchEnrolmentError, Verified
from idp.factors.recovery import verify as codes
from idp.models import Practitioner, RecoveryCode
from idp.notifications import notify

AMR = ("pwd", "recovery")
"""Never in a token: a limited login reaches no application."""


class InvalidRecoveryCodeError(MethodError):
    """Malformed, unknown, someone else's or already used: one answer for all (no oracle)."""

    code = "invalid_recovery_code"


def unused(practitioner_id: int):
    return (RecoveryCode.practitioner_id == practitioner_id, RecoveryCode.used_at.is_(None))


def consume(db: Session, *, practitioner_id: int, code: str, now: dt.datetime) -> bool:
    """Atomically: of concurrent requests with the same code, exactly one updates the row."""
    try:
        hashed = codes.code_hash(code)
    except codes.MalformedCodeError:
        return False
    result = db.execute(
        update(RecoveryCode)
        .where(*unused(practitioner_id), RecoveryCode.code_hash == hashed)
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def invalidate(db: Session, practitioner_id: int, *, now: dt.datetime) -> int:
    """Every unused code of the practitioner is used up; returns how many were."""
    result = db.execute(
        update(RecoveryCode)
        .where(*unused(practitioner_id))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


REMAINING = (
    select(func.count())
    .select_from(RecoveryCode)
    .where(*unused(bindparam("practitioner_id", type_=RecoveryCode.practitioner_id.type)))
)
"""Built once: a sign-in page asks whether to offer a recovery code."""


def remaining(db: Session, practitioner_id: int) -> int:
    return db.execute(REMAINING, {"practitioner_id": practitioner_id}).scalar_one()


def unused_codes(db: Session, practitioner_id: int) -> list[RecoveryCode]:
    return list(
        db.execute(
            select(RecoveryCode).where(*unused(practitioner_id)).order_by(RecoveryCode.id)
        ).scalars()
    )


class RecoveryMethod:
    kind: ClassVar[str] = "recovery"
    limiter: ClassVar[str] = "recovery"
    identifies: ClassVar[bool] = False
    standalone: ClassVar[bool] = False
    limited: ClassVar[bool] = True
    login_endpoint: ClassVar[str] = "recovery.login"
    invitation_endpoint: ClassVar[str | None] = None
    account_template: ClassVar[str] = "factors/recovery_account.html"
    add_endpoint: ClassVar[str | None] = None
    enrolment_field: ClassVar[str] = "code_id"
    choice_label: ClassVar[str] = _l("A recovery code")
    choice_description: ClassVar[str] = _l(
        "Type one of the codes you saved: it only lets you add a new sign-in method."
    )
    confirm_label: ClassVar[str] = _l("Use a recovery code")
    confirm_template: ClassVar[str | None] = None
    messages: ClassVar[dict] = {
        "invalid_recovery_code": _l(
            "This recovery code is not valid or was already used. Check it and try again."
        ),
    }
    landing_endpoint: ClassVar[str] = "recovery.landing"
    new_codes_endpoint: ClassVar[str] = "recovery.new_codes"

    def finish(self, db: Session, attempt: Attempt, answer) -> Verified:
        """One unused code of the practitioner the password named, consumed at once."""
        practitioner_id = attempt.practitioner_id
        if practitioner_id is None or not consume(
            db, practitioner_id=practitioner_id, code=answer.get("code") or "", now=attempt.now
        ):
            raise InvalidRecoveryCodeError()
        left = remaining(db, practitioner_id)
        notify(db, db.get(Practitioner, practitioner_id), "recovery_codes_used", remaining=left)
        return Verified(
            practitioner_id, acr=assurance.RECOVERY, amr=AMR, details={"remaining": left}
        )

    def refused(self, db: Session, attempt: Attempt, error: MethodError) -> None:
        pass

    def begin(self, db: Session, attempt: Attempt) -> dict:
        """Nothing to send: the practitioner has the codes on paper."""
        return {}

    def begin_enrol(self, db: Session, attempt: Attempt) -> dict:
        """Codes are issued as a set (``issue``), never bound one by one like a factor."""
        raise NoSuchEnrolmentError()

    def finish_enrol(self, db: Session, attempt: Attempt, answer) -> Enrolment:
        raise NoSuchEnrolmentError()

    def issue(self, db: Session, practitioner_id: int, *, now: dt.datetime, reason: str):
        """Ten new codes; every unused code of the old set stops working in the same unit of
        work. Only their hashes are stored; the plaintext is returned to be shown once."""
        replaced = invalidate(db, practitioner_id, now=now)
        plaintext = codes.new_codes()
        db.add_all(
            RecoveryCode(
                practitioner_id=practitioner_id, code_hash=codes.code_hash(code), created_at=now
            )
            for code in plaintext
        )
        db.flush()
        audit.record(
            db,
            "account:recovery:codes_generated",
            practitioner_id=practitioner_id,
            count=len(plaintext),
            replaced=replaced,
            reason=reason,
        )
        if reason != "first_factor":
            notify(db, db.get(Practitioner, practitioner_id), "recovery_codes_regenerated")
        return plaintext

    def remaining(self, db: Session, practitioner_id: int) -> int:
        return remaining(db, practitioner_id)

    def enrolments(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> list[Enrolment]:
        """Each unused code (the account page shows how many are left and since when)."""
        return [
            Enrolment(
                kind=self.kind,
                id=row.id,
                name="recovery code",  # not shown: the account page counts them
                level=assurance.RECOVERY,
                created_at=row.created_at,
                record=row,
            )
            for row in unused_codes(db, practitioner_id)
        ]

    def remove(self, db: Session, practitioner_id: int, enrolment_id: int, *, now: dt.datetime):
        """Codes are never removed one by one: a new set replaces them."""
        raise NoSuchEnrolmentError()

    def revoke_all(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> int:
        return invalidate(db, practitioner_id, now=now)
