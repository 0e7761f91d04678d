"""Security keys and passkeys (WebAuthn) as an authentication method.

Owns what the pure verifier (idp.factors.webauthn.verify) leaves to the caller: the single-use
challenge (idp.challenges), the credential lookup and owner checks (WA-05), the sign-count
update and clone flag (WA-06) and the acr/amr of the result. Throttling, the account and level
checks, the audit event and the commit are the orchestrator's (idp.auth.orchestrator).

What crosses the contract:

- ``attempt.context["rp"]``: the ``RelyingParty`` (RP ID, exact origins) to verify against;
- ``begin`` returns ``{"options": <request options JSON>, "challenge_id": <id>}``, the id to
  keep in the browser's server-side session;
- ``finish`` takes ``{"credential": <assertion JSON>, "challenge_id": <the kept id or None>}``.

``attempt.practitioner_id`` set: a second factor after that practitioner's password, only their
credentials answer. None: a passkey login, where the credential names its owner (``claim``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from idp import audit, challenges
from idp.auth import assurance
from idp.auth.contract import Attempt, Enrolment, MethodError, NoSuchEnrolmentError, Verified
from idp.clock import FrozenClock
from idp.config import Settings
from idp.db import memoized
from idp.factors.webauthn import verify as wa
from idp.models import Practitioner, WebAuthnCredential
from idp.notifications import notify

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


# --------------------------------------------------------------------------- refusals
#
# The codes are the reasons the audit trail has always recorded for WebAuthn refusals, kept
# as they are so that earlier and later events read alike.


class UnknownCredentialError(MethodError):
    """Not registered, removed, or registered to another practitioner (WA-05)."""

    code = "UnknownCredentialError"


class UserHandleMismatchError(MethodError):
    """The userHandle is missing from a passkey assertion or names someone else (WA-05)."""

    code = "UserHandleMismatchError"


class CredentialBlockedError(MethodError):
    """The credential was flagged as possibly cloned earlier: it never logs in again."""

    code = "CredentialBlockedError"
    status = 403


class PossibleCloneError(MethodError):
    """The sign count went backwards just now (WA-06): ``refused`` flags the credential."""

    code = "PossibleCloneError"
    status = 403


class ChallengeRefusedError(MethodError):
    """No challenge issued to this browser for this login, or it expired or was used."""

    status = 400

    def __init__(self, error: challenges.ChallengeError, **details: Any) -> None:
        super().__init__(str(error), **details)
        self.code = type(error).__name__


class AssertionRefusedError(MethodError):
    """The verifier refused the assertion (origin, RP ID, flags, signature...)."""

    def __init__(self, error: wa.WebAuthnError, **details: Any) -> None:
        super().__init__(str(error), **details)
        self.code = type(error).__name__
        if isinstance(error, wa.MalformedCredentialError):
            self.status = 400


class RegistrationRefusedError(MethodError):
    """A new key refused (bad attestation, wrong challenge, binding level, duplicate...): the
    code is the refusal's own name, as the audit trail always recorded it; ``cause`` is the
    refusal itself, for the page's wording."""

    status = 400
    counts_as_failure = False

    def __init__(self, cause: Exception) -> None:
        super().__init__(type(cause).__name__)
        self.code = type(cause).__name__
        self.cause = cause


class NoCredentialError(MethodError):
    """The practitioner has no usable credential at the requested level (``begin``)."""

    code = "no_credential"
    status = 400
    counts_as_failure = False


# --------------------------------------------------------------------------- credentials


def level_of(credential: WebAuthnCredential) -> str:
    """phrh only for an attested key that can never leave its device (NIST-17, AMR-02)."""
    return assurance.HIGH if credential.hardware_bound else assurance.PHISHING_RESISTANT


LISTED_CREDENTIALS = (
    select(WebAuthnCredential)
    .where(
        WebAuthnCredential.practitioner_id == bindparam("practitioner_id"),
        WebAuthnCredential.removed_at.is_(None),
    )
    .order_by(WebAuthnCredential.created_at, WebAuthnCredential.id)
)
"""Built once: every sign-in lists the practitioner's keys."""


def listed_credentials(db: Session, practitioner_id: int) -> list[WebAuthnCredential]:
    """Everything not removed, blocked ones included (the account page shows them)."""

    def read() -> list[WebAuthnCredential]:
        params = {"practitioner_id": practitioner_id}
        return list(db.execute(LISTED_CREDENTIALS, params).scalars())

    return list(memoized(db, ("webauthn credentials", practitioner_id), read))


def credentials_at_level(
    db: Session, practitioner_id: int, min_acr: str | None
) -> list[WebAuthnCredential]:
    """Usable credentials (not blocked) that reach ``min_acr``."""
    return [
        c
        for c in listed_credentials(db, practitioner_id)
        if c.is_usable and assurance.rank(level_of(c)) >= assurance.rank(min_acr)
    ]


def find_credential(db: Session, credential_id: bytes) -> WebAuthnCredential | None:
    return db.execute(
        select(WebAuthnCredential).where(WebAuthnCredential.credential_id == credential_id)
    ).scalar_one_or_none()


