"""The login state: the login in progress and the completed login, behind one typed API.

No other module reads the session's keys: they ask a ``LoginState``. Its store is the
browser's server-side session (``LoginState.current()``), or, for a login that has no browser
(a decoupled request: CIBA, a push approval), its own record in the same store
(``DecoupledLogins``). Each piece lives under its own top-level key, and the session store
writes back only the keys a request changed (``idp.sessions``): a background request that
stores a WebAuthn challenge cannot drop the pending authorization a concurrent ``/authorize``
just stored.

State made for one person or one step is honoured only for that person and that step:

- the first factor (``FirstFactor``): the password was checked for ``practitioner_id``;
  ``login`` names this very login, so what a step leaves behind (an enrolment, a counter of
  wrong codes) cannot be carried over into another login;
- the enrolment (``EnrolmentInProgress``): an invited practitioner finishing their invitation,
  bound to the login their invitation's password step opened and to that practitioner;
- the opened invitation (``OpenedInvitation``), before the password is chosen;
- the step-up (``StepUp``): binding a new authenticator needs a stronger login first
  (NIST-10), for ``practitioner_id`` only;
- the confirmation (``Confirmation``): a signed-in practitioner confirms with one of their
  factors (a sensitive change, an application asking for a stronger level). The completed
  login stands in for the password and stays as it was until the confirmation succeeds:
  abandoned or unmet, the practitioner keeps the session they had;
- the password reset (``PasswordResetInProgress``): an emailed "Forgot your password?" link
  was opened; it stands in for the password step (like the completed login does for a
  confirmation), for that practitioner and that login only. When a factor succeeds the login
  does not complete: the practitioner chooses a new password, then signs in with it;
- a factor's own leftovers for the login in progress (``step(kind)``): WebAuthn challenge ids,
  the card transaction, a pending TOTP seed;
- the pending authorization request (``PendingRequest``) and where to go next;
- the completed login (``CompletedLogin``): practitioner, a stable ``sid``, auth_time, acr, amr.

Every new login (``begin_login``, ``begin_enrolment``) and every completed one (``complete``)
starts from a clean login state: nothing of the previous attempt survives but the
application's pending request and where to go next.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session

from idp import audit, mail
from idp.crypto import new_token
from idp.models import AuditEvent, Invitation, Practitioner, PractitionerStatus
from idp.services import methods

FIRST_FACTOR = "first_factor"
ENROLMENT = "enrolment"
INVITATION = "invitation"
STEP_UP = "step_up"
CONFIRMATION = "confirm"
RESET_LINK = "password_reset"
PENDING = "authz"
NEXT = "next"
COMPLETED = "auth"
STEP_PREFIX = "step."
IN_PROGRESS = (FIRST_FACTOR, ENROLMENT, INVITATION, STEP_UP, CONFIRMATION, RESET_LINK)
LOGIN_COMPLETED = "auth:login:completed"


@dataclass(frozen=True)
class Authentication:
    """What a verified factor proves, before it becomes the completed login."""

    practitioner_id: int
    amr: tuple[str, ...]
    acr: str
    methods: tuple[str, ...] = ()
    """The methods that proved it (``totp``, ``webauthn``...), the password step aside."""
    limited: bool = False
    """Proven by a limited method (a recovery code): it may only bind a new factor."""


@dataclass(frozen=True)
class FirstFactor:
    practitioner_id: int
    at: float
    login: str


@dataclass(frozen=True)
class StepUp:
    practitioner_id: int
    acr: str


@dataclass(frozen=True)
class Confirmation:
    """The signed-in ``practitioner_id`` confirms it is them, in the login named ``login``."""

    practitioner_id: int
    login: str


@dataclass(frozen=True)
class OpenedInvitation:
    invitation_id: int
    practitioner_id: int


@dataclass(frozen=True)
class EnrolmentInProgress:
    practitioner_id: int
    invitation_id: int
    login: str


@dataclass(frozen=True)
class PendingRequest:
    """The application's authorization request, kept while the practitioner signs in."""

    params: list
    fp: str
    at: float
    acr: str | None
    login_hint: str
    redirect_uri: str
    state: str | None
    client_name: str


@dataclass(frozen=True)
class PasswordResetInProgress:
    practitioner_id: int
    reset_id: int
    login: str
    proven: bool = False
    """A factor of the practitioner succeeded in this login: a new password may be chosen."""


@dataclass(frozen=True)
class CompletedLogin:
    practitioner_id: int
    sid: str
    """Stable for the whole login (the session id itself rotates): back-channel logout names it."""
    auth_time: int
    amr: tuple[str, ...]
    acr: str
    failures: int = 0
    last_failure: float | None = None
    methods: tuple[str, ...] = ()
    """Every method used in this login, in order (``password``, ``totp``...)."""
    limited: bool = False
    """A recovery-code login: it reaches only the pages that bind a new factor, the recovery
    codes and sign-out (``idp.auth.policy``), never an application (``idp.oauth``)."""


