"""The login state of a browser: the login in progress and the completed login, in one place.

State made for one person or one step is honoured only for that person and that step:

- ``first_factor``: the password was checked for ``pid``; ``login`` names this very login, so
  the state a step leaves behind (an enrolment, a counter of wrong codes) cannot be carried
  over into another login;
- ``enrolment``: an invited practitioner finishing their invitation, bound to the login their
  invitation's password step opened (``login``) and to that practitioner (``pid``);
- ``invitation``: an opened invitation link, before the password is chosen;
- ``step_up``: binding a new authenticator needs a stronger login first (NIST-10), for ``pid``;
- per-step leftovers: WebAuthn challenge ids, the card transaction, a pending TOTP seed;
- ``auth``: the completed login (pid, auth_time, acr, amr).

Every new login (``begin_login``, ``begin_enrolment``) and every completed one
(``complete_login``) starts from a clean login state: nothing of the previous attempt survives
but the application's pending request (``authz``) and where to go next.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from flask import session
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from idp import audit
from idp.auth.devices import remember_device
from idp.crypto import new_token
from idp.models import AuditEvent, Invitation, Practitioner, PractitionerStatus

IN_PROGRESS = (
    "first_factor",
    "enrolment",
    "invitation",
    "step_up",
    "challenges",
    "card_login",
    "totp_pending",
)
FAILED_EVENTS = (
    "auth:password:failed",
    "auth:totp:failed",
    "auth:webauthn:failed",
    "auth:smartcard:failed",
)
LOGIN_COMPLETED = "auth:login:completed"


@dataclass(frozen=True)
class Authentication:
    practitioner_id: int
    amr: tuple[str, ...]
    acr: str


def clear_login_in_progress(*, keep_step_up_for: int | None = None) -> None:
    step_up = session.get("step_up") or {}
    for name in IN_PROGRESS:
        session.pop(name, None)
    if keep_step_up_for is not None and step_up.get("pid") == keep_step_up_for:
        session["step_up"] = step_up


def begin_attempt() -> None:
    """A password was submitted: whatever it gives, the previous login in progress is over.
    (A step-up stays: it is honoured only for its own practitioner, see ``begin_login``.)"""
    step_up = session.get("step_up") or {}
    clear_login_in_progress(keep_step_up_for=step_up.get("pid"))


def begin_login(practitioner_id: int, *, now: dt.datetime) -> None:
    """The password is right: a new login, for this practitioner only, from a clean state."""
    clear_login_in_progress(keep_step_up_for=practitioner_id)
    session.pop("auth", None)
    session["first_factor"] = {
        "pid": practitioner_id,
        "at": now.timestamp(),
        "login": new_token(12),
    }
    session.rotate()


def first_factor() -> dict:
    return session.get("first_factor") or {}


def restart_login() -> None:
    """Too many wrong answers at the second step: back to the password."""
    clear_login_in_progress()
    session.rotate()


def open_invitation(invitation: Invitation) -> None:
    """The link was opened: remember the invitation server-side, forget any other login."""
    clear_login_in_progress()
    session.pop("auth", None)
    session["invitation"] = {"id": invitation.id, "pid": invitation.practitioner_id}
    session.rotate()


def opened_invitation() -> dict:
    return session.get("invitation") or {}


def begin_enrolment(invitation: Invitation, *, now: dt.datetime, device_id: int | None) -> None:
    """The invited practitioner chose a password: their first factor, their enrolment."""
    session.clear()
    login = new_token(12)
    session["first_factor"] = {
        "pid": invitation.practitioner_id,
        "at": now.timestamp(),
        "login": login,
    }
    session["enrolment"] = {
        "pid": invitation.practitioner_id,
        "invitation": invitation.id,
        "login": login,
        "device": device_id,
    }
    session.rotate()


def usable_invitation(
    db: Session, *, invitation_id: object, practitioner_id: object, now: dt.datetime
) -> tuple[Practitioner, Invitation] | None:
    """The invitation, if it is still open and its practitioner still waits for it."""
    if not isinstance(invitation_id, int) or not isinstance(practitioner_id, int):
        return None
    invitation = db.get(Invitation, invitation_id)
    if (
        invitation is None
        or invitation.practitioner_id != practitioner_id
        or invitation.used_at is not None
        or invitation.expires_at <= now
    ):
        return None
    practitioner = db.get(Practitioner, practitioner_id)
    if practitioner is None or practitioner.status != PractitionerStatus.INVITED:
        return None
    return practitioner, invitation


def current_enrolment(db: Session, *, now: dt.datetime) -> tuple[Practitioner, Invitation] | None:
    """The enrolment in progress, honoured only for its own practitioner and login."""
    enrolment = session.get("enrolment") or {}
    first = first_factor()
    if not enrolment or not first:
        return None
    if enrolment.get("pid") != first.get("pid") or enrolment.get("login") != first.get("login"):
        return None
    return usable_invitation(
        db,
        invitation_id=enrolment.get("invitation"),
        practitioner_id=enrolment.get("pid"),
        now=now,
    )


def enrolment_device_id() -> int | None:
    return (session.get("enrolment") or {}).get("device")


def failed_attempts_since_last_login(
    db: Session, practitioner_id: int
) -> tuple[int, dt.datetime | None]:
    """Failed sign-in attempts on the account since its previous completed login."""
    previous = db.execute(
        select(func.max(AuditEvent.at)).where(
            AuditEvent.practitioner_id == practitioner_id, AuditEvent.event == LOGIN_COMPLETED
        )
    ).scalar()
    query = select(func.count(), func.max(AuditEvent.at)).where(
        AuditEvent.practitioner_id == practitioner_id, AuditEvent.event.in_(FAILED_EVENTS)
    )
    if previous is not None:
        query = query.where(AuditEvent.at > previous)
    count, last = db.execute(query).one()
    return int(count), last


def complete_login(db: Session, authentication: Authentication, *, now: dt.datetime) -> None:
    """The only place a browser session becomes authenticated."""
    failures, last_failure = failed_attempts_since_last_login(db, authentication.practitioner_id)
    audit.record(
        db,
        LOGIN_COMPLETED,
        practitioner_id=authentication.practitioner_id,
        acr=authentication.acr,
        amr=" ".join(authentication.amr),
    )
    db.commit()
    clear_login_in_progress()
    session["auth"] = {
        "pid": authentication.practitioner_id,
        "auth_time": int(now.timestamp()),
        "amr": list(authentication.amr),
        "acr": authentication.acr,
        "failures": failures,
        "last_failure": last_failure.timestamp() if last_failure else None,
    }
    session.rotate()
    remember_device(authentication.practitioner_id)