def record_use(
    db: Session,
    *,
    credential: WebAuthnCredential,
    result: wa.AuthenticationResult,
    now: dt.datetime,
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
            last_used_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    return claimed == 1


def flag_possible_clone(
    db: Session, *, credential: WebAuthnCredential, now: dt.datetime, error: PossibleCloneError
) -> None:
    """WA-06: block the credential for good and leave a trace for the practitioner and admins.

    In the caller's transaction (the orchestrator commits it with the refusal)."""
    db.execute(
        update(WebAuthnCredential)
        .where(WebAuthnCredential.id == credential.id, WebAuthnCredential.flagged_at.is_(None))
        .values(flagged_at=now)
        .execution_options(synchronize_session=False)
    )
    audit.record(
        db,
        "auth:webauthn:possible_clone",
        practitioner_id=credential.practitioner_id,
        credential=credential.id,
        stored_sign_count=error.details["stored_sign_count"],
        new_sign_count=error.details["new_sign_count"],
    )
    owner = db.get(Practitioner, credential.practitioner_id)
    notify(db, owner, "factor_flagged", method="webauthn", name=credential.name)


# --------------------------------------------------------------------------- the method

CLONE_MESSAGE = _l(
    "This security key may have been copied, so it has been blocked to protect your "
    "account. Use another sign-in method and tell your administrator."
)
UNREADABLE_MESSAGE = _l("The response from your security key could not be read. Try again.")
NOT_REGISTERED_MESSAGE = _l("This security key or passkey is not registered for your account.")
FAILED_MESSAGE = _l("The verification failed. Try again or use another sign-in method.")


class WebAuthnMethod:
    kind: ClassVar[str] = "webauthn"
    limiter: ClassVar[str] = "webauthn"
    identifies: ClassVar[bool] = True  # a passkey, alone
    standalone: ClassVar[bool] = False  # after a password, the default choice
    limited: ClassVar[bool] = False
    invitation_endpoint: ClassVar[str | None] = None
    login_endpoint: ClassVar[str] = "webauthn.login"
    account_template: ClassVar[str] = "factors/webauthn_account.html"
    add_endpoint: ClassVar[str | None] = "webauthn.add"
    enrolment_field: ClassVar[str] = "credential"
    choice_label: ClassVar[str] = _l("Security key or passkey")
    choice_description: ClassVar[str] = _l(
        "Touch your key, or confirm on your device with its PIN, fingerprint or face."
    )
    confirm_label: ClassVar[str] = _l("Use my security key or passkey")
    confirm_template: ClassVar[str | None] = "factors/webauthn_confirm.html"
    messages: ClassVar[dict] = {
        "MalformedCredentialError": UNREADABLE_MESSAGE,
        "ChallengeInvalidError": _l("This sign-in request has expired. Try again."),
        "ChallengeError": _l("This sign-in request has expired. Try again."),
        "PossibleCloneError": CLONE_MESSAGE,
        "CredentialBlockedError": CLONE_MESSAGE,
        "insufficient_level": _l(
            "This passkey does not reach the security level the application asks for. "
            "Use a certified security key or a smart card."
        ),
        "account_unavailable": _l("This account is suspended. Contact your administrator."),
        "UnknownCredentialError": NOT_REGISTERED_MESSAGE,
        "UserHandleMismatchError": NOT_REGISTERED_MESSAGE,
        "UserVerificationMissingError": _l(
            "The key did not verify your identity (PIN, fingerprint or face). Try again and "
            "complete the verification."
        ),
        "no_credential": _l("No usable security key is registered for this account."),
    }
    default_message: ClassVar = FAILED_MESSAGE

    def message(self, error: MethodError) -> str:
        """The practitioner-facing reason for a refusal of this method."""
        return str(self.messages.get(error.code, self.default_message))

    # ----------------------------------------------------------------------- login

    def begin(self, db: Session, attempt: Attempt) -> Mapping[str, Any]:
        """Request options and the challenge id for the session.

        After a password only that practitioner's usable credentials at the required level
        are allowed (none: NoCredentialError); alone, any discoverable credential may answer.
        """
        rp: RelyingParty = attempt.context["rp"]
        practitioner_id = attempt.practitioner_id
        allowed: list[bytes] = []
        if practitioner_id is not None:
            min_acr = attempt.required_acr(practitioner_id)
            allowed = [c.credential_id for c in credentials_at_level(db, practitioner_id, min_acr)]
            if not allowed:
                raise NoCredentialError()
        challenge_id, challenge = challenges.issue(
            db,
            purpose=SECOND_FACTOR if practitioner_id is not None else PASSKEY,
            practitioner_id=practitioner_id,
            clock=FrozenClock(attempt.now),
        )
        options, _challenge = wa.begin_authentication(
            rp_id=rp.rp_id, allow_credential_ids=allowed, challenge=challenge
        )
        return {"options": options, "challenge_id": challenge_id}

    def finish(self, db: Session, attempt: Attempt, answer: Mapping[str, Any]) -> Verified:
        """Verify an assertion; every refusal is a MethodError naming the credential it used."""
        passkey = attempt.practitioner_id is None
        found: list[WebAuthnCredential] = []

        def refusal(error: MethodError) -> MethodError:
            error.details.setdefault("credential", found[0].id if found else None)
            error.details.setdefault("passkey", passkey)
            return error

        try:
            return self._verify(db, attempt, answer, found)
        except MethodError as error:
            refusal(error)
            raise
        except wa.SignCountRegressionError as exc:
            raise refusal(
                PossibleCloneError(
                    str(exc),
                    stored_sign_count=exc.stored_sign_count,
                    new_sign_count=exc.new_sign_count,
                )
            ) from exc
        except wa.WebAuthnError as exc:
            raise refusal(AssertionRefusedError(exc)) from exc
        except challenges.ChallengeError as exc:
            raise refusal(ChallengeRefusedError(exc)) from exc

    def _verify(
        self,
        db: Session,
        attempt: Attempt,
        answer: Mapping[str, Any],
        found: list[WebAuthnCredential],
    ) -> Verified:
        rp: RelyingParty = attempt.context["rp"]
        expected_owner = attempt.practitioner_id
        credential_json = answer["credential"]
        challenge = challenges.consume(
            db,
            challenge_id=answer.get("challenge_id"),
            purpose=SECOND_FACTOR if expected_owner is not None else PASSKEY,
            clock=FrozenClock(attempt.now),
        )
        if challenge.practitioner_id != expected_owner:
            raise challenges.ChallengeInvalidError()
        credential = find_credential(db, wa.parse_credential_id(credential_json))
        if credential is None or credential.removed_at is not None:
            raise UnknownCredentialError()
        found.append(credential)
        if expected_owner is not None and credential.practitioner_id != expected_owner:
            raise UnknownCredentialError()
        owner = db.get(Practitioner, credential.practitioner_id)
        attempt.claim(owner.id)  # a passkey: the owner's limiters are reserved from here on
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
        if expected_owner is None and result.user_handle is None:
            raise UserHandleMismatchError("a passkey assertion must name its user")
        if result.user_handle is not None and result.user_handle != owner.webauthn_user_handle:
            raise UserHandleMismatchError("userHandle is not the credential owner's")
        if not record_use(db, credential=credential, result=result, now=attempt.now):
            raise wa.SignCountRegressionError(
                "the sign count moved concurrently",
                new_sign_count=result.new_sign_count,
                stored_sign_count=credential.sign_count,
            )
        amr = wa.amr_for(
            uv=result.uv,
            hardware_bound=credential.hardware_bound,
            with_password=expected_owner is not None,
        )
        return Verified(
            owner.id,
            acr=level_of(credential),
            amr=tuple(amr),
            enrolment_id=credential.id,
            details={"credential": credential.id, "passkey": expected_owner is None},
        )

    def refused(self, db: Session, attempt: Attempt, error: MethodError) -> None:
        """After the rollback: a possible clone is blocked for good (WA-06)."""
        if isinstance(error, PossibleCloneError):
            credential = db.get(WebAuthnCredential, error.details["credential"])
            flag_possible_clone(db, credential=credential, now=attempt.now, error=error)

    # ----------------------------------------------------------------------- enrolments

    # ----------------------------------------------------------------------- binding

    def begin_enrol(self, db: Session, attempt: Attempt) -> Mapping[str, Any]:
        """Creation options and the challenge id; ``context``: ``rp``, ``session_acr`` (the
        login's level, None for an invitation: NIST-10 checks it against the account)."""
        from idp.factors.webauthn import enrolment as keys

        options, challenge_id = keys.begin_registration(
            db,
            rp=attempt.context["rp"],
            practitioner=db.get(Practitioner, attempt.practitioner_id),
            session_acr=attempt.context.get("session_acr"),
            clock=FrozenClock(attempt.now),
        )
        return {"options": options, "challenge_id": challenge_id}

    def finish_enrol(self, db: Session, attempt: Attempt, answer: Mapping[str, Any]) -> Enrolment:
        """``answer``: ``credential`` (the browser's JSON), ``challenge_id``, ``name``."""
        from idp.factors.webauthn import enrolment as keys

        try:
            credential = keys.finish_registration(
                db,
                rp=attempt.context["rp"],
                practitioner=db.get(Practitioner, attempt.practitioner_id),
                credential_json=answer.get("credential") or "",
                challenge_id=answer.get("challenge_id"),
                name=answer.get("name") or "",
                session_acr=attempt.context.get("session_acr"),
                ip=attempt.client.ip if attempt.client is not None else None,
                clock=FrozenClock(attempt.now),
            )
        except (keys.WebAuthnAccountError, wa.WebAuthnError, challenges.ChallengeError) as exc:
            raise RegistrationRefusedError(exc) from exc
        return Enrolment(
            kind=self.kind,
            id=credential.id,
            name=credential.name,
            level=level_of(credential),
            created_at=credential.created_at,
            record=credential,
            details={
                "aaguid": credential.aaguid,
                "attestation": credential.attestation_fmt,
                "backup_eligible": credential.backup_eligible,
                "hardware_bound": credential.hardware_bound,
            },
        )

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
