"""Account recovery when a practitioner has lost every factor.

Email alone never gives an account back. The practitioner files a request (RPPS number and
registered email: the answer is the same whether they match or not); operators check who they
are and approve it, each under their own name, as many different operators as the deployment
asks (``IDP_RECOVERY_APPROVALS``, four eyes by default); a cooling-off delay then runs
(``IDP_RECOVERY_COOLING_OFF``) during which the practitioner is told by email, any session
signed in with a remaining factor can cancel it, and an operator can still deny it. Only after
the delay does the one-time link work: it revokes every factor, session and access token of the
account, clears the password and opens a fresh enrolment, exactly like an invitation.

Every flow here is one unit of work and commits once, at its end.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp import audit
from idp.accounts import service
from idp.crypto import hash_token, new_token
from idp.models import (
    AuditEvent,
    Invitation,
    Practitioner,
    PractitionerStatus,
    RecoveryApproval,
    RecoveryRequest,
    RecoveryStatus,
    Token,
)
from idp.notifications import notify

#: No 0/O, 1/I/L, U: nothing to confuse when read out over the phone.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_LENGTH = 8
#: An approved request whose link was not used this long after the delay expires.
LINK_VALIDITY = dt.timedelta(days=7)
#: A request nobody approved or denied in this time expires.
PENDING_VALIDITY = dt.timedelta(days=30)
MAX_MESSAGE = 1000
MAX_REASON = 300
MAX_OPERATOR = 100
HISTORY_EVENTS = (
    "account:recovery:requested",
    "account:recovery:approval_given",
    "account:recovery:approved",
    "account:recovery:denied",
    "account:recovery:cancelled",
    "account:recovery:completed",
    "account:recovery:expired",
)


class RecoveryError(Exception):
    """A refused operator or practitioner action; the message says why (English, for the CLI)."""


class NoSuchRequestError(RecoveryError):
    pass


class RequestClosedError(RecoveryError):
    pass


class ApprovalRefusedError(RecoveryError):
    pass


class LinkInvalidError(RecoveryError):
    """The recovery link is unknown, used, or its request is no longer approved."""


class LinkNotYetError(RecoveryError):
    """The cooling-off delay still runs."""

    def __init__(self, until: dt.datetime) -> None:
        super().__init__(f"the link works from {until.isoformat()}")
        self.until = until


@dataclass(frozen=True)
class Rules:
    """The deployment's rules: approvals needed, the delay, and where links point."""

    approvals: int
    cooling_off: dt.timedelta
    issuer: str
    time_zone: str = "Europe/Paris"

    @classmethod
    def of(cls, settings) -> Rules:
        return cls(
            approvals=settings.recovery_approvals,
            cooling_off=dt.timedelta(seconds=settings.recovery_cooling_off_seconds),
            issuer=settings.issuer,
            time_zone=settings.time_zone,
        )

    def format(self, when: dt.datetime) -> str:
        return when.astimezone(ZoneInfo(self.time_zone)).strftime("%d/%m/%Y %H:%M")


@dataclass(frozen=True)
class Approval:
    """What one approval did: the count so far, and the link once the request is approved."""

    given: int
    needed: int
    approved: bool
    link: str | None = None
    """Only for the message to the practitioner (and tests): never printed to an operator."""


# --------------------------------------------------------------------------- references


def display(reference: str) -> str:
    """``ABCD2345`` → ``ABCD-2345``."""
    return f"{reference[:4]}-{reference[4:]}"


def normalise(reference: str) -> str:
    return "".join(c for c in (reference or "").upper() if c.isalnum())[:20]


def new_reference() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(REFERENCE_LENGTH))


def decoy_reference(secret: str, rpps: str, email: str) -> str:
    """The reference shown when nothing matches: stable for the same input, like a real one
    filed twice, and indistinguishable from it."""
    digest = hmac.new(
        secret.encode(), f"recovery\0{rpps}\0{email}".encode(), hashlib.sha256
    ).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:REFERENCE_LENGTH])


# --------------------------------------------------------------------------- reading


def find_request(db: Session, reference: str, *, lock: bool = False) -> RecoveryRequest:
    query = select(RecoveryRequest).where(RecoveryRequest.reference == normalise(reference))
    if lock:
        query = query.with_for_update()
    found = db.execute(query).scalar_one_or_none()
    if found is None:
        raise NoSuchRequestError(f"no recovery request {reference!r}")
    return found


def is_stale(request: RecoveryRequest, now: dt.datetime) -> bool:
    if request.status == RecoveryStatus.PENDING:
        return now >= request.created_at + PENDING_VALIDITY
    if request.status == RecoveryStatus.APPROVED and request.cooling_off_until is not None:
        return now >= request.cooling_off_until + LINK_VALIDITY
    return False


