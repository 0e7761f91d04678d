"""What a practitioner does to their own account from the account page: their sessions, the
applications they allowed, their security history, "This wasn't me", a new password.

Views stay thin: each change here is one unit of work (audited, committed once); the session
store writes on its own connection, after the commit, so a session is never ended for a change
that was rolled back.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from idp import audit
from idp.accounts.service import hashed_password
from idp.models import AuditEvent, Consent, OAuthClient, Practitioner, Token
from idp.notifications import notify
from idp.services import passwords
from idp.sessions import StoredSession

HISTORY_PAGE = 30
HANDLE_RE = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- User-Agent


BROWSERS = (  # the first match wins: Edge and Opera also say "Chrome", Chrome says "Safari"
    ("Edg/", "Edge"),
    ("EdgA/", "Edge"),
    ("OPR/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("CriOS/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Windows", "Windows"),
    ("Macintosh", "macOS"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


@dataclass(frozen=True)
class Browser:
    name: str | None
    system: str | None


def describe_user_agent(user_agent: str | None) -> Browser:
    """ "Firefox", "Windows": the browser and the system in a word each, None when unknown.

    A few names are enough to recognise one's own sessions; the full header is not shown
    (it is long, and easy to fake anyway)."""
    text = user_agent or ""
    name = next((label for token, label in BROWSERS if token in text), None)
    system = next((label for token, label in SYSTEMS if token in text), None)
    return Browser(name, system)


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class SessionEntry:
    handle: str
    """Names the session in the page's forms: the SHA-256 of its id, as the store keeps it.
    It cannot be turned back into the id (a 256-bit random value), and the cookie needs the
    id itself, so the handle signs no one in; and a practitioner can only end, with it, a
    session the store files under their own account. An HMAC of it would hide nothing more."""
    browser: Browser
    ip: str | None
    signed_in_at: dt.datetime
    last_seen_at: dt.datetime
    current: bool


def is_live(stored: StoredSession, *, now: dt.datetime, idle: int, absolute: int) -> bool:
    moment = now.timestamp()
    return moment - stored.last_seen_at <= idle and moment - stored.created_at <= absolute


def sessions_of(
    store,
    practitioner_id: int,
    *,
    current_hash: str | None,
    now: dt.datetime,
    idle: int,
    absolute: int,
) -> list[SessionEntry]:
    """The practitioner's open sessions, this one first, then the most recently used."""
    entries = [
        SessionEntry(
            handle=stored.id_hash,
            browser=describe_user_agent(stored.user_agent),
            ip=stored.ip,
            signed_in_at=dt.datetime.fromtimestamp(stored.created_at, dt.UTC),
            last_seen_at=dt.datetime.fromtimestamp(stored.last_seen_at, dt.UTC),
            current=stored.id_hash == current_hash,
        )
        for stored in store.list_for(practitioner_id)
        if is_live(stored, now=now, idle=idle, absolute=absolute)
    ]
    return sorted(entries, key=lambda e: (not e.current, -e.last_seen_at.timestamp()))


def sign_out_session(db: Session, store, practitioner: Practitioner, handle: str) -> bool:
    """End one of the practitioner's sessions; False if no session of theirs has that handle."""
    if not isinstance(handle, str) or not HANDLE_RE.fullmatch(handle):
        return False
    if not store.delete_by_handle(practitioner.id, handle):
        return False
    audit.record(db, "account:session:signed_out", practitioner_id=practitioner.id)
    db.commit()
    return True


def revoke_tokens(
    db: Session, practitioner_id: int, *, now: dt.datetime, client_id: str | None = None
) -> int:
    """Revoke the practitioner's access tokens still valid (for one client, or all)."""
    condition = (Token.practitioner_id == practitioner_id) & Token.revoked_at.is_(None)
    if client_id is not None:
        condition = condition & (Token.client_id == client_id)
    return db.execute(
        update(Token).where(condition, Token.expires_at > now).values(revoked_at=now)
    ).rowcount


def sign_out_everywhere(db: Session, store, practitioner: Practitioner, *, now: dt.datetime):
    """Every session of the practitioner ends, this one included, and their tokens are
    revoked: the applications must sign them in again."""
    revoked = revoke_tokens(db, practitioner.id, now=now)
    audit.record(
        db, "account:session:signed_out_everywhere", practitioner_id=practitioner.id, tokens=revoked
    )
    db.commit()
    store.delete_for(practitioner.id)


