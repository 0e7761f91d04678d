"""Server-side browser sessions in the database (or Redis), never in the cookie.

The cookie carries only a random id; the store keeps its SHA-256. Idle and absolute
timeouts are enforced on every request, and ``rotate`` issues a new id at each login step so
a session id planted before login is worthless afterwards.

A browser sends overlapping requests with the same cookie (the login page's background
``POST /login/passkey/options`` while a new ``GET /authorize`` arrives, say). A request
therefore writes back only what it changed: the top-level keys it set or modified and the keys
it removed, compared with what it loaded, merged onto what is stored *now*, atomically against
the other requests' writes. Two requests that each set a different key both keep it; for one
key, the last write wins. Only a new session and a rotation write the whole session.

Each store also lists and ends the sessions of one practitioner (the account page's list of
sessions, "Sign out everywhere"), through an index of that practitioner's sessions only:
``practitioner_id`` in the database, a set of id hashes per practitioner in Redis. A session
belongs to a practitioner once its login is complete. A new session records where it was
opened from (the client's address and the browser's User-Agent, cut to 300 characters): a
login step always writes a new session, so that is where the login was made.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import bindparam, delete, insert, select, update
from werkzeug.datastructures import CallbackDict

from idp.clock import as_utc
from idp.crypto import hash_token, new_token
from idp.models import WebSession

# Each failed attempt means that another request's write to the same session went through in
# between: a browser's handful of overlapping requests never comes near this.
MERGE_ATTEMPTS = 50


class SessionWriteConflictError(RuntimeError):
    """The session kept changing under this request's write: nothing was written."""


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def snapshot(data: dict) -> dict[str, str]:
    """Each top-level key's value as canonical JSON: a later nested change shows against it."""
    return {key: _canonical(value) for key, value in data.items()}


@dataclass(frozen=True)
class Changes:
    """What one request did to its session: top-level keys set (or changed) and removed."""

    changed: dict = field(default_factory=dict)
    removed: frozenset[str] = frozenset()

    @classmethod
    def between(cls, loaded: dict[str, str], data: dict) -> Changes:
        """From the ``snapshot`` taken when the session was loaded to its ``data`` now."""
        changed = {
            key: value for key, value in data.items() if loaded.get(key) != _canonical(value)
        }
        return cls(changed, frozenset(loaded.keys() - data.keys()))

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed)

    def apply(self, stored: dict) -> dict:
        merged = {key: value for key, value in stored.items() if key not in self.removed}
        merged.update(self.changed)
        return merged


class ServerSession(CallbackDict, SessionMixin):
    def __init__(
        self,
        initial=None,
        sid: str | None = None,
        created_at: float | None = None,
        as_read: str | bytes | None = None,
    ):
        def on_update(_self):
            _self.modified = True

        super().__init__(initial or {}, on_update)
        self.sid = sid
        self.created_at = created_at
        self.as_read = as_read  # the store's text of it, for the merge's compare-and-swap
        self.loaded = snapshot(self)  # what the store held for this id when the request began
        self.modified = False
        self.rotate_requested = False
        self.destroy_requested = False

    def rotate(self) -> None:
        """New id, same content: called when the authentication level changes."""
        self.rotate_requested = True
        self.modified = True

    def destroy(self) -> None:
        self.clear()
        self.destroy_requested = True

    def changes(self) -> Changes:
        return Changes.between(self.loaded, self)


def cookie_name(app: Flask) -> str:
    return "__Host-idp_session" if app.extensions["idp.settings"].is_https else "idp_session"


USER_AGENT_CHARS = 300