def _load(cls, value: Any):
    if not isinstance(value, dict):
        return None
    try:
        return cls(**value)
    except TypeError:
        return None  # written by an older release: as if absent


class LoginState:
    def __init__(self, store: MutableMapping[str, Any]) -> None:
        self._store = store

    @classmethod
    def current(cls) -> LoginState:
        """The browser's login state (its server-side session)."""
        from flask import session

        return cls(session)

    # --- reading --------------------------------------------------------------------------

    @property
    def first_factor(self) -> FirstFactor | None:
        return _load(FirstFactor, self._store.get(FIRST_FACTOR))

    @property
    def step_up(self) -> StepUp | None:
        return _load(StepUp, self._store.get(STEP_UP))

    def step_up_for(self, practitioner_id: int | None) -> StepUp | None:
        step_up = self.step_up
        return step_up if step_up and step_up.practitioner_id == practitioner_id else None

    @property
    def opened_invitation(self) -> OpenedInvitation | None:
        return _load(OpenedInvitation, self._store.get(INVITATION))

    @property
    def enrolment(self) -> EnrolmentInProgress | None:
        """The enrolment in progress, honoured only for its own practitioner and login."""
        enrolment = _load(EnrolmentInProgress, self._store.get(ENROLMENT))
        first = self.first_factor
        if enrolment is None or first is None:
            return None
        if enrolment.practitioner_id != first.practitioner_id or enrolment.login != first.login:
            return None
        return enrolment

    @property
    def confirmation(self) -> Confirmation | None:
        """The confirmation in progress, honoured only while its login and its practitioner's
        completed login are both still the ones it was opened for."""
        confirmation = _load(Confirmation, self._store.get(CONFIRMATION))
        first, completed = self.first_factor, self.completed
        if confirmation is None or first is None or completed is None:
            return None
        if first.login != confirmation.login or not (
            confirmation.practitioner_id == first.practitioner_id == completed.practitioner_id
        ):
            return None
        return confirmation

    @property
    def password_reset(self) -> PasswordResetInProgress | None:
        """The password reset in progress, honoured only for its own practitioner and login."""
        reset = _load(PasswordResetInProgress, self._store.get(RESET_LINK))
        first = self.first_factor
        if reset is None or first is None:
            return None
        if reset.practitioner_id != first.practitioner_id or reset.login != first.login:
            return None
        return reset

    @property
    def pending_request(self) -> PendingRequest | None:
        return _load(PendingRequest, self._store.get(PENDING))

    @property
    def completed(self) -> CompletedLogin | None:
        completed = _load(CompletedLogin, self._store.get(COMPLETED))
        if completed is not None:
            completed = CompletedLogin(
                **{
                    **asdict(completed),
                    "amr": tuple(completed.amr),
                    "methods": tuple(completed.methods),
                }
            )
        return completed

    def step(self, kind: str) -> dict:
        """A factor's own state for the login in progress (cleared with it)."""
        value = self._store.get(STEP_PREFIX + kind)
        return dict(value) if isinstance(value, dict) else {}

    # --- the login in progress ------------------------------------------------------------

    def set_step(self, kind: str, value: dict) -> None:
        self._store[STEP_PREFIX + kind] = value

    def drop_step(self, kind: str) -> None:
        self._store.pop(STEP_PREFIX + kind, None)

    def _clear_in_progress(self, *, keep_step_up_for: int | None = None) -> None:
        step_up = self.step_up_for(keep_step_up_for) if keep_step_up_for is not None else None
        for name in [*IN_PROGRESS, *(k for k in self._store if k.startswith(STEP_PREFIX))]:
            self._store.pop(name, None)
        if step_up is not None:
            self._store[STEP_UP] = asdict(step_up)

    def _rotate(self) -> None:
        rotate = getattr(self._store, "rotate", None)
        if rotate is not None:
            rotate()

    def begin_attempt(self) -> None:
        """A password was submitted: whatever it gives, the previous login in progress is
        over. (A step-up stays: it is honoured only for its own practitioner.)"""
        step_up = self.step_up
        self._clear_in_progress(keep_step_up_for=step_up.practitioner_id if step_up else None)

    def begin_login(self, practitioner_id: int, *, now: dt.datetime) -> None:
        """The password is right: a new login, for this practitioner only, from a clean state.

        Their own completed login stays until the new one completes (a step-up given up
        leaves the session as it was); someone else's ends here."""
        self._clear_in_progress(keep_step_up_for=practitioner_id)
        completed = self.completed
        if completed is not None and completed.practitioner_id != practitioner_id:
            self._store.pop(COMPLETED, None)
        self._store[FIRST_FACTOR] = asdict(
            FirstFactor(practitioner_id, now.timestamp(), new_token(12))
        )
        self._rotate()

    def begin_confirmation(self, practitioner_id: int, *, now: dt.datetime) -> None:
        """The signed-in practitioner is asked to confirm with a factor: their completed login
        stands in for the password step, and stays untouched until a factor confirms."""
        self._clear_in_progress(keep_step_up_for=practitioner_id)
        login = new_token(12)
        self._store[FIRST_FACTOR] = asdict(FirstFactor(practitioner_id, now.timestamp(), login))
        self._store[CONFIRMATION] = asdict(Confirmation(practitioner_id, login))

    def begin_password_reset(self, practitioner_id: int, reset_id: int, *, now: dt.datetime):
        """The emailed reset link was opened: it stands in for the password step of a new
        login, for this practitioner only (someone else's completed login ends here)."""
        self.begin_login(practitioner_id, now=now)
        login = self.first_factor.login
        self._store[RESET_LINK] = asdict(PasswordResetInProgress(practitioner_id, reset_id, login))

    def prove_password_reset(self) -> None:
        """A factor succeeded in the reset's login: the new password may be chosen (the
        login itself does not complete)."""
        reset = self.password_reset
        if reset is not None:
            self._store[RESET_LINK] = asdict(
                PasswordResetInProgress(reset.practitioner_id, reset.reset_id, reset.login, True)
            )

    def end_password_reset(self) -> None:
        """The password was replaced: every session of the account ended, this one's login
        too; the practitioner signs in again with the new password."""
        self._clear_in_progress()
        self._store.pop(COMPLETED, None)
        self._rotate()

    def restart(self, *, sign_out: bool = False) -> None:
        """Back to the password: after too many wrong answers at the second step, or "Not
        you?" (which, on a confirmation, also ends the completed login it was for)."""
        self._clear_in_progress()
        if sign_out:
            self._store.pop(COMPLETED, None)
        self._rotate()

    def abandon(self) -> None:
        """The practitioner gave up the step in progress: it goes, with where it led; a
        completed login stays as it was."""
        self._clear_in_progress()
        self._store.pop(NEXT, None)

    def end_first_factor(self) -> None:
        """The password step is too old to open the second-step pages."""
        self._store.pop(FIRST_FACTOR, None)

    def open_invitation(self, invitation: Invitation) -> None:
        """The link was opened: remember the invitation server-side, forget any other login."""
        self._clear_in_progress()
        self._store.pop(COMPLETED, None)
        self._store[INVITATION] = asdict(
            OpenedInvitation(invitation.id, invitation.practitioner_id)
        )
        self._rotate()

    def begin_enrolment(self, invitation: Invitation, *, now: dt.datetime) -> None:
        """The invited practitioner chose a password: their first factor, their enrolment."""
        self._store.clear()
        login = new_token(12)
        self._store[FIRST_FACTOR] = asdict(
            FirstFactor(invitation.practitioner_id, now.timestamp(), login)
        )
        self._store[ENROLMENT] = asdict(
            EnrolmentInProgress(invitation.practitioner_id, invitation.id, login)
        )
        self._rotate()

    def require_step_up(self, practitioner_id: int, acr: str, *, then: str) -> None:
        """Binding this authenticator needs a login at ``acr`` first (NIST-10): the next login
        (a confirmation) must reach ``acr``, then the practitioner comes back to ``then``."""
        self._store[STEP_UP] = asdict(StepUp(practitioner_id, acr))
        self._store[NEXT] = then

    # --- the application's request and where to go next ------------------------------------

    def keep_request(self, request: PendingRequest) -> None:
        self._store[PENDING] = asdict(request)

    def drop_request(self) -> PendingRequest | None:
        pending = self.pending_request
        self._store.pop(PENDING, None)
        return pending

    def set_next(self, url: str | None) -> None:
        self._store[NEXT] = url

    def peek_next(self) -> str | None:
        return self._store.get(NEXT)

    def take_next(self) -> str | None:
        return self._store.pop(NEXT, None)

    # --- the completed login ----------------------------------------------------------------

    def complete(
        self,
        authentication: Authentication,
        *,
        sid: str,
        now: dt.datetime,
        failures: int,
        last_failure: dt.datetime | None,
    ) -> CompletedLogin:
        confirmation, previous = self.confirmation, self.completed
        if (
            confirmation is not None
            and confirmation.practitioner_id == authentication.practitioner_id
        ):
            earlier = previous.methods  # the session the confirmation stood on
        else:
            earlier = ("password",) if self.first_factor is not None else ()
        used = earlier + tuple(m for m in authentication.methods if m not in earlier)
        self._clear_in_progress()
        completed = CompletedLogin(
            practitioner_id=authentication.practitioner_id,
            sid=sid,
            auth_time=int(now.timestamp()),
            amr=tuple(authentication.amr),
            acr=authentication.acr,
            failures=failures,
            last_failure=last_failure.timestamp() if last_failure else None,
            methods=used,
            limited=authentication.limited,
        )
        self._store[COMPLETED] = {
            **asdict(completed),
            "amr": list(completed.amr),
            "methods": list(completed.methods),
        }
        self._rotate()
        return completed

    def forget_completed(self) -> None:
        """The account was suspended meanwhile: this login is over."""
        self._store.pop(COMPLETED, None)

    def end(self) -> None:
        """Sign out: everything goes, the session id too."""
        destroy = getattr(self._store, "destroy", None)
        if destroy is not None:
            destroy()
        else:
            self._store.clear()


