"""The outbox: messages queued in the caller's transaction, claimed one at a time to be sent.

Bodies are sealed with the data key (``DataCipher``) and bound to their row (``aad``): three
kinds of message carry a link that acts on the account, and a copied ciphertext would not open
on another row. They are cleared once the message is sent; the row stays with its subject and
``sent_at`` as the record of what was sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from idp.crypto import DataCipher
from idp.mail.render import Rendered
from idp.models import OutboxMessage

LEASE = dt.timedelta(minutes=5)
"""How long a claimed message is left to its sender before another may try it."""
MAX_ATTEMPTS = 12
FIRST_RETRY = dt.timedelta(minutes=1)
LONGEST_RETRY = dt.timedelta(hours=1)


def body_aad(message: OutboxMessage, part: str) -> str:
    if message.id is None:
        raise ValueError("flush the message before sealing its body")
    return f"mail_outbox:{message.id}:{part}"


def add(
    db: Session, *, to_address: str, rendered: Rendered, cipher: DataCipher, now: dt.datetime
) -> OutboxMessage:
    """Queue a message, due at once (no commit: the caller's unit of work carries it)."""
    message = OutboxMessage(
        to_address=to_address,
        subject=rendered.subject[:200],
        created_at=now,
        attempts=0,
        next_attempt_at=now,
    )
    db.add(message)
    db.flush()  # the id binds the bodies to this row
    message.text_body = cipher.encrypt(rendered.text.encode(), aad=body_aad(message, "text"))
    message.html_body = cipher.encrypt(rendered.html.encode(), aad=body_aad(message, "html"))
    return message


@dataclass(frozen=True)
class Letter:
    """A claimed message, opened for sending."""

    id: int
    to_address: str
    subject: str
    text: str
    html: str
    attempts: int


def due_ids(db: Session, *, now: dt.datetime, limit: int) -> list[int]:
    """The unsent messages due now, oldest first (a range read on ``ix_mail_outbox_due``)."""
    return list(
        db.execute(
            select(OutboxMessage.id)
            .where(OutboxMessage.sent_at.is_(None), OutboxMessage.next_attempt_at <= now)
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
        ).scalars()
    )


def claim(db: Session, message_id: int, *, now: dt.datetime) -> bool:
    """Take the message for ``LEASE``, atomically: of two senders only one updates the row.

    The caller commits the claim before it sends, so the other sender sees it."""
    result = db.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.sent_at.is_(None),
            OutboxMessage.next_attempt_at <= now,
        )
        .values(next_attempt_at=now + LEASE)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def open_letter(db: Session, message_id: int, *, cipher: DataCipher) -> Letter:
    """Raises ``idp.crypto.DecryptionError`` if the bodies were altered or the key changed."""
    message = db.get(OutboxMessage, message_id, populate_existing=True)
    return Letter(
        id=message.id,
        to_address=message.to_address,
        subject=message.subject,
        text=cipher.decrypt(message.text_body, aad=body_aad(message, "text")).decode(),
        html=cipher.decrypt(message.html_body, aad=body_aad(message, "html")).decode(),
        attempts=message.attempts,
    )


def mark_sent(db: Session, message_id: int, *, now: dt.datetime) -> None:
    db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.sent_at.is_(None))
        .values(
            sent_at=now,
            next_attempt_at=None,
            text_body=None,
            html_body=None,
            attempts=OutboxMessage.attempts + 1,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )


def retry_delay(attempts: int) -> dt.timedelta:
    """1, 2, 4 … minutes after the first, second, third … failure, at most an hour."""
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)


def mark_failed(
    db: Session, message_id: int, *, now: dt.datetime, error: str, final: bool = False
) -> dt.datetime | None:
    """One more failed attempt: retried later, or given up after ``MAX_ATTEMPTS`` (or at once
    when ``final``). Returns when it is tried next (None: given up)."""
    attempts = (
        db.execute(
            select(OutboxMessage.attempts).where(OutboxMessage.id == message_id)
        ).scalar_one()
        + 1
    )
    give_up = final or attempts >= MAX_ATTEMPTS
    next_attempt = None if give_up else now + retry_delay(attempts)
    db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.sent_at.is_(None))
        .values(
            attempts=attempts,
            next_attempt_at=next_attempt,
            failed_at=now if give_up else None,
            last_error=error[:200],
            **({"text_body": None, "html_body": None} if give_up else {}),
        )
        .execution_options(synchronize_session=False)
    )
    return next_attempt


@dataclass(frozen=True)
class Status:
    waiting: int
    failed: int
    sent: int
    oldest_waiting: dt.datetime | None
    next_attempt_at: dt.datetime | None

    def as_dict(self) -> dict:
        def iso(value):
            return value.isoformat() if value else None

        return {
            "waiting": self.waiting,
            "failed": self.failed,
            "sent": self.sent,
            "oldest_waiting": iso(self.oldest_waiting),
            "next_attempt_at": iso(self.next_attempt_at),
        }


def status(db: Session) -> Status:
    waiting = (OutboxMessage.sent_at.is_(None), OutboxMessage.failed_at.is_(None))
    count, oldest, upcoming = db.execute(
        select(
            func.count(),
            func.min(OutboxMessage.created_at),
            func.min(OutboxMessage.next_attempt_at),
        ).where(*waiting)
    ).one()
    failed = db.execute(
        select(func.count()).where(OutboxMessage.failed_at.is_not(None))
    ).scalar_one()
    sent = db.execute(select(func.count()).where(OutboxMessage.sent_at.is_not(None))).scalar_one()
    return Status(
        waiting=count,
        failed=failed,
        sent=sent,
        oldest_waiting=as_aware(oldest),
        next_attempt_at=as_aware(upcoming),
    )


def as_aware(value):
    from idp.clock import as_utc

    return as_utc(value) if value is not None else None