def _practitioner_id(data: dict) -> int | None:
    """The practitioner of the session's completed login (``idp.auth.flow``), if any."""
    completed = data.get("auth")
    value = completed.get("practitioner_id") if isinstance(completed, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class StoredSession:
    """One session as the account page lists it; ``id_hash`` names it, never its id."""

    id_hash: str
    created_at: float
    last_seen_at: float
    ip: str | None
    user_agent: str | None


def _origin(meta: dict | None) -> tuple[str | None, str | None]:
    meta = meta or {}
    ip = meta.get("ip")
    user_agent = meta.get("user_agent")
    return (ip[:64] if ip else None), (user_agent[:USER_AGENT_CHARS] if user_agent else None)


_SESSIONS = WebSession.__table__
_BY_ID = _SESSIONS.c.id_hash == bindparam("h")
_UNCHANGED = _BY_ID & (_SESSIONS.c.data == bindparam("stored"))
# Built once: every request of a signed-in browser runs two or three of them.
_LOAD = select(_SESSIONS.c.data, _SESSIONS.c.created_at, _SESSIONS.c.last_seen_at).where(_BY_ID)
_DATA = select(_SESSIONS.c.data).where(_BY_ID)
_INSERT = insert(_SESSIONS)
_TOUCH = update(_SESSIONS).where(_BY_ID).values(last_seen_at=bindparam("seen"))
_REWRITE = (
    update(_SESSIONS)
    .where(_UNCHANGED)
    .values(
        data=bindparam("data"),
        practitioner_id=bindparam("owner"),
        last_seen_at=bindparam("seen"),
    )
)
_DROP_UNCHANGED = delete(_SESSIONS).where(_UNCHANGED)
_DELETE = delete(_SESSIONS).where(_BY_ID)


class DatabaseStore:
    """Sessions in ``web_sessions``, written on their own connection: the store never commits
    (or rolls back) the request's unit of work.

    ``merge`` is an optimistic compare-and-swap on the stored JSON text, with no schema change
    and no lock held while the request's changes are applied: merge onto the text loaded with
    the request, then ``UPDATE … WHERE id_hash = :h AND data = :text_read``; no row updated
    means another request wrote in between, so read the row again (its own short transaction)
    and retry. The condition is checked against the latest committed row on both databases:

    - PostgreSQL (READ COMMITTED, the engine's default): an UPDATE that finds the row locked by
      a concurrent writer waits for it, then re-evaluates its WHERE clause on the new version of
      the row, so of two writers that read the same text only the first matches.
    - SQLite: writers are serialised by the database write lock, and a transaction whose first
      statement is the write sees the latest commit (WAL mode waits on ``busy_timeout`` rather
      than writing from a stale snapshot); the read is kept out of the writing transaction for
      that reason.

    A deleted row (logout, a rotation by a concurrent request) matches nothing and is never
    written again. A request that changed nothing only moves ``last_seen_at``.
    """

    def __init__(self, app: Flask) -> None:
        self._app = app

    def _engine(self):
        return self._app.extensions["idp.state_engine"]

    def load(self, sid: str) -> tuple[dict, float, float, str] | None:
        """The session's data, creation and last use, and its stored text (for ``merge``)."""
        with self._engine().connect() as conn:
            row = conn.execute(_LOAD, {"h": hash_token(sid)}).one_or_none()
        if row is None:
            return None
        return (
            json.loads(row.data),
            as_utc(row.created_at).timestamp(),
            as_utc(row.last_seen_at).timestamp(),
            row.data,
        )

    def save(
        self,
        sid: str,
        data: dict,
        created_at: float,
        now: float,
        ttl: int,
        *,
        new: bool,
        meta: dict | None = None,
        replaces: str | None = None,
    ):
        """Write a whole session: a new one, or one that still exists (a session deleted
        meanwhile, logged out or rotated by a concurrent request, is never brought back).
        ``meta`` (``ip``, ``user_agent``): where a new session is opened from. ``replaces``:
        the id a rotation ends, deleted in the same transaction."""
        values = {
            "data": json.dumps(data),
            "practitioner_id": _practitioner_id(data),
            "last_seen_at": dt.datetime.fromtimestamp(now, dt.UTC),
        }
        with self._engine().begin() as conn:
            if replaces is not None:
                conn.execute(_DELETE, {"h": hash_token(replaces)})
            if new:
                ip, user_agent = _origin(meta)
                conn.execute(
                    _INSERT,
                    dict(
                        id_hash=hash_token(sid),
                        created_at=dt.datetime.fromtimestamp(created_at, dt.UTC),
                        ip=ip,
                        user_agent=user_agent,
                        **values,
                    ),
                )
                return True
            updated = conn.execute(
                update(WebSession).where(WebSession.id_hash == hash_token(sid)).values(**values)
            ).rowcount
        return updated == 1

    def merge(
        self, sid: str, changes: Changes, now: float, ttl: int, *, as_read: str | None = None
    ) -> bool:
        """Apply ``changes`` to the session as stored now (see the class). True while the
        session exists afterwards; False if it was gone, or left empty and so deleted.
        ``as_read``: the data's text when the request loaded it (``load``), tried first."""
        id_hash = hash_token(sid)
        seen = dt.datetime.fromtimestamp(now, dt.UTC)
        if not changes:  # the sliding idle timeout only: the data stays as it is
            with self._engine().begin() as conn:
                touched = conn.execute(_TOUCH, {"h": id_hash, "seen": seen}).rowcount
            return touched == 1
        stored = as_read
        for _ in range(MERGE_ATTEMPTS):
            if stored is None:
                with self._engine().connect() as conn:
                    stored = conn.execute(_DATA, {"h": id_hash}).scalar_one_or_none()
                if stored is None:
                    return False
            merged = changes.apply(json.loads(stored))
            unchanged_since_read = {"h": id_hash, "stored": stored}
            with self._engine().begin() as conn:
                if merged:
                    written = conn.execute(
                        _REWRITE,
                        {
                            **unchanged_since_read,
                            "data": json.dumps(merged),
                            "owner": _practitioner_id(merged),
                            "seen": seen,
                        },
                    ).rowcount
                else:
                    written = conn.execute(_DROP_UNCHANGED, unchanged_since_read).rowcount
            if written == 1:
                return bool(merged)
            stored = None  # another request wrote first (or ended the session): read again
        raise SessionWriteConflictError("the session changed under every attempt to write it")

    def delete(self, sid: str) -> None:
        with self._engine().begin() as conn:
            conn.execute(_DELETE, {"h": hash_token(sid)})

    def list_for(self, practitioner_id: int) -> list[StoredSession]:
        """The practitioner's sessions (through the index on ``practitioner_id``), timed out
        or not: the caller applies the timeouts."""
        with self._engine().connect() as conn:
            rows = conn.execute(
                select(
                    WebSession.id_hash,
                    WebSession.created_at,
                    WebSession.last_seen_at,
                    WebSession.ip,
                    WebSession.user_agent,
                ).where(WebSession.practitioner_id == practitioner_id)
            ).all()
        return [
            StoredSession(
                row.id_hash,
                as_utc(row.created_at).timestamp(),
                as_utc(row.last_seen_at).timestamp(),
                row.ip,
                row.user_agent,
            )
            for row in rows
        ]

    def delete_for(self, practitioner_id: int, *, keep: str | None = None) -> int:
        """End every session of the practitioner but ``keep`` (an id hash); how many ended."""
        condition = WebSession.practitioner_id == practitioner_id
        if keep is not None:
            condition = condition & (WebSession.id_hash != keep)
        with self._engine().begin() as conn:
            return conn.execute(delete(WebSession).where(condition)).rowcount

    def delete_by_handle(self, practitioner_id: int, handle: str) -> bool:
        """End the session named ``handle`` (its id hash) if it is this practitioner's."""
        with self._engine().begin() as conn:
            deleted = conn.execute(
                delete(WebSession).where(
                    WebSession.id_hash == handle, WebSession.practitioner_id == practitioner_id
                )
            ).rowcount
        return deleted == 1


MERGE_SCRIPT = """
-- KEYS: the session, the index it leaves, the index it joins (used as ARGV[5], ARGV[6] say)
-- ARGV: the record as read, the new record ('' deletes it), ttl, the id hash, leave, join
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if current ~= ARGV[1] then return current end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
if ARGV[5] == '1' then redis.call('SREM', KEYS[2], ARGV[4]) end
if ARGV[6] == '1' then
  redis.call('SADD', KEYS[3], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return 1
"""


SAVE_SCRIPT = """
-- KEYS: the new session, the session it replaces, the index it joins (as ARGV[4], ARGV[5] say)
-- ARGV: the record, ttl, the new id hash, replaces, joins. NX: an id is never written twice.
-- The replaced session's index entry stays until a listing drops it (see RedisStore).
if ARGV[4] == '1' then redis.call('DEL', KEYS[2]) end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
if ARGV[5] == '1' then
  redis.call('SADD', KEYS[3], ARGV[3])
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
return 1
"""


class RedisStore:
    """One JSON record per session, ``{"data", "created_at", "last_seen_at"}``, expiring after
    the absolute timeout.

    ``merge`` is a compare-and-swap on the record's text, in one script (``MERGE_SCRIPT``):
    the record is rewritten only if it is still the text this request read (when it opened
    the session, or again after a conflict); otherwise the script answers the record as it is
    now, the request's changes are applied to it, and the swap is tried again. The merge of
    the data itself runs in Python, not in Lua: Lua's JSON library would round timestamps and
    turn empty lists into objects. The idle timeout is ``last_seen_at`` inside the record, so
    a request that changed nothing still rewrites the record, with a fresh TTL.
    """

    def __init__(self, client, prefix: str = "idp:session:") -> None:
        self._redis = client
        self._prefix = prefix
        self._merge_script = client.register_script(MERGE_SCRIPT)  # EVALSHA, loaded once
        self._save_script = client.register_script(SAVE_SCRIPT)

    def _index(self, practitioner_id: int) -> str:
        """The set of a practitioner's session id hashes. An entry outlives its session when
        the session's key expires or a rotation replaces it: listing drops it. The set expires
        with the last session."""
        return f"{self._prefix}by-practitioner:{practitioner_id}"

    def _indexed(self, pipe, practitioner_id: int | None, id_hash: str, ttl: int) -> None:
        if practitioner_id is not None:
            pipe.sadd(self._index(practitioner_id), id_hash)
            pipe.expire(self._index(practitioner_id), ttl)

    def load(self, sid: str):
        raw = self._redis.get(self._prefix + hash_token(sid))
        if raw is None:
            return None
        record = json.loads(raw)
        return record["data"], record["created_at"], record["last_seen_at"], raw

    def save(self, sid, data, created_at, now, ttl, *, new: bool, meta=None, replaces=None) -> bool:
        id_hash = hash_token(sid)
        name = self._prefix + id_hash
        owner = _practitioner_id(data)
        record = {"data": data, "created_at": created_at, "last_seen_at": now}
        if new:  # a new session, or a rotation: one script (SAVE_SCRIPT)
            record["ip"], record["user_agent"] = _origin(meta)
            old = self._prefix + hash_token(replaces) if replaces is not None else name
            written = self._save_script(
                keys=[name, old, self._index(owner or 0)],
                args=[
                    json.dumps(record),
                    ttl,
                    id_hash,
                    int(replaces is not None),
                    int(bool(owner)),
                ],
            )
            return written == 1
        stored = self._redis.get(name)
        if stored is not None:
            previous = json.loads(stored)
            record.update(ip=previous.get("ip"), user_agent=previous.get("user_agent"))
        # XX: a session deleted meanwhile stays deleted.
        written = bool(self._redis.set(name, json.dumps(record), ex=ttl, xx=True))
        if written and owner is not None:
            with self._redis.pipeline() as pipe:
                self._indexed(pipe, owner, id_hash, ttl)
                pipe.execute()
        return written

    def merge(
        self,
        sid: str,
        changes: Changes,
        now: float,
        ttl: int,
        *,
        as_read: str | bytes | None = None,
    ) -> bool:
        """Apply ``changes`` to the session as stored now (see the class). True while the
        session exists afterwards; False if it was gone, or left empty and so deleted.
        ``as_read``: the record's text when the request loaded it (``load``), tried first."""
        id_hash = hash_token(sid)
        name = self._prefix + id_hash
        raw = as_read if as_read is not None else self._redis.get(name)
        for _ in range(MERGE_ATTEMPTS):
            if raw is None:
                return False
            record = json.loads(raw)
            before = _practitioner_id(record["data"])
            merged = changes.apply(record["data"])
            after = _practitioner_id(merged) if merged else None
            if merged:
                record.update(data=merged, last_seen_at=now)
            leaves = before is not None and before != after
            answer = self._merge_script(
                keys=[name, self._index(before or 0), self._index(after or 0)],
                args=[
                    raw,
                    json.dumps(record) if merged else "",
                    ttl,
                    id_hash,
                    int(leaves),
                    int(after is not None),
                ],
            )
            if answer == 1:
                return bool(merged)
            raw = answer or None  # another request wrote first: its record, or gone (0)
        raise SessionWriteConflictError("the session changed under every attempt to write it")

    def delete(self, sid: str) -> None:
        self._delete_hash(hash_token(sid))

    def _delete_hash(self, id_hash: str) -> None:
        name = self._prefix + id_hash
        raw = self._redis.getdel(name)
        owner = _practitioner_id(json.loads(raw)["data"]) if raw is not None else None
        if owner is not None:
            self._redis.srem(self._index(owner), id_hash)

    def _records(self, practitioner_id: int) -> dict[str, dict]:
        """The practitioner's live sessions by id hash; index entries whose session expired
        (or now belongs to no one, or to someone else) are dropped from the index."""
        index = self._index(practitioner_id)
        hashes = sorted(member.decode() for member in self._redis.smembers(index))
        if not hashes:
            return {}
        found, stale = {}, []
        for id_hash, raw in zip(
            hashes, self._redis.mget([self._prefix + h for h in hashes]), strict=True
        ):
            record = json.loads(raw) if raw is not None else None
            if record is None or _practitioner_id(record["data"]) != practitioner_id:
                stale.append(id_hash)
            else:
                found[id_hash] = record
        if stale:
            self._redis.srem(index, *stale)
        return found

    def list_for(self, practitioner_id: int) -> list[StoredSession]:
        return [
            StoredSession(
                id_hash,
                record["created_at"],
                record["last_seen_at"],
                record.get("ip"),
                record.get("user_agent"),
            )
            for id_hash, record in self._records(practitioner_id).items()
        ]

    def delete_for(self, practitioner_id: int, *, keep: str | None = None) -> int:
        ended = [h for h in self._records(practitioner_id) if h != keep]
        if ended:
            with self._redis.pipeline() as pipe:
                pipe.delete(*(self._prefix + h for h in ended))
                pipe.srem(self._index(practitioner_id), *ended)
                pipe.execute()
        return len(ended)

    def delete_by_handle(self, practitioner_id: int, handle: str) -> bool:
        if handle not in self._records(practitioner_id):
            return False
        self._delete_hash(handle)
        return True


class ServerSessionInterface(SessionInterface):
    """Loads the session when the request begins, writes what the request did at its end.

    - ``destroy()`` deletes the session, whatever other requests wrote to it.
    - ``rotate()`` (a login step) deletes the old id and writes the whole session, as this
      request leaves it, under a new one: a login step decides the entire state of the session
      it opens, so nothing another request wrote to the old id meanwhile is carried into it.
    - Otherwise only this request's changes are merged onto the stored session (``Changes``).
      ``clear()`` (or popping every key) removes every key the session held when this request
      loaded it; a key another request added meanwhile stays, since that request's write is as
      legitimate as this one's (ending a session whatever else happens is ``destroy()``). A
      session left with no key at all is deleted, and so is its cookie.
    - A session deleted meanwhile, by a logout or a concurrent rotation, is never revived.
    """

    def __init__(self, store, *, sessionless: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.sessionless = sessionless
        """Paths served to clients, not browsers (token, UserInfo, discovery, JWKS): the
        browser session is neither read nor written there."""

    def _limits(self, app: Flask) -> tuple[int, int]:
        settings = app.extensions["idp.settings"]
        return settings.session_idle_seconds, settings.session_absolute_seconds

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        now = app.extensions["idp.clock"].now().timestamp()
        if request.path in self.sessionless or (
            app.static_url_path and request.path.startswith(app.static_url_path + "/")
        ):
            # A stylesheet, an icon or a client's call needs no session: nothing is read,
            # written or set.
            return ServerSession(created_at=now)
        sid = request.cookies.get(cookie_name(app))
        if sid and len(sid) < 100:
            loaded = self.store.load(sid)
            if loaded is not None:
                data, created_at, last_seen, as_read = loaded
                idle, absolute = self._limits(app)
                if now - last_seen <= idle and now - created_at <= absolute:
                    return ServerSession(data, sid=sid, created_at=created_at, as_read=as_read)
                self.store.delete(sid)
        return ServerSession(created_at=now)

    def save_session(self, app: Flask, session: ServerSession, response: Response) -> None:
        name = cookie_name(app)
        secure = app.extensions["idp.settings"].is_https

        def forget() -> None:
            response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="Lax")

        if session.destroy_requested:
            if session.sid:
                self.store.delete(session.sid)
            forget()
            return
        now = app.extensions["idp.clock"].now().timestamp()
        _idle, absolute = self._limits(app)
        if session.sid and not session.rotate_requested:
            response.vary.add("Cookie")
            # Even a request that changed nothing slides the idle timeout.
            changes = session.changes()
            if not self.store.merge(session.sid, changes, now, absolute, as_read=session.as_read):
                if not session:  # emptied by this request: gone with its last key
                    forget()
            # The browser has this id already. Sending it again would let a late response
            # put back a cookie the browser has since replaced or dropped.
            return
        replaced = session.sid
        if session.rotate_requested:
            session.created_at = now  # the absolute timeout counts from the login
        if not session:
            if replaced:
                self.store.delete(replaced)
                forget()
            return
        session.sid = new_token(32)
        self.store.save(
            session.sid,
            dict(session),
            session.created_at,
            now,
            absolute,
            new=True,
            meta=_request_origin(),
            replaces=replaced,  # a rotation: the old id ends with the new one's write
        )
        response.set_cookie(
            name, session.sid, httponly=True, secure=secure, samesite="Lax", path="/"
        )
        response.vary.add("Cookie")


def _request_origin() -> dict:
    """Where this request comes from, for a new session (see the module)."""
    from flask import has_request_context, request

    from idp.services import client_address

    if not has_request_context():
        return {}
    return {"ip": client_address(), "user_agent": request.headers.get("User-Agent", "")}
