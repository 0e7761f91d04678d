"""Email: the outbox and its sender (queued in the database, delivered with retries)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session


def queue(db: Session, practitioner, event: str, context: dict[str, Any]) -> None:
    """Queue the message for ``event`` in the outbox (in the caller's unit of work)."""
    # The outbox and its sender land with the mail feature; until then nothing is queued.
    return None
