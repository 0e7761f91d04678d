"""What the practitioner is told about their account, by email.

Every part of the application that changes an account calls ``notify`` in the same unit of
work as the change: the message is queued in the database with it (and so never sent for a
change that was rolled back), and delivered later by the mail sender (``idp.mail``), so that
sending never blocks or breaks a login.

``context`` holds plain display values (a factor's name, an application's name, a method's
kind, a date as an aware ``datetime``: the message shows it in the practitioner's language and
time zone) and, for the few messages that carry one, ``link``: the invitation, password-reset
or recovery link. No other message carries a link that logs in (``idp.mail`` refuses a link
anywhere else, and a missing one where it belongs), and none carries a secret. Each event has
a subject in ``idp.mail.render.SUBJECTS`` and ``templates/mail/<event>.txt|.html``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

EVENTS = frozenset(
    {
        "invitation",  # link: the enrolment link
        "factor_added",  # method, name
        "factor_removed",  # method, name
        "factor_flagged",  # method, name (a key that looks cloned)
        "recovery_codes_used",  # remaining
        "recovery_codes_regenerated",
        "recovery_requested",
        "recovery_approved",  # until: when the cooling-off ends; link: the recovery link
        "recovery_cancelled",
        "recovery_completed",
        "password_reset",  # link: the password-reset link
        "password_changed",
        "not_me",  # the practitioner reported an event that was not them
        "failed_attempts",  # count
    }
)


class UnknownNotificationError(ValueError):
    """A caller named an event that has no message."""


def notify(db: Session, practitioner, event: str, **context: Any) -> None:
    """Queue the message for ``event`` to ``practitioner`` (no commit: the caller's unit of
    work carries it)."""
    if event not in EVENTS:
        raise UnknownNotificationError(event)
    from idp import mail

    mail.queue(db, practitioner, event, context)
