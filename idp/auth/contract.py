"""The contract every authentication method implements, and the types that cross it.

A method (a factor: an app code, a security key, a CPS card; later recovery codes, push) is one
object that knows how to list a practitioner's enrolments, verify an answer and enrol or remove
one. It never throttles, audits or commits: the orchestrator (``idp.auth.orchestrator``) runs
that sequence once for every method, and the registry (``idp.auth.registry``) is the only way
the rest of the application reaches a method.

Like django-otp's ``Device`` (``verify_is_allowed`` / ``verify_token``) but the throttle is not
a mixin each factor may forget: the orchestrator reserves the method's named limiters before it
calls ``finish``, so no method can verify unthrottled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from sqlalchemy.orm import Session

from idp.auth import assurance


class MethodError(Exception):
    """A refusal, from a method or the orchestrator.

    ``code`` is stable (audit trail, JSON ``error``, the translated message); ``status`` is the
    HTTP status of the answer; ``counts_as_failure`` says whether the attempt stays counted on
    the limiters (a wrong answer) or is handed back (a genuine factor on a suspended account).
    ``event`` names the audit event of the refusal (``auth:<kind>:<event>``); ``details`` go
    into it.
    """

    code: ClassVar[str] = "refused"
    status: ClassVar[int] = 401
    counts_as_failure: ClassVar[bool] = True
    event: ClassVar[str] = "failed"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.code)
        self.details = details


class AccountUnavailableError(MethodError):
    """A correct answer, but the account is suspended, disabled or not activated yet."""

    code = "account_unavailable"
    status = 403
    counts_as_failure = False
    event = "refused"

    def __init__(self, account_status: str = "", **details: Any) -> None:
        super().__init__(str(account_status), **details)
        self.account_status = str(account_status)


class InsufficientLevelError(MethodError):
    """A genuine answer from a factor that cannot reach the level the request needs."""

    code = "insufficient_level"
    status = 403
    counts_as_failure = False
    event = "refused"


class LoginRestartError(MethodError):
    """Too many wrong answers at the second step: the login starts again at the password."""

    code = "login_restart"


class NoSuchEnrolmentError(MethodError):
    """Not an enrolment of this practitioner (or already removed)."""

    code = "no_such_enrolment"
    status = 404
    counts_as_failure = False


class LastFactorError(MethodError):
    """Removing this would leave the account without a usable second factor."""

    code = "last_factor"
    status = 409
    counts_as_failure = False


@dataclass(frozen=True)
class Enrolment:
    """One enrolled factor as the account page and the login choice see it."""

    kind: str
    id: int
    name: str
    level: str
    """The acr a login with it reaches."""
    usable: bool = True
    """False for what is listed but cannot log in (a key blocked as a clone, an expired card)."""
    created_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    record: Any = None
    """The row itself, for the method's own account template."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """Extra fields for the audit event of its binding (never a secret)."""


@dataclass(frozen=True)
class Verified:
    """What a method's ``finish`` proves: who answered, with which enrolment, at what level."""

    practitioner_id: int
    acr: str
    amr: tuple[str, ...]
    enrolment_id: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    """Extra fields for the success event (never a secret)."""


@dataclass
class Attempt:
    """One answer being checked: from whom, in which login, against which level.

    ``practitioner_id`` is the person the earlier step named (their password was checked), or
    None when the method identifies the person itself (a passkey, a card); such a method calls
    ``claim`` as soon as it knows who answers, before it verifies, so that person's limiters
    are reserved too. ``login`` names the login in progress (its wrong answers are counted
    together and restart it at the password after a few).
    """

    client: Any
    now: dt.datetime
    practitioner_id: int | None = None
    login: str | None = None
    required_acr: Callable[[int], str | None] = lambda _pid: None
    context: Mapping[str, Any] = field(default_factory=dict)
    """What the caller knows that the method needs (the card's trust, the relying party)."""
    on_claim: Callable[[int | str], None] = lambda _subject: None
    claimed: int | str | None = None

    def claim(self, subject: int | str) -> None:
        """The method found who answers (a practitioner id, or a hashed unknown identifier)."""
        if self.claimed is None:
            self.claimed = subject
            self.on_claim(subject)


