"""Email: the outbox and its sender (queued in the database, delivered with retries).

``queue`` writes the message in the practitioner's language and adds it to the outbox in the
caller's unit of work (``idp.notifications.notify`` calls it). Nothing is sent on a request:
the sender (``deliver_due``) runs in a thread of each served process (``idp.mail.worker``) and
from ``idp mail send``.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, has_request_context
from sqlalchemy.orm import Session

from idp.mail import outbox
from idp.mail.render import render
from idp.mail.sender import DeliveryReport, deliver_due, log_report
from idp.models import Practitioner

__all__ = ["DeliveryReport", "deliver_app", "deliver_due", "queue", "remember_language"]


def queue(db: Session, practitioner, event: str, context: dict[str, Any]) -> None:
    """Queue the message for ``event`` in the outbox (in the caller's unit of work)."""
    now = current_app.extensions["idp.clock"].now()
    rendered = render(practitioner, event, context, now=now)
    outbox.add(
        db,
        to_address=practitioner.email,
        rendered=rendered,
        cipher=current_app.extensions["idp.cipher"],
        now=now,
    )


def remember_language(db: Session, practitioner_id: int) -> None:
    """The page's language becomes the practitioner's email language (in a request only;
    elsewhere the stored one stays). No commit: the caller's unit of work carries it."""
    if not has_request_context():
        return
    from flask_babel import get_locale

    from idp.i18n import LANGUAGES

    language = str(get_locale() or "")
    practitioner = db.get(Practitioner, practitioner_id)
    if language in LANGUAGES and practitioner is not None and practitioner.language != language:
        practitioner.language = language


def deliver_app(app, *, now=None) -> DeliveryReport:
    """One sending pass with the app's settings, key and clock, on a session of its own."""
    settings = app.extensions["idp.settings"]
    with app.app_context():
        db = app.extensions["idp.sessionmaker"]()
        try:
            report = deliver_due(
                db,
                settings=settings.mail,
                cipher=app.extensions["idp.cipher"],
                now=now or app.extensions["idp.clock"].now(),
            )
            log_report(report, db, settings=settings.mail)
            return report
        finally:
            db.close()


def status(app):
    with app.app_context():
        db = app.extensions["idp.sessionmaker"]()
        try:
            return outbox.status(db)
        finally:
            db.close()
