"""Practitioners: creation, invitations, TOTP enrolment and removal."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp import audit
from idp.auth.enrolment import InvitationInvalidError
from idp.clock import Clock
from idp.crypto import hash_token, new_token
from idp.models import Invitation, Practitioner, PractitionerStatus
from idp.notifications import notify
from idp.professions import PROFESSIONS
from idp.services import passwords, settings

INVITATION_TTL = dt.timedelta(days=3)
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AccountError(Exception):
    pass


class InvalidPractitionerError(AccountError):
    pass


class InvalidPasswordError(AccountError):
    pass


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def validate_rpps(rpps: str) -> str:
    """11 digits. Public samples pass a Luhn check, but that is undocumented: soft rule."""
    rpps = (rpps or "").strip()
    if len(rpps) != 11 or not rpps.isdigit():
        raise InvalidPractitionerError("RPPS must be 11 digits")
    return rpps


def validate_password(password: str) -> str:
    if not (MIN_PASSWORD_LENGTH <= len(password or "") <= MAX_PASSWORD_LENGTH):
        raise InvalidPasswordError(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    return password


def create_practitioner(
    db: Session,
    *,
    rpps: str,
    given_name: str,
    family_name: str,
    profession_code: str,
    email: str,
    clock: Clock,
    password: str | None = None,
) -> Practitioner:
    rpps = validate_rpps(rpps)
    email = (email or "").strip().lower()
    if not EMAIL_RE.match(email):
        raise InvalidPractitionerError("invalid email address")
    if profession_code not in PROFESSIONS:
        raise InvalidPractitionerError(f"unknown profession code {profession_code!r}")
    if not given_name.strip() or not family_name.strip():
        raise InvalidPractitionerError("given and family names are required")
    exists = db.execute(
        select(Practitioner).where((Practitioner.rpps == rpps) | (Practitioner.email == email))
    ).first()
    if exists:
        raise InvalidPractitionerError("a practitioner with this RPPS or email already exists")
    practitioner = Practitioner(
        rpps=rpps,
        given_name=given_name.strip(),
        family_name=family_name.strip(),
        profession_code=profession_code,
        email=email,
        password_hash=hashed_password(password) if password else None,
        status=PractitionerStatus.INVITED,
        created_at=clock.now(),
    )
    db.add(practitioner)
    db.flush()
    audit.record(db, "account:practitioner:created", practitioner_id=practitioner.id)
    return practitioner


def enrolment_url(token: str) -> str:
    """The link an invitation is opened with (``/enrol/<token>``), on this deployment."""
    return f"{settings().issuer}/enrol/{token}"


def create_invitation(db: Session, *, practitioner: Practitioner, clock: Clock) -> str:
    """A one-time enrolment link, emailed to the practitioner in the same unit of work (the
    token is returned once, for the operator); the caller commits."""
    token = new_token(32)
    now = clock.now()
    db.add(
        Invitation(
            practitioner_id=practitioner.id,
            token_hash=hash_token(token),
            created_at=now,
            expires_at=now + INVITATION_TTL,
        )
    )
    audit.record(db, "account:invitation:created", practitioner_id=practitioner.id)
    notify(
        db, practitioner, "invitation", link=enrolment_url(token), expires_at=now + INVITATION_TTL
    )
    return token


def find_invitation(db: Session, *, token: str, clock: Clock) -> Invitation:
    invitation = db.execute(
        select(Invitation).where(Invitation.token_hash == hash_token(token or ""))
    ).scalar_one_or_none()
    if invitation is None or invitation.used_at or invitation.expires_at <= clock.now():
        raise InvitationInvalidError()
    return invitation


def hashed_password(password: str) -> str:
    """A new password, checked (``validate_password``) and hashed with this deployment's
    argon2id parameters: what every way of setting a password stores."""
    return passwords().hash(validate_password(password))


def set_password(db: Session, *, practitioner: Practitioner, password: str) -> None:
    practitioner.password_hash = hashed_password(password)
    audit.record(db, "account:password:set", practitioner_id=practitioner.id)


# --------------------------------------------------------------------------- operator actions


class NoSuchPractitionerError(AccountError):
    pass


class StatusChangeError(AccountError):
    pass


def find_practitioner(db: Session, rpps: str) -> Practitioner:
    found = db.execute(
        select(Practitioner).where(Practitioner.rpps == (rpps or "").strip())
    ).scalar_one_or_none()
    if found is None:
        raise NoSuchPractitionerError(f"no practitioner with RPPS {rpps!r}")
    return found


def list_practitioners(
    db: Session, *, status: str | None = None, limit: int = 100, after_rpps: str = ""
) -> list[Practitioner]:
    """One page, in RPPS order; ``after_rpps`` continues where the previous page ended."""
    query = select(Practitioner).where(Practitioner.rpps > after_rpps)
    if status is not None:
        query = query.where(Practitioner.status == status)
    return list(db.execute(query.order_by(Practitioner.rpps).limit(limit)).scalars())


def disable_practitioner(db: Session, practitioner: Practitioner, *, operator: str) -> None:
    """The account can no longer sign in; its sessions end at their next request and its
    tokens are refused from now on (both check the status). The caller commits."""
    if practitioner.status == PractitionerStatus.DISABLED:
        raise StatusChangeError("this practitioner is already disabled")
    previous = practitioner.status
    practitioner.status = PractitionerStatus.DISABLED
    audit.record(
        db,
        "account:practitioner:disabled",
        practitioner_id=practitioner.id,
        operator=operator,
        previous=previous,
    )


def enable_practitioner(db: Session, practitioner: Practitioner, *, operator: str) -> None:
    """Back as it was before: active once a password was chosen, else still invited."""
    if practitioner.status != PractitionerStatus.DISABLED:
        raise StatusChangeError(f"this practitioner is {practitioner.status}, not disabled")
    enrolled = practitioner.password_hash is not None
    practitioner.status = PractitionerStatus.ACTIVE if enrolled else PractitionerStatus.INVITED
    audit.record(
        db,
        "account:practitioner:enabled",
        practitioner_id=practitioner.id,
        operator=operator,
        status=practitioner.status,
    )


def summary(practitioner: Practitioner) -> dict:
    return {
        "rpps": practitioner.rpps,
        "given_name": practitioner.given_name,
        "family_name": practitioner.family_name,
        "profession_code": practitioner.profession_code,
        "email": practitioner.email,
        "status": practitioner.status,
        "created_at": practitioner.created_at.isoformat(),
    }


def details(db: Session, practitioner: Practitioner, *, methods, now: dt.datetime) -> dict:
    """What an operator sees of one account: identity, factors, last login. No secret."""
    from idp.auth.flow import LOGIN_COMPLETED
    from idp.models import AuditEvent

    last_login = db.execute(
        select(AuditEvent.at)
        .where(AuditEvent.practitioner_id == practitioner.id, AuditEvent.event == LOGIN_COMPLETED)
        .order_by(AuditEvent.at.desc())
        .limit(1)
    ).scalar_one_or_none()
    factors = [
        {
            "kind": enrolment.kind,
            "name": enrolment.name,
            "level": enrolment.level,
            "usable": enrolment.usable,
            "created_at": enrolment.created_at.isoformat() if enrolment.created_at else None,
            "last_used_at": enrolment.last_used_at.isoformat() if enrolment.last_used_at else None,
        }
        for method in methods.factors()
        for enrolment in method.enrolments(db, practitioner.id, now=now)
    ]
    limited = methods.limited_method()
    return {
        **summary(practitioner),
        "last_login_at": last_login.isoformat() if last_login else None,
        "factors": factors,
        "recovery_codes_left": limited.remaining(db, practitioner.id) if limited else None,
    }


# --------------------------------------------------------------------------- onboarding a file

IMPORT_COLUMNS = ("rpps", "given_name", "family_name", "profession_code", "email")


class ImportRejectedError(AccountError):
    """Every bad row, by line number: nothing of the file was imported."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__(f"{len(problems)} bad row(s)")
        self.problems = problems