class DecoupledLogins:
    """Logins without a browser (a decoupled request: CIBA, a push approval), each with its own
    ``LoginState`` in the session store under a random id, with the store's timeouts."""

    def __init__(self, store, *, ttl: int) -> None:
        self._store = store
        self._ttl = ttl

    def start(self, *, now: dt.datetime) -> tuple[str, LoginState]:
        from idp.sessions import ServerSession

        record = ServerSession(sid=None, created_at=now.timestamp())
        return new_token(32), LoginState(record)

    def open(self, login_id: str) -> LoginState | None:
        from idp.sessions import ServerSession

        loaded = self._store.load(login_id) if login_id and len(login_id) < 100 else None
        if loaded is None:
            return None
        data, created_at, _last_seen, as_read = loaded
        return LoginState(ServerSession(data, sid=login_id, created_at=created_at, as_read=as_read))

    def save(self, login_id: str, state: LoginState, *, now: dt.datetime) -> bool:
        """Write what changed; False when the login ended meanwhile (never revived)."""
        record = state._store
        if record.sid is None:
            record.sid = login_id
            return self._store.save(
                login_id, dict(record), record.created_at, now.timestamp(), self._ttl, new=True
            )
        return self._store.merge(
            login_id, record.changes(), now.timestamp(), self._ttl, as_read=record.as_read
        )

    def end(self, login_id: str) -> None:
        self._store.delete(login_id)


