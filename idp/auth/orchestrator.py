"""The one sequence every factor check runs: written here, once.

    reserve the method's named limiters (before anything is verified)
    -> the method verifies (single-use parts consumed atomically)
    -> the account must be active and the level high enough
    -> exactly one audit event: ``auth:<kind>:succeeded``, ``:failed`` or ``:refused``
    -> commit the flow's unit of work
    -> then reset (or keep) the limiters: the throttle writes on its own connection

Like warehouse's account service: limits are checked before verifying, counted on failure,
and the throttle error becomes a 429 in one place (``idp.auth.errors``). Methods never
throttle, audit or commit a login themselves; views never write this sequence again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from idp import audit
from idp.auth import assurance
from idp.auth.contract import (
    AccountUnavailableError,
    Attempt,
    AuthMethod,
    Enrolment,
    InsufficientLevelError,
    LastFactorError,
    LoginRestartError,
    MethodError,
    NoSuchEnrolmentError,
    PickUpMethod,
    Verified,
)
from idp.auth.flow import Authentication
from idp.auth.registry import Registry
from idp.models import Practitioner, PractitionerStatus
from idp.notifications import notify
from idp.ratelimit import (
    LIMITS,
    SECOND_STEP_FAILURES,
    Reservation,
    Throttle,
    ensure_allowed,
    key,
)

LOGIN_LIMITER = "2fa.login"

FAILURES_NOTICE_FIRST = 5
FAILURES_NOTICE_EVERY = 25
"""The practitioner is told at the 5th consecutive wrong answer on their account (or one of
their browsers), then every 25th: enough to notice a guessing attack, never a flood."""


def failures_on_account(method: AuthMethod, reservations: list[Reservation]) -> int:
    """Consecutive wrong answers on the person's counters (their account, or this browser's
    device key for them), this one included."""
    names = (f"{method.limiter}.account", f"{method.limiter}.device")
    return max((r.count(name) for r in reservations for name in names), default=0)


def worth_telling(failures: int) -> bool:
    return failures == FAILURES_NOTICE_FIRST or (
        failures > FAILURES_NOTICE_FIRST and failures % FAILURES_NOTICE_EVERY == 0
    )


def first_keys(method: AuthMethod, attempt: Attempt) -> list[str]:
    """Reserved before verifying: the address, and once known, the person (their account, or
    this browser's device for them), and the login in progress at a second step."""
    keys = [key(f"{method.limiter}.ip", attempt.client.ip)]
    if attempt.practitioner_id is not None:
        keys += account_keys(method, attempt, attempt.practitioner_id)
        if attempt.login:
            keys.append(key(LOGIN_LIMITER, attempt.login))
    return keys


def account_keys(method: AuthMethod, attempt: Attempt, subject: int | str) -> list[str]:
    """The person's counters, for a method that declares them: a card has none (its
    certificate is public, so anyone could lock its holder out); it is throttled per address."""
    if f"{method.limiter}.account" not in LIMITS:
        return []
    return attempt.client.account_keys(method.limiter, subject)


class Orchestrator:
    def __init__(self, registry: Registry, throttle: Throttle) -> None:
        self.registry = registry
        self.throttle = throttle

    def ensure_allowed(self, method: AuthMethod, attempt: Attempt) -> None:
        """Before showing a challenge: refuse early when the limiters already would."""
        ensure_allowed(self.throttle, first_keys(method, attempt))

    def begin(self, db: Session, method: AuthMethod, attempt: Attempt) -> Mapping[str, Any]:
        """A challenge or options: no guess, nothing counted, but refused while throttled."""
        self.ensure_allowed(method, attempt)
        started = method.begin(db, attempt)
        db.commit()
        return started

    def authenticate(
        self, db: Session, method: AuthMethod, attempt: Attempt, answer: Mapping[str, Any]
    ) -> Authentication:
        """Check one answer; returns the login it proves or raises MethodError/ThrottledError."""
        reservations: list[Reservation] = [self.throttle.reserve(first_keys(method, attempt))]

        def reserve_claimed(subject: int | str) -> None:
            keys = account_keys(method, attempt, subject) if attempt.practitioner_id is None else []
            if keys:
                reservations.append(self.throttle.reserve(keys))

        attempt.on_claim = reserve_claimed
        try:
            verified = method.finish(db, attempt, answer)
            refusal = self._refusal(db, verified, attempt)
        except MethodError as error:
            db.rollback()
            method.refused(db, attempt, error)
            subject = attempt.practitioner_id or _practitioner(attempt.claimed)
            audit.record(
                db,
                f"auth:{method.kind}:{error.event}",
                practitioner_id=subject,
                reason=error.code,
                **error.details,
            )
            failures = failures_on_account(method, reservations)
            if subject is not None and error.counts_as_failure and worth_telling(failures):
                owner = db.get(Practitioner, subject)
                if owner is not None:
                    notify(db, owner, "failed_attempts", count=failures)
            db.commit()
            if not error.counts_as_failure:
                for reservation in reservations:
                    self.throttle.forgive(reservation)
            elif reservations[0].count(LOGIN_LIMITER) >= SECOND_STEP_FAILURES:
                raise LoginRestartError() from error
            raise
        if refusal is not None:
            audit.record(
                db,
                f"auth:{method.kind}:{refusal.event}",
                practitioner_id=verified.practitioner_id,
                reason=refusal.code,
                **refusal.details,
            )
            db.commit()
            for reservation in reservations:
                self.throttle.forgive(reservation)  # a genuine answer: no guess
            raise refusal
        level = {"acr": verified.acr} if verified.acr else {}
        audit.record(
            db,
            f"auth:{method.kind}:succeeded",
            practitioner_id=verified.practitioner_id,
            **level,
            **verified.details,
        )
        db.commit()
        for reservation in reservations:  # after the commit: the throttle writes on its own
            self.throttle.succeeded(reservation)
        return Authentication(
            verified.practitioner_id,
            tuple(verified.amr),
            verified.acr,
            methods=(method.kind,),
            limited=bool(getattr(method, "limited", False)),
        )

    def pick_up(
        self, db: Session, method: PickUpMethod, attempt: Attempt, answer: Mapping[str, Any]
    ) -> Authentication:
        """Hand over a login whose answer was given elsewhere (``PickUpMethod``), once.

        A step of its own rather than a second ``authenticate``: the answer was already
        throttled, verified and audited as ``succeeded`` where it arrived, and what is handed
        over here is named by a handle only this browser holds (its session's transaction, a
        one-time result), so nothing is reserved and a miss is no guess worth auditing. What
        is left is the account check (it may have been suspended in between), one
        ``auth:<kind>:completed`` event and the commit. The method claims the completed login
        atomically and commits that claim itself (like ``idp.challenges.consume``), so of two
        concurrent pick-ups one gets the login and a refused one never gets it back.
        """
        try:
            verified = method.pick_up(db, attempt, answer)
        except MethodError:
            db.rollback()
            raise
        owner = db.get(Practitioner, verified.practitioner_id)
        if owner is None or owner.status != PractitionerStatus.ACTIVE:
            db.commit()
            raise AccountUnavailableError(owner.status if owner is not None else "missing")
        audit.record(
            db,
            f"auth:{method.kind}:completed",
            practitioner_id=verified.practitioner_id,
            **verified.details,
        )
        db.commit()
        return Authentication(
            verified.practitioner_id,
            tuple(verified.amr),
            verified.acr,
            methods=(method.kind,),
            limited=bool(getattr(method, "limited", False)),
        )

    def enrol(
        self,
        db: Session,
        method: AuthMethod,
        attempt: Attempt,
        answer: Mapping[str, Any],
        *,
        within: Callable[[], object] | None = None,
    ) -> Enrolment:
        """Bind a new factor to ``attempt.practitioner_id``, in one unit of work.

        Nothing is throttled: only a signed-in practitioner (or an invited one, after their
        invitation's password step) reaches a binding, and a binding guesses nothing. A refusal
        is audited ``account:<kind>:refused`` and committed; a success is audited
        ``account:two_factor:method_added`` and committed together with ``within()`` (an
        invitation's acceptance): if that raises, nothing is committed and the caller rolls back.
        """
        try:
            enrolment = method.finish_enrol(db, attempt, answer)
        except MethodError as error:
            db.rollback()
            audit.record(
                db,
                f"account:{method.kind}:refused",
                practitioner_id=attempt.practitioner_id,
                reason=error.code,
                **error.details,
            )
            db.commit()
            raise
        if within is not None:
            within()
        audit.record(
            db,
            "account:two_factor:method_added",
            practitioner_id=attempt.practitioner_id,
            method=method.kind,
            **{method.enrolment_field: enrolment.id},
            **enrolment.details,
        )
        owner = db.get(Practitioner, attempt.practitioner_id)
        notify(db, owner, "factor_added", method=method.kind, name=enrolment.name)
        db.commit()
        return enrolment

    def remove(
        self, db: Session, method: AuthMethod, practitioner_id: int, enrolment_id: int, *, now
    ) -> None:
        """Remove one enrolment; a usable one only if another usable factor remains."""
        enrolments = method.enrolments(db, practitioner_id, now=now)
        target = next((e for e in enrolments if e.id == enrolment_id), None)
        if target is None:
            raise NoSuchEnrolmentError()
        if target.usable and self.registry.usable_count(db, practitioner_id, now=now) <= 1:
            raise LastFactorError()
        method.remove(db, practitioner_id, enrolment_id, now=now)
        audit.record(
            db,
            "account:two_factor:method_removed",
            practitioner_id=practitioner_id,
            method=method.kind,
            **{method.enrolment_field: enrolment_id},
        )
        owner = db.get(Practitioner, practitioner_id)
        notify(db, owner, "factor_removed", method=method.kind, name=target.name)
        db.commit()

    def revoke_all(self, db: Session, practitioner_id: int, *, now, reason: str) -> int:
        """Every factor of every method made unusable, in one audited unit of work."""
        revoked = self.registry.revoke_all(db, practitioner_id, now=now)
        audit.record(
            db,
            "account:two_factor:all_revoked",
            practitioner_id=practitioner_id,
            revoked=revoked,
            reason=reason,
        )
        db.commit()
        return revoked

    @staticmethod
    def _refusal(db: Session, verified: Verified, attempt: Attempt) -> MethodError | None:
        """A genuine answer that still cannot log in: the account, or the level."""
        owner = db.get(Practitioner, verified.practitioner_id)
        if owner is None or owner.status != PractitionerStatus.ACTIVE:
            status = owner.status if owner is not None else "missing"
            return AccountUnavailableError(status, status=status)
        required = attempt.required_acr(verified.practitioner_id)
        if assurance.rank(verified.acr) < assurance.rank(required):
            return InsufficientLevelError(
                acr=verified.acr, required_acr=required, **verified.details
            )
        return None


def _practitioner(subject: int | str | None) -> int | None:
    return subject if isinstance(subject, int) else None


def orchestrator() -> Orchestrator:
    """The running app's orchestrator: its registry and its throttle."""
    from idp.services import methods, throttle

    return Orchestrator(methods(), throttle())
