"""CPS smart-card login transactions: one per login page, three ways for the card to answer.

Showing ``/login/card`` starts a transaction (``start_login``): a single-use challenge from
``idp.challenges`` and a short one-time code, both reachable only through the transaction id
kept in that browser's server-side session. The card then proves itself by one of:

- the local bridge: the page hands the agent's signature over;
- terminal mode: the agent posts its signature under the code, then the page that shows the
  code picks the completed transaction up once (``complete_code_login``);
- a TLS client certificate on the card host, then back on the main host the browser picks the
  transaction up with the card host's one-time result (``finish_tls_login``).

Each answer goes through ``idp.auth.orchestrator`` (throttle, audit, commit) into
``SmartcardMethod.finish`` (``idp.factors.smartcard.method``), which uses the pieces below: it
claims the challenge atomically before verifying anything, so the first answer wins and every
other one (a replay, a concurrent path) finds it used (SC-02). The identity comes only from a
certificate verified against the operator's CAs and fresh CRLs (SC-01) and is mapped by RPPS;
the PIN is checked by the card and never reaches this module (SC-03). A card login is a
complete two-factor login: something you have (the card's key) and something you know (PIN).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from idp import challenges
from idp.auth.contract import AccountUnavailableError, MethodError
from idp.clock import Clock
from idp.crypto import hash_token, new_token
from idp.factors.smartcard import enrolment as cards
from idp.factors.smartcard.trust import CardTrust, CrlSource
from idp.factors.smartcard.verify import CardIdentity, decode_submission, verify_submission
from idp.models import AuthChallenge, Practitioner, PractitionerStatus, Smartcard, SmartcardLogin
from idp.ratelimit import Throttle, key
from smartcard.protocol import SigningRequest, encode_b64url, signing_payload

PURPOSE = "smartcard.login"
LOGIN_TTL = dt.timedelta(minutes=5)
"""How long a login page's challenge and code stay valid (the code protocol allows 10)."""
PICKUP_WINDOW = dt.timedelta(minutes=2)
"""A transaction completed by the agent or the card host must be picked up by its browser
within this time."""
CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""32 symbols without 0/O or 1/I: 5 bits each, read aloud or copied without confusion."""
CODE_LENGTH = 8  # 40 bits: unguessable within LOGIN_TTL under the per-address throttle
AMR = ("sc", "pin", "hwk", "mfa")
MAX_RESULT_LENGTH = 100
RESUME_MARGIN = dt.timedelta(minutes=1)

BRIDGE = "bridge"
CODE = "code"
TLS = "tls"


class SmartcardLoginError(MethodError):
    """A card login refused by the service; ``code`` is stable for audit, JSON and pages."""

    code = "smartcard_login_refused"


class TransactionInvalidError(SmartcardLoginError):
    """Unknown or expired login transaction or code (or from another browser session)."""

    code = "transaction_invalid"


class TransactionUsedError(TransactionInvalidError):
    """The transaction was already answered (successfully or not): one answer per challenge."""

    code = "transaction_used"


class UnknownCardHolderError(SmartcardLoginError):
    """A valid card whose RPPS number matches no account here."""

    code = "unknown_practitioner"

    def __init__(self, rpps: str) -> None:
        super().__init__(f"no practitioner with RPPS {rpps}")
        self.rpps = rpps


class CardRemovedError(SmartcardLoginError):
    """The practitioner removed this very card (certificate) from the account."""

    code = "card_removed"


class CardConflictError(SmartcardLoginError):
    """The certificate is enrolled to another account, or was enrolled concurrently."""

    code = "card_conflict"


class CardHolderUnavailableError(AccountUnavailableError):
    """A genuine card of a suspended or disabled account: not counted, audited as a failure."""

    event = "failed"


@dataclass(frozen=True)
class CardCheck:
    """What a card's answer is checked against: operator trust, shared CRLs, our origin."""

    trust: CardTrust
    crls: CrlSource
    origin: str


@dataclass(frozen=True)
class StartedLogin:
    transaction: str
    challenge: str
    code: str

    @property
    def code_display(self) -> str:
        """``ABCD-EFGH``: two groups are easier to copy; the hyphen is optional when typed."""
        half = len(self.code) // 2
        return f"{self.code[:half]}-{self.code[half:]}"


