"""Housekeeping: what expired is purged, in short batches, never the audit trail.

``prune`` removes each kind of row once nothing can use it any more, a batch at a time
(``DELETE … WHERE id IN (SELECT id … WHERE <expiry> < :cutoff LIMIT :batch)``), each batch
in its own short transaction, until a batch comes back short. Every condition reads one
indexed column (migration 0011), so a pass never scans a table that grows with use.

``audit_events`` is never touched: it is append-only (triggers refuse DELETE).

Each ``idp serve`` worker runs a pass every ``INTERVAL_SECONDS`` on a thread beside the app,
under a turn shared by the processes (``idp.turns``): one process prunes at a time.
``idp db prune`` runs one pass by hand.
"""

from __future__ import annotations

import datetime as dt
import logging

from flask import Flask
from sqlalchemy import and_, delete, exists, select
from sqlalchemy.engine import Engine

from idp.clock import Clock
from idp.config import Settings
from idp.models import (
    AuthChallenge,
    AuthorizationCode,
    Invitation,
    OutboxMessage,
    PasswordReset,
    RecoveryApproval,
    RecoveryRequest,
    RecoveryStatus,
    SmartcardLogin,
    ThrottleCounter,
    Token,
    WebSession,
)
from idp.ratelimit import LIMITS
from idp.turns import Background, turn

log = logging.getLogger("idp.housekeeping")

BATCH_SIZE = 500
"""Rows deleted per transaction: short locks, short WAL bursts."""
INTERVAL_SECONDS = 600.0
"""Between two background passes of a worker."""
ADVISORY_LOCK_KEY = 0x1D9_9E0E  # "idp prune": one number for every process of the deployment

SENT_MAIL_RETENTION = dt.timedelta(days=30)
"""A sent email's row (subject, address, ``sent_at``) is kept this long as the record of what
was sent; an unsent one (waiting, or given up) is never pruned."""
LINK_GRACE = dt.timedelta(days=1)
"""Password resets and invitations stay a day past their expiry (a late click is answered
"expired", not "unknown")."""
CLOSED_RECOVERY_RETENTION = dt.timedelta(days=365)
"""A closed recovery request (denied, cancelled, completed, expired) is kept a year after it
was filed, with its approvals; the audit trail keeps its history for good."""

CLOSED_RECOVERY = tuple(s for s in RecoveryStatus.ALL if s not in RecoveryStatus.OPEN)


def codes_kept_since(now: dt.datetime, settings: Settings) -> dt.datetime:
    """Codes issued before this can no longer be exchanged; the prune removes them (unless a
    token still points to one) and the nonce check ignores them."""
    return now - dt.timedelta(seconds=settings.code_ttl_seconds)


def throttle_counters_kept_since(now: dt.datetime) -> dt.datetime:
    """A counter whose last failure is older than the longest limit's window neither blocks
    nor counts (``idp.ratelimit._wait``: it starts again from zero)."""
    return now - dt.timedelta(seconds=max(limit.ttl for limit in LIMITS.values()))


def _batches(engine: Engine, table, key, condition, batch: int) -> int:
    chosen = select(key).where(condition).limit(batch).scalar_subquery()
    statement = delete(table).where(key.in_(chosen))
    removed = 0
    while True:
        with engine.begin() as connection:
            count = connection.execute(statement).rowcount
        removed += count
        if count < batch:
            return removed


def prune(
    engine: Engine, clock: Clock, settings: Settings, *, batch: int = BATCH_SIZE
) -> dict[str, int]:
    """Delete what expired, kind by kind; the number of rows removed per kind."""
    now = clock.now()
    tokens = Token.__table__
    codes = AuthorizationCode.__table__
    sessions = WebSession.__table__
    throttle = ThrottleCounter.__table__
    mail = OutboxMessage.__table__
    requests = RecoveryRequest.__table__
    approvals = RecoveryApproval.__table__
    idle = now - dt.timedelta(seconds=settings.session_idle_seconds)
    absolute = now - dt.timedelta(seconds=settings.session_absolute_seconds)
    closed_before = now - CLOSED_RECOVERY_RETENTION
    closed_old = and_(requests.c.status.in_(CLOSED_RECOVERY), requests.c.created_at < closed_before)
    kinds = (
        # tokens first: tokens.authorization_code_id points to the codes
        ("tokens", tokens, tokens.c.id, tokens.c.expires_at < now),
        (
            "authorization_codes",
            codes,
            codes.c.id,
            and_(
                codes.c.issued_at < codes_kept_since(now, settings),
                ~exists().where(tokens.c.authorization_code_id == codes.c.id),
            ),
        ),
        ("web_sessions_idle", sessions, sessions.c.id_hash, sessions.c.last_seen_at < idle),
        ("web_sessions_absolute", sessions, sessions.c.id_hash, sessions.c.created_at < absolute),
        (
            "auth_challenges",
            AuthChallenge.__table__,
            AuthChallenge.__table__.c.id,
            AuthChallenge.__table__.c.expires_at < now,
        ),
        (
            "smartcard_logins",
            SmartcardLogin.__table__,
            SmartcardLogin.__table__.c.id,
            SmartcardLogin.__table__.c.expires_at < now,
        ),
        (
            "throttle_counters",
            throttle,
            throttle.c.key,
            and_(
                throttle.c.last_failure_at < throttle_counters_kept_since(now),
                throttle.c.blocked_until < now,
            ),
        ),
        ("mail_outbox", mail, mail.c.id, mail.c.sent_at < now - SENT_MAIL_RETENTION),
        (
            "password_resets",
            PasswordReset.__table__,
            PasswordReset.__table__.c.id,
            PasswordReset.__table__.c.expires_at < now - LINK_GRACE,
        ),
        (
            "invitations",
            Invitation.__table__,
            Invitation.__table__.c.id,
            Invitation.__table__.c.expires_at < now - LINK_GRACE,
        ),
        # approvals before their request (foreign key)
        (
            "recovery_approvals",
            approvals,
            approvals.c.id,
            approvals.c.request_id.in_(select(requests.c.id).where(closed_old)),
        ),
        ("recovery_requests", requests, requests.c.id, closed_old),
    )
    return {
        name: _batches(engine, table, key, condition, batch)
        for name, table, key, condition in kinds
    }


def prune_app(app: Flask) -> dict[str, int]:
    return prune(
        app.extensions["idp.engine"], app.extensions["idp.clock"], app.extensions["idp.settings"]
    )


def one_pass(app: Flask) -> dict[str, int] | None:
    """Prune now if no other process is pruning; None if it was not this process's turn."""
    with turn(app, "prune", ADVISORY_LOCK_KEY) as mine:
        if not mine:
            return None
        return prune_app(app)


def start(app: Flask, *, interval: float = INTERVAL_SECONDS) -> Background:
    """The prune beside the app, every ``interval`` seconds, the first after one interval."""
    return Background(
        app, one_pass, name="prune", interval=interval, log=log, at_once=False
    ).start()