@runtime_checkable
class AuthMethod(Protocol):
    """What every factor implements; ``idp.auth.registry`` holds this deployment's methods."""

    kind: ClassVar[str]
    """``totp``, ``webauthn``, ``smartcard``: audit events are ``auth:<kind>:...``."""
    limiter: ClassVar[str]
    """Prefix of the named limiters guarding ``finish`` (``<limiter>.ip``, ``.account``...)."""
    identifies: ClassVar[bool]
    """Can start a login alone, naming the person (a passkey, a card)."""
    standalone: ClassVar[bool]
    """A whole login by itself (card + PIN): after a password it is offered, never the default."""
    limited: ClassVar[bool]
    """Its login is limited (recovery codes): it only lets the practitioner bind a new factor.
    It never counts as a factor (the last factor, the levels, the choice after a password) and
    never reaches an application; such a method also implements ``LimitedMethod``."""
    login_endpoint: ClassVar[str]
    """The page that asks for this factor at the second step."""
    invitation_endpoint: ClassVar[str | None]
    """The page that binds this factor as an invitation's first, or None."""
    account_template: ClassVar[str]
    """The account page's section for this factor."""
    add_endpoint: ClassVar[str | None]
    """The account page that binds one more of this factor (``limited_ok``: a recovery-code
    login reaches it), or None when it is bound otherwise (a card, by its first login)."""
    enrolment_field: ClassVar[str]
    """The name of an enrolment's id in audit events (``device_id``, ``credential``...)."""
    confirm_label: ClassVar[str]
    """The button that confirms a signed-in practitioner with this method."""
    confirm_template: ClassVar[str | None]
    """The confirmation page's own control for this method (None: a link to ``login_endpoint``
    labelled ``confirm_label``)."""
    choice_label: ClassVar[str]
    """Its name on the "Try another method" page."""
    choice_description: ClassVar[str]
    """One line under that name: what the practitioner will do."""
    messages: ClassVar[Mapping[str, str]]
    """Translated (lazy) messages by ``MethodError.code``."""

    def enrolments(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> list[Enrolment]:
        """Every enrolment that is not removed, usable or not."""

    def begin(self, db: Session, attempt: Attempt) -> Mapping[str, Any]:
        """What the browser or agent needs to answer (a challenge, options); no guess yet."""

    def finish(self, db: Session, attempt: Attempt, answer: Mapping[str, Any]) -> Verified:
        """Verify ``answer``; single-use parts are consumed atomically. Raises MethodError."""

    def refused(self, db: Session, attempt: Attempt, error: MethodError) -> None:
        """After the rollback of a refused answer: what the refusal leaves behind (optional)."""

    def begin_enrol(self, db: Session, attempt: Attempt) -> Mapping[str, Any]:
        """Start binding a new factor to ``attempt.practitioner_id``."""

    def finish_enrol(self, db: Session, attempt: Attempt, answer: Mapping[str, Any]) -> Enrolment:
        """Bind it; raises MethodError."""

    def remove(self, db: Session, practitioner_id: int, enrolment_id: int, *, now: dt.datetime):
        """Remove one enrolment of this practitioner; raises NoSuchEnrolmentError."""

    def revoke_all(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> int:
        """Make every enrolment of the practitioner unusable; returns how many were."""


@runtime_checkable
class PickUpMethod(Protocol):
    """A method whose answer can arrive somewhere else than where the login is used.

    The card's terminal mode (the agent answers; the browser showing the code logs in) and its
    TLS certificate on the card host do this today; push approval and CIBA will. The answer
    went through ``Orchestrator.authenticate`` where it was given (throttled, verified, audited
    ``auth:<kind>:succeeded``); ``pick_up`` only hands the completed login over, once.
    """

    def pick_up(self, db: Session, attempt: Attempt, answer: Mapping[str, Any]) -> Verified:
        """Consume the completed login ``answer`` names (single use, claimed atomically);
        raises MethodError when there is none to hand over."""


@runtime_checkable
class LimitedMethod(Protocol):
    """What a ``limited`` method adds: a set of one-time codes issued to a practitioner, and
    the pages a limited login lands on."""

    landing_endpoint: ClassVar[str]
    """Where a limited session is sent for anything it may not reach."""
    new_codes_endpoint: ClassVar[str]
    """The page that shows a freshly issued set once (the plaintext is in the login state's
    ``step(kind)`` until then)."""

    def issue(
        self, db: Session, practitioner_id: int, *, now: dt.datetime, reason: str
    ) -> list[str]:
        """A new set, replacing every unused code of the old one, audited with ``reason`` in
        the caller's unit of work (the caller commits); returns the plaintext codes (never
        stored)."""

    def remaining(self, db: Session, practitioner_id: int) -> int:
        """Unused codes of the practitioner."""


def best_level(enrolments: list[Enrolment]) -> str | None:
    """The strongest level among usable enrolments."""
    levels = [e.level for e in enrolments if e.usable]
    return max(levels, key=assurance.rank) if levels else None