@dataclass(frozen=True)
class LoginState:
    """What the page polling for terminal mode may know: no identity, only progress."""

    status: str  # pending, completed, failed, expired, used
    failure: str | None = None


# --------------------------------------------------------------------------- transactions


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(code: Any) -> str | None:
    """Upper case, hyphens and spaces dropped; None unless it can be one of our codes."""
    if not isinstance(code, str) or len(code) > 64:
        return None
    cleaned = code.replace("-", "").replace(" ", "").upper()
    if len(cleaned) != CODE_LENGTH or any(char not in CODE_ALPHABET for char in cleaned):
        return None
    return cleaned


def start_login(db: Session, *, clock: Clock) -> StartedLogin:
    """A fresh transaction for a login page: challenge, public transaction id and code."""
    now = clock.now()
    purge_expired(db, clock=clock)
    challenge_id, challenge = challenges.issue(
        db, purpose=PURPOSE, practitioner_id=None, clock=clock, ttl=LOGIN_TTL
    )
    code = new_code()
    while find_by_code(db, code=code) is not None:  # 2^40 codes: practically never loops
        code = new_code()
    row = SmartcardLogin(
        transaction=new_token(24),
        challenge_id=challenge_id,
        code_hash=hash_token(code),
        created_at=now,
        expires_at=now + LOGIN_TTL,
    )
    db.add(row)
    db.commit()
    return StartedLogin(transaction=row.transaction, challenge=encode_b64url(challenge), code=code)


def discard_login(db: Session, *, transaction: str | None) -> None:
    """A reloaded page supersedes its previous transaction if nothing answered it yet."""
    row = find_by_transaction(db, transaction=transaction)
    if row is None or row.completed_at is not None:
        return
    challenges.discard(db, challenge_id=row.challenge_id)
    db.execute(
        delete(SmartcardLogin).where(
            SmartcardLogin.id == row.id, SmartcardLogin.completed_at.is_(None)
        )
    )
    db.commit()


def purge_expired(db: Session, *, clock: Clock) -> None:
    """Transactions past their pickup window can never complete a login: keep the table small."""
    db.execute(
        delete(SmartcardLogin).where(
            SmartcardLogin.expires_at <= clock.now() - PICKUP_WINDOW - LOGIN_TTL
        )
    )


def find_by_transaction(db: Session, *, transaction: Any) -> SmartcardLogin | None:
    if not isinstance(transaction, str) or not transaction or len(transaction) > 64:
        return None
    return db.execute(
        select(SmartcardLogin).where(SmartcardLogin.transaction == transaction)
    ).scalar_one_or_none()


def find_by_code(db: Session, *, code: Any) -> SmartcardLogin | None:
    cleaned = normalise_code(code)
    if cleaned is None:
        return None
    return db.execute(
        select(SmartcardLogin).where(SmartcardLogin.code_hash == hash_token(cleaned))
    ).scalar_one_or_none()


def require_pending(row: SmartcardLogin | None, *, clock: Clock) -> SmartcardLogin:
    if row is None or row.expires_at <= clock.now():
        raise TransactionInvalidError()
    if row.completed_at is not None or row.consumed_at is not None or row.failure is not None:
        raise TransactionUsedError()
    return row


def is_pending(db: Session, *, transaction: str | None, clock: Clock) -> bool:
    try:
        require_pending(find_by_transaction(db, transaction=transaction), clock=clock)
    except TransactionInvalidError:
        return False
    return True


def login_state(db: Session, *, transaction: str | None, clock: Clock) -> LoginState:
    """Terminal-mode progress for the page that started the transaction.

    Only a code completion reads as "completed": a transaction completed on the card host can
    be picked up with the card host's one-time result only, never by polling.
    """
    row = find_by_transaction(db, transaction=transaction)
    if row is None:
        return LoginState("expired")
    if row.consumed_at is not None:
        return LoginState("used")
    if row.failure is not None:
        return LoginState("failed", row.failure)
    if row.completed_at is not None:
        return LoginState("completed" if row.method == CODE else "pending")
    if row.expires_at <= clock.now():
        return LoginState("expired")
    return LoginState("pending")