# --------------------------------------------------------------------------- applications


@dataclass(frozen=True)
class ConnectedApp:
    client_id: str
    name: str
    scopes: tuple[str, ...]
    granted_at: dt.datetime
    last_token_at: dt.datetime | None


def connected_apps(db: Session, practitioner_id: int) -> list[ConnectedApp]:
    """The applications the practitioner allowed, with the last token each was given."""
    last_token = (
        select(Token.client_id, func.max(Token.issued_at).label("last"))
        .where(Token.practitioner_id == practitioner_id)
        .group_by(Token.client_id)
        .subquery()
    )
    rows = db.execute(
        select(Consent, OAuthClient.name, last_token.c.last)
        .join(OAuthClient, OAuthClient.client_id == Consent.client_id)
        .outerjoin(last_token, last_token.c.client_id == Consent.client_id)
        .where(Consent.practitioner_id == practitioner_id)
        .order_by(Consent.granted_at.desc(), Consent.id)
    ).all()
    return [
        ConnectedApp(
            client_id=consent.client_id,
            name=name,
            scopes=tuple(consent.scope.split()),
            granted_at=consent.granted_at,
            last_token_at=_utc(last),
        )
        for consent, name, last in rows
    ]


def _utc(value):
    """``max()`` of a UTC column comes back naive on SQLite (or as text): as a UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def revoke_app(db: Session, practitioner: Practitioner, client_id: str, *, now: dt.datetime):
    """The consent goes and the application's tokens are revoked, in one unit of work: the
    next time it asks, the practitioner is asked again. False if there was no consent."""
    if not isinstance(client_id, str) or len(client_id) > 64:
        return False
    removed = db.execute(
        delete(Consent).where(
            Consent.practitioner_id == practitioner.id, Consent.client_id == client_id
        )
    ).rowcount
    if removed != 1:
        db.rollback()
        return False
    revoked = revoke_tokens(db, practitioner.id, now=now, client_id=client_id)
    audit.record(
        db,
        "account:consent:revoked",
        practitioner_id=practitioner.id,
        client_id=client_id,
        tokens=revoked,
    )
    db.commit()
    return True


# --------------------------------------------------------------------------- history


def history(
    db: Session, practitioner_id: int, *, before: int | None = None, limit: int = HISTORY_PAGE
) -> tuple[list[AuditEvent], int | None]:
    """The practitioner's events, newest first, a page at a time (index on practitioner, id);
    and the ``before`` of the next page, or None on the last one."""
    query = select(AuditEvent).where(AuditEvent.practitioner_id == practitioner_id)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    events = list(db.execute(query.order_by(AuditEvent.id.desc()).limit(limit + 1)).scalars())
    more = len(events) > limit
    events = events[:limit]
    return events, (events[-1].id if more else None)


def not_me(db: Session, store, practitioner: Practitioner, event_id: int, *, now: dt.datetime):
    """ "This wasn't me" on one of the practitioner's events: every session ends (this one
    too), every token is revoked, and the next login must choose a new password before
    anything else. False if the event is not theirs."""
    event = db.get(AuditEvent, event_id)
    if event is None or event.practitioner_id != practitioner.id:
        return False
    revoked = revoke_tokens(db, practitioner.id, now=now)
    practitioner.password_change_required = True
    audit.record(
        db,
        "account:not_me",
        practitioner_id=practitioner.id,
        event_id=event.id,
        reported=event.event,
        tokens=revoked,
    )
    notify(db, practitioner, "not_me")
    db.commit()  # the flag first: a login completed from now on must change the password
    store.delete_for(practitioner.id)
    return True


# --------------------------------------------------------------------------- password


def same_as_current(practitioner: Practitioner, password: str) -> bool:
    return passwords().verify(practitioner.password_hash, password)


def change_password(
    db: Session,
    store,
    practitioner: Practitioner,
    password: str,
    *,
    keep_session: str | None,
    required: bool = False,
) -> int:
    """The new password replaces the old one; every other session of the practitioner ends
    (``keep_session``: this one's id hash); a required change is over. Returns how many
    sessions ended."""
    practitioner.password_hash = hashed_password(password)
    practitioner.password_change_required = False
    audit.record(
        db,
        "account:password:changed",
        practitioner_id=practitioner.id,
        **({"required": True} if required else {}),
    )
    notify(db, practitioner, "password_changed")
    db.commit()
    return store.delete_for(practitioner.id, keep=keep_session)