def _close(request: RecoveryRequest, status: str) -> None:
    request.status = status
    request.open_for = None


def _expire(db: Session, request: RecoveryRequest) -> None:
    _close(request, RecoveryStatus.EXPIRED)
    audit.record(
        db,
        "account:recovery:expired",
        practitioner_id=request.practitioner_id,
        reference=display(request.reference),
    )


def refresh(db: Session, request: RecoveryRequest, *, now: dt.datetime) -> bool:
    """Expire the request if its time is over (the caller commits); True if it did."""
    if request.status in RecoveryStatus.OPEN and is_stale(request, now):
        _expire(db, request)
        return True
    return False


def expire_stale(db: Session, *, now: dt.datetime) -> int:
    """Every open request whose time is over becomes expired, audited; commits."""
    count = 0
    for status in RecoveryStatus.OPEN:
        query = select(RecoveryRequest).where(RecoveryRequest.status == status)
        if status == RecoveryStatus.PENDING:  # the index on (status, created_at)
            query = query.where(RecoveryRequest.created_at <= now - PENDING_VALIDITY)
        for request in db.execute(query).scalars():
            count += refresh(db, request, now=now)
    db.commit()
    return count


def open_request_for(
    db: Session, practitioner_id: int, *, now: dt.datetime
) -> RecoveryRequest | None:
    """The practitioner's open request, if any, and still in its time (unique ``open_for``)."""
    found = db.execute(
        select(RecoveryRequest).where(RecoveryRequest.open_for == practitioner_id)
    ).scalar_one_or_none()
    if found is None or is_stale(found, now):
        return None
    return found


def list_requests(db: Session, *, status: str | None, limit: int = 100) -> list[RecoveryRequest]:
    """Newest first; open ones (pending or approved) unless a status is named."""
    statuses = (status,) if status else RecoveryStatus.OPEN
    query = (
        select(RecoveryRequest)
        .where(RecoveryRequest.status.in_(statuses))
        .order_by(RecoveryRequest.created_at.desc())
        .limit(limit)
    )
    return list(db.execute(query).scalars())


def approvals_of(db: Session, request: RecoveryRequest) -> list[RecoveryApproval]:
    return list(
        db.execute(
            select(RecoveryApproval)
            .where(RecoveryApproval.request_id == request.id)
            .order_by(RecoveryApproval.at, RecoveryApproval.id)
        ).scalars()
    )


def summary(db: Session, request: RecoveryRequest) -> dict:
    practitioner = db.get(Practitioner, request.practitioner_id)

    def iso(value):
        return value.isoformat() if value else None

    return {
        "reference": display(request.reference),
        "status": request.status,
        "rpps": practitioner.rpps,
        "name": f"{practitioner.given_name} {practitioner.family_name}",
        "email": practitioner.email,
        "created_at": iso(request.created_at),
        "ip": request.ip,
        "user_agent": request.user_agent,
        "message": request.message,
        "approvals": [{"operator": a.operator, "at": iso(a.at)} for a in approvals_of(db, request)],
        "approved_at": iso(request.approved_at),
        "cooling_off_until": iso(request.cooling_off_until),
        "link_used_at": iso(request.link_used_at),
        "decided_by": request.decided_by,
        "denied_reason": request.denied_reason,
        "cancelled_at": iso(request.cancelled_at),
        "completed_at": iso(request.completed_at),
    }


def history(db: Session, request: RecoveryRequest) -> list[dict]:
    """The request's audit events, oldest first (the practitioner's, of these kinds only)."""
    events = db.execute(
        select(AuditEvent)
        .where(
            AuditEvent.practitioner_id == request.practitioner_id,
            AuditEvent.event.in_(HISTORY_EVENTS),
            AuditEvent.at >= request.created_at,
        )
        .order_by(AuditEvent.at, AuditEvent.id)
    ).scalars()
    reference = display(request.reference)
    return [
        {"at": event.at.isoformat(), "event": event.event, "details": event.details}
        for event in events
        if event.details.get("reference") == reference
    ]


# --------------------------------------------------------------------------- filing