def signing_request(
    db: Session, *, code: Any, origin: str, ip: str, throttle: Throttle, clock: Clock
) -> SigningRequest:
    """Terminal mode, step 1: what the agent must sign for ``code`` (nothing is consumed).

    Unknown codes count as failures for the address: 40 bits are safe only if guessing is slow.
    """
    reservation = throttle.reserve([key("smartcard.ip", ip)])  # an unknown code stays counted
    row = require_pending(find_by_code(db, code=code), clock=clock)
    challenge = pending_challenge(db, row=row, clock=clock)
    throttle.succeeded(reservation)
    return SigningRequest(
        origin=origin, transaction=row.transaction, challenge=encode_b64url(challenge.challenge)
    )


def pending_challenge(db: Session, *, row: SmartcardLogin, clock: Clock) -> AuthChallenge:
    challenge = db.get(AuthChallenge, row.challenge_id)
    if challenge is None or challenge.expires_at <= clock.now():
        raise TransactionInvalidError()
    if challenge.used_at is not None:
        raise TransactionUsedError()
    return challenge


def resume_login(db: Session, *, transaction: Any, code: Any, clock: Clock) -> StartedLogin | None:
    """The session's transaction again (a reloaded page keeps the code being typed), if it is
    still pending with a minute left; None otherwise."""
    row = find_by_transaction(db, transaction=transaction)
    if row is None or not isinstance(code, str) or row.code_hash != hash_token(code):
        return None
    if row.expires_at - clock.now() < RESUME_MARGIN:
        return None
    try:
        challenge = pending_challenge(db, row=require_pending(row, clock=clock), clock=clock)
    except TransactionInvalidError:
        return None
    return StartedLogin(
        transaction=row.transaction, challenge=encode_b64url(challenge.challenge), code=code
    )


# --------------------------------------------------------------------------- verification


def verify_answer(
    answer: Mapping[str, Any],
    *,
    check: CardCheck,
    transaction: str,
    challenge: bytes,
    now: dt.datetime,
) -> tuple[CardIdentity, x509.Certificate]:
    """The agent's answer against our origin, this transaction and its challenge (SC-01/02).

    CRLs are looked up only for a certificate whose chain verified (CrlCache does that).
    """
    submission = decode_submission(answer)
    payload = signing_payload(
        origin=check.origin, transaction=transaction, challenge=encode_b64url(challenge)
    )
    crls = check.crls.crls_for_certificate(certificate_der=submission.certificate_der)
    identity = verify_submission(
        submission=answer,
        payload=payload,
        trust_anchors=check.trust.anchors,
        intermediates=check.trust.intermediates,
        crls=crls,
        now=now,
        policy=check.trust.policy,
    )
    return identity, x509.load_der_x509_certificate(submission.certificate_der)


def sign_in_card_holder(
    db: Session, *, identity: CardIdentity, certificate: x509.Certificate, clock: Clock
) -> tuple[Practitioner, Smartcard]:
    """Map a verified card to its account by RPPS; enrol the card and activate on first use."""
    practitioner = db.execute(
        select(Practitioner).where(Practitioner.rpps == identity.rpps)
    ).scalar_one_or_none()
    if practitioner is None:
        raise UnknownCardHolderError(identity.rpps)
    card = cards.find_card(db, fingerprint=identity.certificate_fingerprint_sha256)
    if card is not None and card.practitioner_id != practitioner.id:
        raise CardConflictError()
    if card is not None and card.removed_at is not None:
        raise CardRemovedError()
    if practitioner.status not in (PractitionerStatus.ACTIVE, PractitionerStatus.INVITED):
        raise CardHolderUnavailableError(practitioner.status)
    if card is None:
        try:
            card = cards.enrol_card(
                db,
                practitioner=practitioner,
                identity=identity,
                certificate=certificate,
                clock=clock,
            )
        except cards.CardEnrolmentConflictError as exc:
            raise CardConflictError() from exc
    if practitioner.status == PractitionerStatus.INVITED:
        cards.activate_with_card(db, practitioner=practitioner, clock=clock)
    card.last_used_at = clock.now()
    return practitioner, card


# --------------------------------------------------------------------------- answering


