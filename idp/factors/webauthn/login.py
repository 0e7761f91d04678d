"""WebAuthn login: a security key or passkey after the password, or a passkey alone.

Owns what the pure verifier (idp.factors.webauthn.verify) leaves to the caller: the single-use
challenge (idp.challenges), the credential lookup and owner checks (WA-05), the sign-count
update and clone flag (WA-06), throttling, audit and the acr/amr of the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp import audit, challenges
from idp.auth import assurance
from idp.auth.devices import Client
from idp.auth.service import (
    AccountUnavailableError,
    Authentication,
    LoginError,
    refuse_second_step,
    second_step_keys,
    usable_webauthn_credentials,
    webauthn_level,
)
from idp.clock import Clock
from idp.config import Settings
from idp.factors.webauthn import verify as wa
from idp.models import Practitioner, PractitionerStatus, WebAuthnCredential
from idp.ratelimit import Reservation, Throttle, ensure_allowed, key

SECOND_FACTOR = "webauthn.authenticate"
PASSKEY = "webauthn.passkey"
REGISTER = "webauthn.register"
ATTESTED_FORMATS = ("packed", "tpm", "android-key", "fido-u2f", "apple")


@dataclass(frozen=True)
class RelyingParty:
    """Who we are to authenticators: RP ID, exact origins, and the attestation policy."""

    rp_id: str
    name: str
    origins: tuple[str, ...]
    aaguid_allowlist: frozenset[str] | None = None
    attestation_roots: tuple[bytes, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> RelyingParty:
        return cls(
            rp_id=settings.relying_party_id,
            name=settings.issuer_name,
            origins=tuple(settings.relying_party_origins),
            aaguid_allowlist=settings.webauthn_aaguids,
            attestation_roots=settings.webauthn_attestation_roots,
        )

    @property
    def attestation(self) -> str:
        """``none`` unless the deployment can check authenticator models (WA-07)."""
        return "direct" if self.attestation_roots else "none"

    def roots_by_format(self) -> dict[str, list[bytes]]:
        if not self.attestation_roots:
            return {}
        return {fmt: list(self.attestation_roots) for fmt in ATTESTED_FORMATS}


class WebAuthnLoginError(LoginError):
    """An assertion refused by the service (the verifier's own refusals are wa.WebAuthnError)."""


class UnknownCredentialError(WebAuthnLoginError):
    """Not registered, removed, or registered to another practitioner (WA-05)."""


class UserHandleMismatchError(WebAuthnLoginError):
    """The userHandle is missing from a passkey assertion or names someone else (WA-05)."""


class CredentialBlockedError(WebAuthnLoginError):
    """The credential was flagged as possibly cloned earlier: it never logs in again."""


class PossibleCloneError(WebAuthnLoginError):
    """The sign count went backwards just now (WA-06): the credential has been flagged."""


class InsufficientLevelError(WebAuthnLoginError):
    """A valid assertion, but this credential cannot reach the acr the request needs."""


class NoCredentialError(WebAuthnLoginError):
    """The practitioner has no usable credential at the requested level."""


def find_credential(db: Session, credential_id: bytes) -> WebAuthnCredential | None:
    return db.execute(
        select(WebAuthnCredential).where(WebAuthnCredential.credential_id == credential_id)
    ).scalar_one_or_none()


def credentials_at_level(
    db: Session, practitioner_id: int, min_acr: str | None
) -> list[WebAuthnCredential]:
    return [
        c
        for c in usable_webauthn_credentials(db, practitioner_id)
        if assurance.rank(webauthn_level(c)) >= assurance.rank(min_acr)
    ]


def begin_authentication(
    db: Session,
    *,
    rp: RelyingParty,
    practitioner: Practitioner | None,
    min_acr: str | None,
    client: Client,
    throttle: Throttle,
    clock: Clock,
) -> tuple[str, str]:
    """Request options and the challenge id for the session.

    With a practitioner (password already checked) only their usable credentials at the
    requested level are allowed; without one, any discoverable credential (passkey) may answer.
    """
    keys = [key("webauthn.ip", client.ip)]
    if practitioner is not None:
        keys += client.account_keys("webauthn", practitioner.id)
    ensure_allowed(throttle, keys)  # options are no guess: nothing is counted yet
    allowed: list[bytes] = []
    if practitioner is not None:
        allowed = [c.credential_id for c in credentials_at_level(db, practitioner.id, min_acr)]
        if not allowed:
            raise NoCredentialError()
    challenge_id, challenge = challenges.issue(
        db,
        purpose=SECOND_FACTOR if practitioner is not None else PASSKEY,
        practitioner_id=practitioner.id if practitioner is not None else None,
        clock=clock,
    )
    options, _challenge = wa.begin_authentication(
        rp_id=rp.rp_id, allow_credential_ids=allowed, challenge=challenge
    )
    db.commit()
    return options, challenge_id


def finish_authentication(
    db: Session,
    *,
    rp: RelyingParty,
    credential_json: str,
    challenge_id: str | None,
    practitioner: Practitioner | None,
    login: str | None,
    required_acr: Callable[[int], str | None],
    client: Client,
    throttle: Throttle,
    clock: Clock,
) -> Authentication:
    """Verify an assertion and return the login it proves.

    ``practitioner`` is the one whose password was checked in the login ``login`` (second
    factor), or None for a passkey login, where the credential names its owner (whose own
    limiter is then reserved too). ``required_acr(owner_id)`` is the level the pending request
    asks for. Every attempt is reserved on its limiters before anything is verified.
    """
    reservations: list[Reservation] = []
    if practitioner is not None:
        keys = second_step_keys(
            "webauthn", practitioner_id=practitioner.id, client=client, login=login or ""
        )
        reservations.append(throttle.reserve(keys))
    else:
        reservations.append(throttle.reserve([key("webauthn.ip", client.ip)]))
    credential: WebAuthnCredential | None = None
    purpose = SECOND_FACTOR if practitioner is not None else PASSKEY
    try:
        challenge = challenges.consume(db, challenge_id=challenge_id, purpose=purpose, clock=clock)
        expected_owner = practitioner.id if practitioner is not None else None
        if challenge.practitioner_id != expected_owner:
            raise challenges.ChallengeInvalidError()
        credential = find_credential(db, wa.parse_credential_id(credential_json))
        if credential is None or credential.removed_at is not None:
            raise UnknownCredentialError()
        if practitioner is not None and credential.practitioner_id != practitioner.id:
            raise UnknownCredentialError()
        owner = db.get(Practitioner, credential.practitioner_id)
        if practitioner is None:
            reservations.append(throttle.reserve(client.account_keys("webauthn", owner.id)))
        if credential.flagged_at is not None:
            raise CredentialBlockedError()
        result = wa.finish_authentication(
            credential_json=credential_json,
            expected_challenge=challenge.challenge,
            expected_rp_id=rp.rp_id,
            expected_origins=list(rp.origins),
            credential_public_key=credential.public_key,
            credential_current_sign_count=credential.sign_count,
            credential_backup_eligible=credential.backup_eligible,
        )
        if practitioner is None and result.user_handle is None:
            raise UserHandleMismatchError("a passkey assertion must name its user")
        if result.user_handle is not None and result.user_handle != owner.webauthn_user_handle:
            raise UserHandleMismatchError("userHandle is not the credential owner's")
        if not record_use(db, credential=credential, result=result, clock=clock):
            raise wa.SignCountRegressionError(
                "the sign count moved concurrently",
                new_sign_count=result.new_sign_count,
                stored_sign_count=credential.sign_count,
            )
    except wa.SignCountRegressionError as exc:
        db.rollback()
        flag_possible_clone(db, credential=credential, clock=clock, error=exc)
        raise PossibleCloneError() from exc
    except (WebAuthnLoginError, wa.WebAuthnError, challenges.ChallengeError) as exc:
        db.rollback()
        if practitioner is not None:
            subject = practitioner.id
        else:
            subject = credential.practitioner_id if credential is not None else None
        audit.record(
            db,
            "auth:webauthn:failed",
            practitioner_id=subject,
            credential=credential.id if credential is not None else None,
            passkey=practitioner is None,
            reason=type(exc).__name__,
        )
        db.commit()
        if practitioner is not None:
            raise refuse_second_step(reservations[0], exc) from exc
        raise
    level = webauthn_level(credential)
    # The assertion was genuine (its counter is recorded): a refusal here is no attack signal.
    refusal = None
    if owner.status != PractitionerStatus.ACTIVE:
        audit.record(db, "auth:webauthn:refused", practitioner_id=owner.id, status=owner.status)
        refusal = AccountUnavailableError(owner.status)
    elif assurance.rank(level) < assurance.rank(required := required_acr(owner.id)):
        audit.record(
            db,
            "auth:webauthn:refused",
            practitioner_id=owner.id,
            credential=credential.id,
            acr=level,
            required_acr=required,
        )
        refusal = InsufficientLevelError()
    if refusal is not None:
        db.commit()
        for reservation in reservations:
            throttle.forgive(reservation)
        raise refusal
    amr = wa.amr_for(
        uv=result.uv,
        hardware_bound=credential.hardware_bound,
        with_password=practitioner is not None,
    )
    audit.record(
        db,
        "auth:webauthn:succeeded",
        practitioner_id=owner.id,
        credential=credential.id,
        passkey=practitioner is None,
        acr=level,
    )
    db.commit()
    for reservation in reservations:  # after the commit: the throttle writes on its own
        throttle.succeeded(reservation)
    return Authentication(owner.id, tuple(amr), level)


def record_use(
    db: Session, *, credential: WebAuthnCredential, result: wa.AuthenticationResult, clock: Clock
) -> bool:
    """Store the new counter atomically: of two racing assertions only one may move it."""
    counter_rule = (
        WebAuthnCredential.sign_count == 0
        if result.new_sign_count == 0
        else WebAuthnCredential.sign_count < result.new_sign_count
    )
    claimed = db.execute(
        update(WebAuthnCredential)
        .where(
            WebAuthnCredential.id == credential.id,
            WebAuthnCredential.removed_at.is_(None),
            WebAuthnCredential.flagged_at.is_(None),
            counter_rule,
        )
        .values(
            sign_count=result.new_sign_count,
            backup_state=result.backup_state,
            last_used_at=clock.now(),
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    return claimed == 1


def flag_possible_clone(
    db: Session, *, credential: WebAuthnCredential, clock: Clock, error: wa.SignCountRegressionError
) -> None:
    """WA-06: block the credential for good and leave a trace for the practitioner and admins."""
    db.execute(
        update(WebAuthnCredential)
        .where(WebAuthnCredential.id == credential.id, WebAuthnCredential.flagged_at.is_(None))
        .values(flagged_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    audit.record(
        db,
        "auth:webauthn:possible_clone",
        practitioner_id=credential.practitioner_id,
        credential=credential.id,
        stored_sign_count=error.stored_sign_count,
        new_sign_count=error.new_sign_count,
    )
    db.commit()
