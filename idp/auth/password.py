"""The first factor: identifier and password, checked through the orchestrator like any factor.

It is not in the registry (the registry holds the second factors a practitioner enrols); it
implements the part of the contract a login step needs: ``finish`` names who answers as soon
as it knows (``Attempt.claim``), so their account's limiter is reserved before the hash is
compared, and an unknown identifier counts on a hashed key of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from idp.auth.contract import Attempt, MethodError, Verified
from idp.models import Practitioner
from idp.services import passwords


class InvalidCredentialsError(MethodError):
    """Wrong identifier or password; deliberately says nothing about which."""

    code = "invalid_credentials"


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


class PasswordMethod:
    kind: ClassVar[str] = "password"
    limiter: ClassVar[str] = "login"

    def finish(self, db: Session, attempt: Attempt, answer: Mapping[str, Any]) -> Verified:
        identifier = answer.get("identifier") or ""
        practitioner = find_practitioner(db, identifier)
        attempt.claim(practitioner.id if practitioner else unknown_subject(identifier))
        stored = practitioner.password_hash if practitioner else None
        password = answer.get("password") or ""
        if not passwords().verify(stored, password):
            raise InvalidCredentialsError()
        upgrade_hash(practitioner, password)
        return Verified(practitioner.id, acr="", amr=("pwd",))

    def refused(self, db: Session, attempt: Attempt, error: MethodError) -> None:
        pass


def upgrade_hash(practitioner: Practitioner, password: str) -> None:
    """A hash made with older argon2id parameters is replaced now that the password is known:
    left on the session, it is written by the orchestrator's one commit for this answer (also
    when the account is then refused: the password itself was right)."""
    if passwords().needs_rehash(practitioner.password_hash):
        practitioner.password_hash = passwords().hash(password)


PASSWORD = PasswordMethod()