def claim_challenge(db: Session, *, row: SmartcardLogin, clock: Clock) -> AuthChallenge:
    """Consume the challenge (committed at once): whatever happens next, it is spent."""
    try:
        return challenges.consume(db, challenge_id=row.challenge_id, purpose=PURPOSE, clock=clock)
    except challenges.ChallengeInvalidError as exc:
        raise TransactionUsedError() from exc


def new_result() -> str:
    """The one-time result a TLS completion on the card host hands back to its browser.

    Why a result and not just the session: the card host is another host name, so it never
    sees the main host's session cookie (``__Host-`` cookies cannot be shared, by design), and
    the transaction id travels in a URL an attacker can hand to a victim. If completing it were
    enough, an attacker could start a login, send the card-host link to a practitioner and
    collect the practitioner's login in the attacker's own session. So completion stores the
    hash of a random result, returned in the redirect to the browser that presented the card
    only, and ``finish_tls_login`` accepts it only in the session that started the
    transaction: the attacker's session lacks the result, the victim's session lacks the
    transaction. (A shared binding cookie would need both hosts under one parent domain, which
    the result does not.)
    """
    return new_token(32)


def complete_transaction(
    db: Session,
    *,
    row_id: int,
    practitioner: Practitioner,
    card: Smartcard,
    method: str,
    clock: Clock,
    consumed: bool,
    result: str | None = None,
) -> None:
    """Mark the transaction completed for this practitioner, once (atomic UPDATE)."""
    now = clock.now()
    values: dict[str, Any] = {
        "completed_at": now,
        "practitioner_id": practitioner.id,
        "smartcard_id": card.id,
        "method": method,
        "result_hash": hash_token(result) if result else None,
    }
    if consumed:
        values["consumed_at"] = now
    done = db.execute(
        update(SmartcardLogin)
        .where(
            SmartcardLogin.id == row_id,
            SmartcardLogin.completed_at.is_(None),
            SmartcardLogin.failure.is_(None),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if done != 1:
        raise TransactionUsedError()


def record_failure(db: Session, *, row_id: int, reason: str) -> None:
    """Leave a refused answer's reason on its transaction (the polling page shows it); the
    caller commits. A transaction already completed or failed keeps what it has."""
    db.execute(
        update(SmartcardLogin)
        .where(
            SmartcardLogin.id == row_id,
            SmartcardLogin.completed_at.is_(None),
            SmartcardLogin.failure.is_(None),
        )
        .values(failure=reason)
        .execution_options(synchronize_session=False)
    )


# --------------------------------------------------------------------------- pick-up


def complete_code_login(db: Session, *, transaction: str | None, clock: Clock) -> SmartcardLogin:
    """Terminal mode, last step: the session holding the transaction consumes it, once."""
    return _pick_up(db, transaction=transaction, method=CODE, result=None, clock=clock)


def finish_tls_login(
    db: Session, *, transaction: str | None, result: Any, clock: Clock
) -> SmartcardLogin:
    """TLS client certificate, back on the main host: session transaction + result, once."""
    if not isinstance(result, str) or not result or len(result) > MAX_RESULT_LENGTH:
        raise TransactionInvalidError()
    return _pick_up(db, transaction=transaction, method=TLS, result=result, clock=clock)


def _pick_up(
    db: Session, *, transaction: str | None, method: str, result: str | None, clock: Clock
) -> SmartcardLogin:
    """Claim the completed transaction (atomic UPDATE, committed at once: of two concurrent
    pick-ups exactly one gets it); TransactionInvalidError when there is none to take."""
    row = find_by_transaction(db, transaction=transaction)
    if row is None:
        raise TransactionInvalidError()
    now = clock.now()
    conditions = [
        SmartcardLogin.id == row.id,
        SmartcardLogin.method == method,
        SmartcardLogin.completed_at.is_not(None),
        SmartcardLogin.completed_at > now - PICKUP_WINDOW,
        SmartcardLogin.consumed_at.is_(None),
    ]
    if result is not None:
        conditions.append(SmartcardLogin.result_hash == hash_token(result))
    claimed = db.execute(
        update(SmartcardLogin)
        .where(*conditions)
        .values(consumed_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        db.rollback()
        raise TransactionInvalidError()
    db.commit()
    db.refresh(row)
    return row