def file_request(
    db: Session,
    *,
    rpps: str,
    email: str,
    message: str = "",
    now: dt.datetime,
    secret: str,
    ip: str | None = None,
    user_agent: str | None = None,
) -> str:
    """The reference to show, whether or not RPPS and email name an active practitioner
    (no account enumeration). For a match, the practitioner's open request (one at most:
    filing again gives the same one), or a new one, audited and told. Commits."""
    rpps = (rpps or "").strip()
    email = (email or "").strip().lower()
    practitioner = db.execute(
        select(Practitioner).where(Practitioner.rpps == rpps)
    ).scalar_one_or_none()
    if (
        practitioner is None
        or practitioner.status != PractitionerStatus.ACTIVE
        or not hmac.compare_digest(practitioner.email.lower().encode(), email.encode())
    ):
        return display(decoy_reference(secret, rpps, email))
    earlier = db.execute(
        select(RecoveryRequest).where(RecoveryRequest.open_for == practitioner.id)
    ).scalar_one_or_none()
    if earlier is not None and refresh(db, earlier, now=now):
        db.flush()
        earlier = None
    if earlier is not None:
        db.commit()
        return display(earlier.reference)
    request = RecoveryRequest(
        reference=new_reference(),
        practitioner_id=practitioner.id,
        open_for=practitioner.id,
        created_at=now,
        ip=(ip or "")[:64] or None,
        user_agent=(user_agent or "")[:300] or None,
        message=(message or "").strip()[:MAX_MESSAGE] or None,
        status=RecoveryStatus.PENDING,
    )
    db.add(request)
    reference = display(request.reference)
    audit.record(
        db, "account:recovery:requested", practitioner_id=practitioner.id, reference=reference
    )
    notify(db, practitioner, "recovery_requested", reference=reference)
    try:
        db.commit()
    except IntegrityError:  # the same practitioner filed at the same instant: theirs stands
        db.rollback()
        other = db.execute(
            select(RecoveryRequest).where(RecoveryRequest.open_for == practitioner.id)
        ).scalar_one()
        return display(other.reference)
    return reference


# --------------------------------------------------------------------------- operators


def _open_or_fail(db: Session, request: RecoveryRequest, now: dt.datetime) -> None:
    if refresh(db, request, now=now):
        db.commit()
        raise RequestClosedError(f"request {display(request.reference)} has expired")
    if request.status not in RecoveryStatus.OPEN:
        raise RequestClosedError(f"request {display(request.reference)} is {request.status}")