def state() -> LoginState:
    """The current browser's login state."""
    return LoginState.current()


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
    """The enrolment in progress in this browser, if its invitation is still open."""
    enrolment = state().enrolment
    if enrolment is None:
        return None
    return usable_invitation(
        db,
        invitation_id=enrolment.invitation_id,
        practitioner_id=enrolment.practitioner_id,
        now=now,
    )


def failed_attempts_since_last_login(
    db: Session, practitioner_id: int
) -> tuple[int, dt.datetime | None]:
    """Failed sign-in attempts on the account since its previous completed login."""
    failed = ["auth:password:failed", *(f"auth:{m.kind}:failed" for m in methods())]
    params = {"practitioner_id": practitioner_id, "failed": failed}
    count, last = db.execute(_FAILED_SINCE_LAST_LOGIN, params).one()
    return int(count), last


def _failed_since_last_login():
    practitioner = bindparam("practitioner_id", type_=AuditEvent.practitioner_id.type)
    previous = (
        select(func.max(AuditEvent.at))
        .where(AuditEvent.practitioner_id == practitioner, AuditEvent.event == LOGIN_COMPLETED)
        .scalar_subquery()
    )
    return select(func.count(), func.max(AuditEvent.at)).where(
        AuditEvent.practitioner_id == practitioner,
        AuditEvent.event.in_(bindparam("failed", expanding=True)),
        or_(previous.is_(None), AuditEvent.at > previous),
    )


_FAILED_SINCE_LAST_LOGIN = _failed_since_last_login()
"""Built once: every completed login counts the failures before it."""


def complete_login(
    db: Session,
    authentication: Authentication,
    *,
    now: dt.datetime,
    login: LoginState | None = None,
) -> CompletedLogin:
    """The only place a login becomes complete (a browser's, or a decoupled one's)."""
    failures, last_failure = failed_attempts_since_last_login(db, authentication.practitioner_id)
    mail.remember_language(db, authentication.practitioner_id)  # their emails' language
    sid = new_token(16)
    audit.record(
        db,
        LOGIN_COMPLETED,
        practitioner_id=authentication.practitioner_id,
        acr=authentication.acr,
        amr=" ".join(authentication.amr),
        sid=sid,
    )
    db.commit()  # before the state changes: a failed commit leaves the login in progress
    login = login or state()
    return login.complete(
        authentication, sid=sid, now=now, failures=failures, last_failure=last_failure
    )
