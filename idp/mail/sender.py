"""Delivery: the due messages handed to the SMTP server, each by one sender only.

``deliver_due`` claims every message it sends (``outbox.claim``, committed before the SMTP
conversation), so any number of processes may run it at once and a message still leaves once.
A message that cannot be sent is tried again later (1, 2, 4 … minutes, at most an hour apart)
and given up after ``outbox.MAX_ATTEMPTS``. Log lines name the server and counts, never an
address, a subject or a body.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime as rfc2822_date
from email.utils import make_msgid

from sqlalchemy.orm import Session

from idp.config import MailSettings
from idp.crypto import DataCipher, DecryptionError
from idp.mail import outbox

log = logging.getLogger("idp.mail")

BATCH = 50


@dataclass
class DeliveryReport:
    """What one pass did."""

    sent: int = 0
    retried: int = 0
    """Failed this time, tried again later."""
    given_up: int = 0
    disabled: bool = False
    """No SMTP server configured: nothing was tried."""
    unreachable: str | None = None
    """The server could not be reached (the error's class), if so."""
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "sent": self.sent,
            "retried": self.retried,
            "given_up": self.given_up,
            "disabled": self.disabled,
        }


class Unreachable(Exception):
    """The SMTP server cannot be reached or dropped the connection: every message waits."""


def compose(letter: outbox.Letter, *, sender: str, now: dt.datetime) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = letter.to_address
    message["Subject"] = letter.subject
    message["Date"] = rfc2822_date(now)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    message.set_content(letter.text)
    message.add_alternative(letter.html, subtype="html")
    return message


class Connection:
    """One SMTP session, opened at the first message of a pass."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def _open(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
            if s.username:
                smtp.login(s.username, s.password or "")
        except (OSError, smtplib.SMTPException) as exc:
            raise Unreachable(type(exc).__name__) from exc
        return smtp

    def send(self, message: EmailMessage) -> None:
        if self._smtp is None:
            self._smtp = self._open()
        try:
            self._smtp.send_message(message)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._smtp = None
            raise Unreachable(type(exc).__name__) from exc

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self._smtp = None


def short_error(exc: BaseException) -> str:
    """The class and the SMTP code only: a server's text may quote the address."""
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        code = next(iter(exc.recipients.values()))[0]
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


def deliver_due(
    db: Session,
    *,
    settings: MailSettings,
    cipher: DataCipher,
    now: dt.datetime,
    limit: int = BATCH,
) -> DeliveryReport:
    """Send what is due at ``now`` (up to ``limit`` messages); commits after each step."""
    report = DeliveryReport()
    if not settings.enabled:
        report.disabled = True
        return report
    connection = Connection(settings)
    try:
        for message_id in outbox.due_ids(db, now=now, limit=limit):
            taken = outbox.claim(db, message_id, now=now)
            db.commit()  # the claim is visible to every other sender before we talk SMTP
            if not taken:
                continue
            if report.unreachable:
                # The server is down: this one waits like the first, without a new try.
                outbox.mark_failed(db, message_id, now=now, error=report.unreachable)
                report.retried += 1
                db.commit()
                continue
            deliver_one(
                db, connection, message_id, settings=settings, cipher=cipher, now=now, report=report
            )
            db.commit()
    finally:
        connection.close()
        db.rollback()
    return report


def deliver_one(db, connection, message_id, *, settings, cipher, now, report) -> None:
    try:
        letter = outbox.open_letter(db, message_id, cipher=cipher)
    except DecryptionError:
        outbox.mark_failed(db, message_id, now=now, error="DecryptionError", final=True)
        log.error(
            "mail: message %s cannot be decrypted (was IDP_DATA_KEY changed?): given up", message_id
        )
        report.given_up += 1
        return
    try:
        composed = compose(letter, sender=settings.sender, now=now)
    except (ValueError, TypeError) as exc:  # an address no message can carry: never sendable
        outbox.mark_failed(db, message_id, now=now, error=type(exc).__name__, final=True)
        log.error(
            "mail: message %s cannot be written (%s): given up", message_id, type(exc).__name__
        )
        report.given_up += 1
        return
    try:
        connection.send(composed)
    except Unreachable as exc:
        report.unreachable = str(exc)
        count_failure(db, message_id, now=now, error=str(exc), report=report)
        return
    except smtplib.SMTPException as exc:  # refused by the server: this message only
        error = short_error(exc)
        next_attempt = count_failure(db, message_id, now=now, error=error, report=report)
        log.warning(
            "mail: message %s refused by %s:%s (%s), attempt %s, %s",
            message_id,
            settings.host,
            settings.port,
            error,
            letter.attempts + 1,
            f"next attempt at {next_attempt.isoformat()}" if next_attempt else "given up",
        )
        return
    outbox.mark_sent(db, message_id, now=now)
    report.sent += 1


def count_failure(db, message_id, *, now, error, report) -> dt.datetime | None:
    next_attempt = outbox.mark_failed(db, message_id, now=now, error=error)
    if next_attempt is None:
        report.given_up += 1
    else:
        report.retried += 1
    return next_attempt


def log_report(report: DeliveryReport, db: Session, *, settings: MailSettings) -> None:
    """One line a pass that did something or met a problem; nothing for an idle pass."""
    if report.disabled:
        return
    if report.unreachable:
        state = outbox.status(db)
        log.warning(
            "mail: cannot reach %s:%s (%s): %s message(s) waiting, next attempt at %s",
            settings.host,
            settings.port,
            report.unreachable,
            state.waiting,
            state.next_attempt_at.isoformat() if state.next_attempt_at else "-",
        )
    if report.given_up:
        log.error(
            "mail: %s message(s) given up after %s attempts (idp mail status)",
            report.given_up,
            outbox.MAX_ATTEMPTS,
        )
    if report.sent:
        log.info(
            "mail: %s message(s) sent through %s:%s", report.sent, settings.host, settings.port
        )


DISABLED_LINE = "mail: IDP_SMTP_HOST is not set: email is off, messages stay queued"
