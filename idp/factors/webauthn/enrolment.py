"""Security keys and passkeys on the account: registration and renaming.

Binding follows NIST-10: the login must be at least min(the account's strongest level, the new
credential's level). Removal is the orchestrator's (idp.auth.orchestrator: the last-factor rule
over every method). Every change is audited, and removed credentials stay in the table (NIST-12).
"""

from __future__ import annotations

import secrets
import unicodedata

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp import audit, challenges
from idp.auth import assurance
from idp.clock import Clock
from idp.factors.webauthn import verify as wa
from idp.factors.webauthn.method import REGISTER, RelyingParty, find_credential, level_of
from idp.models import Practitioner, WebAuthnCredential
from idp.services import clock as app_clock
from idp.services import methods

USER_HANDLE_BYTES = 32
MAX_NAME_LENGTH = 64
KNOWN_TRANSPORTS = ("usb", "nfc", "ble", "smart-card", "hybrid", "internal")


class WebAuthnAccountError(Exception):
    """A registration or rename refused by this package."""


class DuplicateCredentialError(WebAuthnAccountError):
    """This authenticator's credential is already registered (to anyone: WA-03)."""


class BindingLevelError(WebAuthnAccountError):
    """NIST-10: the current login is weaker than what binding this authenticator requires."""

    def __init__(self, required_acr: str) -> None:
        super().__init__(f"binding requires a login at {required_acr}")
        self.required_acr = required_acr


class InvalidNameError(WebAuthnAccountError):
    pass


class NoSuchCredentialError(WebAuthnAccountError):
    pass


def clean_name(name: str | None) -> str:
    """One printable line of at most 64 characters."""
    text = " ".join((name or "").split())
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    if not text or len(text) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"a name has 1 to {MAX_NAME_LENGTH} characters")
    return text


def user_handle(db: Session, *, practitioner: Practitioner) -> bytes:
    """The practitioner's random WebAuthn user.id, created once (WA-01: no PII)."""
    if practitioner.webauthn_user_handle is None:
        db.execute(
            update(Practitioner)
            .where(Practitioner.id == practitioner.id, Practitioner.webauthn_user_handle.is_(None))
            .values(webauthn_user_handle=secrets.token_bytes(USER_HANDLE_BYTES))
            .execution_options(synchronize_session=False)
        )
        db.refresh(practitioner)
    return practitioner.webauthn_user_handle


def binding_requirement(db: Session, *, practitioner_id: int, new_level: str) -> str | None:
    """NIST-10, over every method: see ``Registry.binding_requirement``."""
    return methods().binding_requirement(
        db, practitioner_id, new_level=new_level, now=app_clock().now()
    )


def check_binding_level(
    db: Session, *, practitioner_id: int, new_level: str, session_acr: str | None
) -> None:
    required = binding_requirement(db, practitioner_id=practitioner_id, new_level=new_level)
    if assurance.rank(session_acr) < assurance.rank(required):
        raise BindingLevelError(required)


def begin_registration(
    db: Session,
    *,
    rp: RelyingParty,
    practitioner: Practitioner,
    session_acr: str | None,
    clock: Clock,
) -> tuple[str, str]:
    """Creation options and the challenge id for the session.

    ``session_acr`` is None during invitation enrolment, where the account has no factor yet.
    """
    check_binding_level(
        db,
        practitioner_id=practitioner.id,
        new_level=assurance.PHISHING_RESISTANT,
        session_acr=session_acr,
    )
    handle = user_handle(db, practitioner=practitioner)
    registered = list(
        db.execute(
            select(WebAuthnCredential.credential_id).where(
                WebAuthnCredential.practitioner_id == practitioner.id,
                WebAuthnCredential.removed_at.is_(None),
            )
        ).scalars()
    )
    challenge_id, challenge = challenges.issue(
        db, purpose=REGISTER, practitioner_id=practitioner.id, clock=clock
    )
    options, _challenge = wa.begin_registration(
        rp_id=rp.rp_id,
        rp_name=rp.name,
        user_handle=handle,
        user_name=practitioner.email,
        user_display_name=f"{practitioner.given_name} {practitioner.family_name}",
        exclude_credential_ids=registered,
        challenge=challenge,
        attestation=rp.attestation,
    )
    return options, challenge_id


def finish_registration(
    db: Session,
    *,
    rp: RelyingParty,
    practitioner: Practitioner,
    credential_json: str,
    challenge_id: str | None,
    name: str,
    session_acr: str | None,
    ip: str | None,
    clock: Clock,
) -> WebAuthnCredential:
    """Verify an attestation and add the new credential to the caller's unit of work; the
    orchestrator (``WebAuthnMethod.finish_enrol``) audits and commits."""
    name = clean_name(name)
    challenge = challenges.consume(db, challenge_id=challenge_id, purpose=REGISTER, clock=clock)
    if challenge.practitioner_id != practitioner.id:
        raise challenges.ChallengeInvalidError()
    registered = wa.finish_registration(
        credential_json=credential_json,
        expected_challenge=challenge.challenge,
        expected_rp_id=rp.rp_id,
        expected_origins=list(rp.origins),
        aaguid_allowlist=set(rp.aaguid_allowlist) if rp.aaguid_allowlist else None,
        attestation_roots=rp.roots_by_format() or None,
    )
    if rp.aaguid_allowlist and not registered.attestation_trusted:
        raise wa.AttestationNotAllowedError("a certified authenticator is required")
    level = level_of(registered)
    check_binding_level(
        db, practitioner_id=practitioner.id, new_level=level, session_acr=session_acr
    )
    if find_credential(db, registered.credential_id) is not None:
        raise DuplicateCredentialError()
    credential = WebAuthnCredential(
        practitioner_id=practitioner.id,
        credential_id=registered.credential_id,
        public_key=registered.public_key,
        sign_count=registered.sign_count,
        aaguid=registered.aaguid,
        transports=" ".join(t for t in KNOWN_TRANSPORTS if t in registered.transports),
        backup_eligible=registered.backup_eligible,
        backup_state=registered.backup_state,
        hardware_bound=registered.hardware_bound,
        attestation_fmt=registered.attestation_fmt[:32],
        name=name,
        created_at=clock.now(),
        created_ip=(ip or "")[:64] or None,
    )
    db.add(credential)
    try:
        db.flush()
    except IntegrityError as exc:  # the same credential registered concurrently
        raise DuplicateCredentialError() from exc
    return credential


def owned_credential(
    db: Session, *, practitioner: Practitioner, credential_id: int
) -> WebAuthnCredential:
    credential = db.get(WebAuthnCredential, credential_id)
    if (
        credential is None
        or credential.practitioner_id != practitioner.id
        or credential.removed_at is not None
    ):
        raise NoSuchCredentialError()
    return credential


def rename_credential(
    db: Session, *, practitioner: Practitioner, credential_id: int, name: str
) -> WebAuthnCredential:
    credential = owned_credential(db, practitioner=practitioner, credential_id=credential_id)
    credential.name = clean_name(name)
    audit.record(
        db,
        "account:two_factor:method_renamed",
        practitioner_id=practitioner.id,
        method="webauthn",
        credential=credential.id,
    )
    db.commit()
    return credential