def _operator(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ApprovalRefusedError("an operator name is required")
    if len(name) > MAX_OPERATOR:
        raise ApprovalRefusedError(f"the operator name is longer than {MAX_OPERATOR} characters")
    return name


def approve(
    db: Session, reference: str, *, operator: str, rules: Rules, now: dt.datetime
) -> Approval:
    """One operator's approval. Once ``rules.approvals`` different operators approved, the
    cooling-off starts and the one-time link is made and sent to the practitioner. Commits."""
    operator = _operator(operator)
    request = find_request(db, reference, lock=True)  # concurrent approvals count one by one
    _open_or_fail(db, request, now)
    if request.status != RecoveryStatus.PENDING:
        raise RequestClosedError(f"request {display(request.reference)} is already approved")
    practitioner = db.get(Practitioner, request.practitioner_id)
    if operator.lower() in (practitioner.rpps, practitioner.email.lower()):
        raise ApprovalRefusedError("the practitioner who asked cannot approve their own request")
    given = approvals_of(db, request)
    if any(a.operator == operator for a in given):
        raise ApprovalRefusedError(
            f"{operator} already approved this request: "
            f"another operator must approve it ({len(given)} of {rules.approvals})"
        )
    db.add(RecoveryApproval(request_id=request.id, operator=operator, at=now))
    count = len(given) + 1
    ref = display(request.reference)
    audit.record(
        db,
        "account:recovery:approval_given",
        practitioner_id=practitioner.id,
        reference=ref,
        operator=operator,
        approvals=count,
        needed=rules.approvals,
    )
    link = None
    if count >= rules.approvals:
        token = new_token(32)
        link = f"{rules.issuer}/recover/{token}"
        request.status = RecoveryStatus.APPROVED
        request.approved_at = now
        request.cooling_off_until = now + rules.cooling_off
        request.link_token_hash = hash_token(token)
        request.decided_by = operator
        audit.record(
            db,
            "account:recovery:approved",
            practitioner_id=practitioner.id,
            reference=ref,
            operator=operator,
            cooling_off_until=request.cooling_off_until.isoformat(),
        )
        notify(
            db,
            practitioner,
            "recovery_approved",
            until=rules.format(request.cooling_off_until),
            link=link,
        )
    try:
        db.commit()
    except IntegrityError as exc:  # the same operator approving at the same instant
        db.rollback()
        raise ApprovalRefusedError(f"{operator} already approved this request") from exc
    return Approval(given=count, needed=rules.approvals, approved=link is not None, link=link)


def deny(
    db: Session, reference: str, *, operator: str, reason: str, now: dt.datetime
) -> RecoveryRequest:
    """Refused by an operator, pending or during the cooling-off. Commits."""
    operator = _operator(operator)
    reason = (reason or "").strip()
    if not reason:
        raise ApprovalRefusedError("a reason is required")
    request = find_request(db, reference, lock=True)
    _open_or_fail(db, request, now)
    _close(request, RecoveryStatus.DENIED)
    request.decided_by = operator
    request.denied_reason = reason[:MAX_REASON]
    audit.record(
        db,
        "account:recovery:denied",
        practitioner_id=request.practitioner_id,
        reference=display(request.reference),
        operator=operator,
        reason=request.denied_reason,
    )
    db.commit()
    return request


# --------------------------------------------------------------------------- the practitioner


def cancel(db: Session, reference: str, *, practitioner_id: int, now: dt.datetime) -> None:
    """ "It wasn't me": the practitioner, signed in with a factor they still hold, ends their
    open request. Commits."""
    request = find_request(db, reference, lock=True)
    if request.practitioner_id != practitioner_id:
        raise NoSuchRequestError(f"no recovery request {reference!r}")
    _open_or_fail(db, request, now)
    _close(request, RecoveryStatus.CANCELLED)
    request.cancelled_at = now
    audit.record(
        db,
        "account:recovery:cancelled",
        practitioner_id=practitioner_id,
        reference=display(request.reference),
    )
    notify(db, db.get(Practitioner, practitioner_id), "recovery_cancelled")
    db.commit()


def request_for_link(db: Session, token: str, *, now: dt.datetime) -> RecoveryRequest:
    """The approved request a link names; raises LinkInvalidError otherwise (read only)."""
    request = db.execute(
        select(RecoveryRequest).where(RecoveryRequest.link_token_hash == hash_token(token or ""))
    ).scalar_one_or_none()
    return usable_request(db, request.id if request else None, now=now)


def usable_request(db: Session, request_id: object, *, now: dt.datetime) -> RecoveryRequest:
    request = db.get(RecoveryRequest, request_id) if isinstance(request_id, int) else None
    if (
        request is None
        or request.status != RecoveryStatus.APPROVED
        or request.link_used_at is not None
        or is_stale(request, now)
    ):
        raise LinkInvalidError("this recovery link is not valid")
    return request


def complete(db: Session, request_id: object, *, now: dt.datetime, methods, sessions) -> Invitation:
    """The link, used after the delay: every old factor, session and access token revoked,
    the password cleared, the account invited again with a fresh invitation (returned, for
    the enrolment pages). Single use, claimed atomically. One unit of work, committed here;
    then every session of the account ends (``sessions``: the session store)."""
    request = usable_request(db, request_id, now=now)
    if now < request.cooling_off_until:
        raise LinkNotYetError(request.cooling_off_until)
    claimed = db.execute(
        update(RecoveryRequest)
        .where(
            RecoveryRequest.id == request.id,
            RecoveryRequest.status == RecoveryStatus.APPROVED,
            RecoveryRequest.link_used_at.is_(None),
        )
        .values(
            link_used_at=now,
            completed_at=now,
            status=RecoveryStatus.COMPLETED,
            open_for=None,
        )
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        db.rollback()
        raise LinkInvalidError("this recovery link was already used")
    practitioner = db.get(Practitioner, request.practitioner_id)
    revoked = methods.revoke_all(db, practitioner.id, now=now)
    audit.record(
        db,
        "account:two_factor:all_revoked",
        practitioner_id=practitioner.id,
        revoked=revoked,
        reason="recovery",
    )
    tokens = db.execute(
        update(Token)
        .where(Token.practitioner_id == practitioner.id, Token.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    practitioner.password_hash = None
    practitioner.status = PractitionerStatus.INVITED
    for earlier in db.execute(
        select(Invitation).where(
            Invitation.practitioner_id == practitioner.id,
            Invitation.used_at.is_(None),
            Invitation.expires_at > now,
        )
    ).scalars():
        earlier.expires_at = now
    invitation_token = service.create_invitation(db, practitioner=practitioner, clock=_At(now))
    db.flush()
    invitation = db.execute(
        select(Invitation).where(Invitation.token_hash == hash_token(invitation_token))
    ).scalar_one()
    audit.record(
        db,
        "account:recovery:completed",
        practitioner_id=practitioner.id,
        reference=display(request.reference),
        factors_revoked=revoked,
        tokens_revoked=tokens,
    )
    notify(db, practitioner, "recovery_completed")
    db.commit()
    # After the commit: the session store writes on its own connection (on SQLite it would
    # wait on this transaction's write lock). Meanwhile the account is invited, which every
    # signed-in route checks, so no old session is honoured in between.
    sessions.delete_for(practitioner.id)
    return invitation


class _At:
    """A clock that stays at one instant: the whole completion happens at ``now``."""

    def __init__(self, now: dt.datetime) -> None:
        self._now = now

    def now(self) -> dt.datetime:
        return self._now
