"""The CPS card and its PIN as an authentication method: a whole login by itself.

``finish`` checks one answer to a login transaction (``idp.factors.smartcard.login``) from any
of its three paths, named by ``answer["via"]``:

- ``bridge``: ``{"transaction", "answer"}``, the agent's signature posted by the login page;
- ``code``: ``{"code", "answer"}``, the agent's signature under the page's one-time code;
- ``tls``: ``{"transaction", "header_value", "verify_value", "remote_addr", "result"}``, the
  TLS client certificate the card host's proxy forwarded.

``attempt.context`` holds the ``CardCheck`` (``check``) and the ``Clock`` (``clock``). The
terminal and TLS paths complete the transaction; the browser then takes the login over with
``pick_up`` (``Orchestrator.pick_up``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar

from cryptography import x509
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.auth import assurance
from idp.auth.contract import Attempt, Enrolment, MethodError, NoSuchEnrolmentError, Verified
from idp.factors.smartcard import login as transactions
from idp.factors.smartcard.forwarded import (
    decode_forwarded_certificate,
    identity_from_forwarded_certificate,
)
from idp.factors.smartcard.login import BRIDGE, CODE, TLS, SmartcardLoginError
from idp.factors.smartcard.verify import CardIdentity, SmartcardVerificationError
from idp.models import Smartcard, SmartcardLogin

# Every refusal a practitioner can see, by code: the message and the page's status. Codes also
# arrive without an exception (a transaction's stored failure, the card host's redirect).
GENERIC_FAILURE = (
    _l("The sign-in with the card failed. Try again or use another sign-in method."),
    400,
)
FAILURES = {
    "malformed_submission": (_l("The answer from the card could not be read. Try again."), 400),
    "transaction_invalid": (
        _l("This sign-in request has expired. Start again from the card sign-in page."),
        400,
    ),
    "transaction_used": (
        _l("This sign-in request was already used. Start again from the card sign-in page."),
        409,
    ),
    "untrusted_certificate": (
        _l("This card was not issued by a certification authority this service accepts."),
        403,
    ),
    "certificate_expired": (
        _l("The certificate on this card has expired. Ask for a new card."),
        403,
    ),
    "certificate_not_yet_valid": (
        _l(
            "The certificate on this card is not valid yet. "
            "Check the date and time of this computer."
        ),
        403,
    ),
    "certificate_revoked": (
        _l("This card has been revoked (lost, stolen or replaced). Use your new card."),
        403,
    ),
    "crl_stale": (
        _l(
            "The revocation status of your card cannot be checked right now. Try again later "
            "or use another sign-in method."
        ),
        503,
    ),
    "bad_signature": (
        _l("The card's signature does not match this sign-in request. Try again."),
        401,
    ),
    "key_usage": (_l("This certificate cannot be used to sign in."), 403),
    "unsupported_identifier": (_l("This card does not carry an RPPS number."), 403),
    "mechanism_refused": (
        _l("The card used a signature method this service does not accept."),
        400,
    ),
    "test_card_refused": (_l("Test cards are not accepted on this service."), 403),
    "unknown_practitioner": (
        _l("No account on this service matches this card. Contact your administrator."),
        403,
    ),
    "card_removed": (
        _l("This card was removed from your account. Use another card or sign-in method."),
        403,
    ),
    "card_conflict": (
        _l("This card is linked to another account. Contact your administrator."),
        409,
    ),
    "account_unavailable": (_l("This account is suspended. Contact your administrator."), 403),
    "untrusted_proxy": (
        _l("Sign-in with the certificate in your browser is not available here."),
        403,
    ),
    "client_certificate_missing": (
        _l(
            "Your browser did not present the card's certificate. Check that the card is in "
            "the reader, then try again."
        ),
        401,
    ),
    "throttled": (_l("Too many attempts. Wait a moment, then try again."), 429),
}
FAILURES["crl_missing"] = FAILURES["crl_stale"]


class CardRefusedError(SmartcardLoginError):
    """The verifier refused the card's answer; ``code`` is the verifier error's own."""

    def __init__(self, error: SmartcardVerificationError) -> None:
        super().__init__(str(error))
        self.code = error.code
        self.verifier_error = error


class EnrolsAtFirstLoginError(MethodError):
    """A card is never bound by hand: its first sign-in with the PIN enrols it, to the account
    its certificate's RPPS names."""

    code = "enrols_at_first_login"
    status = 409
    counts_as_failure = False


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
    limited: ClassVar[bool] = False
    invitation_endpoint: ClassVar[str | None] = None
    login_endpoint: ClassVar[str] = "smartcard.login"
    account_template: ClassVar[str] = "factors/smartcard_account.html"
    add_endpoint: ClassVar[str | None] = None
    enrolment_field: ClassVar[str] = "card"
    choice_label: ClassVar[str] = _l("CPS card")
    choice_description: ClassVar[str] = _l("Insert your card in the reader and type its PIN.")
    confirm_label: ClassVar[str] = _l("Use my CPS card")
    confirm_template: ClassVar[str | None] = None
    login_label: ClassVar[str] = _l("Sign in with my CPS card")
    login_option_template: ClassVar[str] = "factors/smartcard_login_option.html"
    messages: ClassVar[dict] = {code: message for code, (message, _status) in FAILURES.items()}

    def __init__(self, trust) -> None:
        self.trust = trust

    def begin(self, db: Session, attempt: Attempt) -> Mapping[str, Any]:
        """A login transaction: its challenge for the agent and the code the page shows."""
        started = transactions.start_login(db, clock=attempt.context["clock"])
        return {
            "transaction": started.transaction,
            "challenge": started.challenge,
            "code": started.code,
        }

    def begin_enrol(self, db: Session, attempt: Attempt) -> Mapping[str, Any]:
        raise EnrolsAtFirstLoginError()

    def finish_enrol(self, db: Session, attempt: Attempt, answer: Mapping[str, Any]) -> Enrolment:
        raise EnrolsAtFirstLoginError()

    def finish(self, db: Session, attempt: Attempt, answer: Mapping[str, Any]) -> Verified:
        """Claim the transaction's challenge, verify the card (its signature, or the certificate
        the proxy forwarded), map its RPPS to the account and mark the transaction completed.

        Throttled per address only (``smartcard.ip``): ``attempt.claim`` names the holder for
        the audit trail once known, and no account counter exists for a card. An invited
        account is activated by its first card; a suspended one is refused. Every refusal is a
        ``SmartcardLoginError`` carrying the transaction it refused (for ``refused``) and, for a
        card not matched to an account yet, its RPPS number (useful to the support desk).
        """
        via = answer.get("via")
        check: transactions.CardCheck = attempt.context["check"]
        clock = attempt.context["clock"]
        row: SmartcardLogin | None = None
        row_id: int | None = None
        identity: CardIdentity | None = None
        try:
            if via == CODE:
                row = transactions.find_by_code(db, code=answer.get("code"))
                row_id = row.id if row is not None else None  # an expired code shows it failed
                row = transactions.require_pending(row, clock=clock)
            elif via in (BRIDGE, TLS):
                found = transactions.find_by_transaction(db, transaction=answer.get("transaction"))
                row = transactions.require_pending(found, clock=clock)
                row_id = row.id
            else:
                raise ValueError(f"unknown card login path {via!r}")
            challenge = transactions.claim_challenge(db, row=row, clock=clock)
            if via == TLS:
                identity = identity_from_forwarded_certificate(
                    header_value=answer.get("header_value"),
                    verify_value=answer.get("verify_value"),
                    remote_addr=answer.get("remote_addr") or "",
                    trusted_proxies=check.trust.forwarding.trusted_proxies,
                    trust=check.trust,
                    crls=check.crls,
                    now=clock.now(),
                )
                certificate = x509.load_der_x509_certificate(
                    decode_forwarded_certificate(answer.get("header_value"))
                )
            else:
                identity, certificate = transactions.verify_answer(
                    answer.get("answer") or {},
                    check=check,
                    transaction=row.transaction,
                    challenge=challenge.challenge,
                    now=clock.now(),
                )
            practitioner, card = transactions.sign_in_card_holder(
                db, identity=identity, certificate=certificate, clock=clock
            )
            attempt.claim(practitioner.id)
            transactions.complete_transaction(
                db,
                row_id=row.id,
                practitioner=practitioner,
                card=card,
                method=via,
                clock=clock,
                consumed=via == BRIDGE,  # the page that answered logs in at once
                result=answer.get("result") if via == TLS else None,
            )
        except (SmartcardVerificationError, MethodError) as exc:
            error = CardRefusedError(exc) if isinstance(exc, SmartcardVerificationError) else exc
            error.details.setdefault("method", via)
            if identity is not None and attempt.claimed is None:
                error.details["rpps"] = identity.rpps  # a public directory number
            error.transaction_row = row_id
            if error is exc:
                raise
            raise error from exc
        return Verified(
            practitioner.id,
            acr=assurance.HIGH,
            amr=transactions.AMR,
            enrolment_id=card.id,
            details={"method": via, "card": card.id},
        )

    def refused(self, db: Session, attempt: Attempt, error: MethodError) -> None:
        """After the rollback: the refused transaction keeps its reason (the page polls it)."""
        row_id = getattr(error, "transaction_row", None)
        if row_id is not None:
            transactions.record_failure(db, row_id=row_id, reason=error.code)

    def pick_up(self, db: Session, attempt: Attempt, answer: Mapping[str, Any]) -> Verified:
        """The browser takes over a login the agent (``code``) or the card host (``tls``, with
        its one-time ``result``) completed for the transaction of its session."""
        clock = attempt.context["clock"]
        if answer.get("via") == TLS:
            row = transactions.finish_tls_login(
                db, transaction=answer.get("transaction"), result=answer.get("result"), clock=clock
            )
        else:
            row = transactions.complete_code_login(
                db, transaction=answer.get("transaction"), clock=clock
            )
        return Verified(
            row.practitioner_id,
            acr=assurance.HIGH,
            amr=transactions.AMR,
            enrolment_id=row.smartcard_id,
            details={"method": row.method, "card": row.smartcard_id},
        )

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