def read_import(text: str) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV file (comma or semicolon, a header naming ``IMPORT_COLUMNS``), each
    with its line number; raises ImportRejectedError for a file that cannot be read."""
    import csv
    import io

    first_line = text.splitlines()[0] if text.strip() else ""
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [column for column in IMPORT_COLUMNS if column not in header]
    if missing:
        raise ImportRejectedError([(1, f"missing column(s): {', '.join(missing)}")])
    reader.fieldnames = header
    rows = []
    for record in reader:
        if not any((value or "").strip() for value in record.values() if isinstance(value, str)):
            continue  # a blank line
        rows.append((reader.line_num, {k: (record.get(k) or "").strip() for k in IMPORT_COLUMNS}))
    return rows


def import_practitioners(
    db: Session, rows: list[tuple[int, dict[str, str]]], *, clock: Clock, dry_run: bool
) -> list[tuple[Practitioner, str | None]]:
    """Every row checked (against the database and the rows before it); all or nothing.

    Raises ImportRejectedError listing every bad row. A dry run checks and changes nothing;
    otherwise each practitioner is invited (the token is returned once, for the link) and the
    caller commits."""
    problems: list[tuple[int, str]] = []
    created: list[Practitioner] = []
    for line, row in rows:
        try:
            created.append(create_practitioner(db, clock=clock, **row))
        except AccountError as exc:
            problems.append((line, str(exc)))
    if not rows:
        problems.append((1, "no practitioner in the file"))
    if problems or dry_run:
        db.rollback()
        if problems:
            raise ImportRejectedError(problems)
        return [(practitioner, None) for practitioner in created]
    return [(p, create_invitation(db, practitioner=p, clock=clock)) for p in created]


def resend_invitation(
    db: Session, practitioner: Practitioner, *, clock: Clock, operator: str
) -> str:
    """A new link for a practitioner still invited; the links sent before stop working now."""
    if practitioner.status != PractitionerStatus.INVITED:
        raise StatusChangeError(f"this practitioner is {practitioner.status}, not invited")
    now = clock.now()
    for earlier in db.execute(
        select(Invitation).where(
            Invitation.practitioner_id == practitioner.id,
            Invitation.used_at.is_(None),
            Invitation.expires_at > now,
        )
    ).scalars():
        earlier.expires_at = now
    token = create_invitation(db, practitioner=practitioner, clock=clock)
    audit.record(
        db, "account:invitation:resent", practitioner_id=practitioner.id, operator=operator
    )
    return token


def recent_events(db: Session, *, practitioner: Practitioner | None, limit: int) -> list[dict]:
    """The last ``limit`` audit events, oldest first (the whole trail, or one account's)."""
    from idp.models import AuditEvent

    query = select(AuditEvent)
    if practitioner is not None:
        query = query.where(AuditEvent.practitioner_id == practitioner.id)
    events = list(db.execute(query.order_by(AuditEvent.id.desc()).limit(limit)).scalars())
    return [
        {
            "at": event.at.isoformat(),
            "event": event.event,
            "practitioner_id": event.practitioner_id,
            "client_id": event.client_id,
            "ip": event.ip,
            "details": event.details,
        }
        for event in reversed(events)
    ]


def unlock_practitioner(db: Session, practitioner: Practitioner, *, throttle, operator: str):
    """Clear every throttle counter of this account (each limiter's account and device keys),
    so a practitioner locked out by failed attempts may try again at once. Returns the keys
    cleared. The counters go on the throttle's own connection; the caller commits the audit."""
    cleared = throttle.unlock(practitioner.id)
    audit.record(
        db,
        "account:practitioner:unlocked",
        practitioner_id=practitioner.id,
        operator=operator,
        cleared=cleared,
    )
    return cleared
