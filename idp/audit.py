"""Append-only audit trail. Event names are ``source:subject:action`` tags; details never
hold secrets."""

from __future__ import annotations

import json

from flask import has_request_context, request
from sqlalchemy.orm import Session

from idp.models import AuditEvent
from idp.services import client_address, clock


def values(
    event: str,
    *,
    practitioner_id: int | None = None,
    client_id: str | None = None,
    **details: object,
) -> dict:
    """The row of one event (see ``record``), for a caller that inserts it itself."""
    ip = user_agent = None
    if has_request_context():
        ip = client_address()
        user_agent = (request.user_agent.string or "")[:300]
    return dict(
        at=clock().now(),
        event=event,
        practitioner_id=practitioner_id,
        client_id=client_id,
        ip=ip,
        user_agent=user_agent,
        details_json=json.dumps(details, sort_keys=True, default=str),
    )


def record(
    db: Session,
    event: str,
    *,
    practitioner_id: int | None = None,
    client_id: str | None = None,
    **details: object,
) -> AuditEvent:
    """Add an event to the caller's transaction: it lands with the change it describes."""
    entry = AuditEvent(
        **values(event, practitioner_id=practitioner_id, client_id=client_id, **details)
    )
    db.add(entry)
    return entry
