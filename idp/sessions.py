"""Server-side browser sessions in the database (or Redis), never in the cookie.

The cookie carries only a random id; the store keeps its SHA-256. Idle and absolute
timeouts are enforced on every request, and ``rotate`` issues a new id at each login step so
a session id planted before login is worthless afterwards.
"""

from __future__ import annotations

import datetime as dt
import json

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import delete, insert, select, update
from werkzeug.datastructures import CallbackDict

from idp.clock import as_utc
from idp.crypto import hash_token, new_token
from idp.models import WebSession


class ServerSession(CallbackDict, SessionMixin):
    def __init__(self, initial=None, sid: str | None = None, created_at: float | None = None):
        def on_update(_self):
            _self.modified = True

        super().__init__(initial or {}, on_update)
        self.sid = sid
        self.created_at = created_at
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


def cookie_name(app: Flask) -> str:
    return "__Host-idp_session" if app.extensions["idp.settings"].is_https else "idp_session"


class DatabaseStore:
    """Sessions in ``web_sessions``, written on their own connection: the store never commits
    (or rolls back) the request's unit of work."""

    def __init__(self, app: Flask) -> None:
        self._app = app

    def _engine(self):
        return self._app.extensions["idp.state_engine"]

    def load(self, sid: str) -> tuple[dict, float, float] | None:
        with self._engine().connect() as conn:
            row = conn.execute(
                select(WebSession.data, WebSession.created_at, WebSession.last_seen_at).where(
                    WebSession.id_hash == hash_token(sid)
                )
            ).one_or_none()
        if row is None:
            return None
        return (
            json.loads(row.data),
            as_utc(row.created_at).timestamp(),
            as_utc(row.last_seen_at).timestamp(),
        )

    def save(self, sid: str, data: dict, created_at: float, now: float, ttl: int, *, new: bool):
        """Write a new session, or update one that still exists: a session deleted meanwhile
        (logged out, or rotated by a concurrent request) is never brought back."""
        values = {
            "data": json.dumps(data),
            "practitioner_id": (data.get("auth") or {}).get("pid"),
            "last_seen_at": dt.datetime.fromtimestamp(now, dt.UTC),
        }
        with self._engine().begin() as conn:
            if new:
                conn.execute(
                    insert(WebSession).values(
                        id_hash=hash_token(sid),
                        created_at=dt.datetime.fromtimestamp(created_at, dt.UTC),
                        **values,
                    )
                )
                return True
            updated = conn.execute(
                update(WebSession).where(WebSession.id_hash == hash_token(sid)).values(**values)
            ).rowcount
        return updated == 1

    def delete(self, sid: str) -> None:
        with self._engine().begin() as conn:
            conn.execute(delete(WebSession).where(WebSession.id_hash == hash_token(sid)))


class RedisStore:
    def __init__(self, client, prefix: str = "idp:session:") -> None:
        self._redis = client
        self._prefix = prefix

    def load(self, sid: str):
        raw = self._redis.get(self._prefix + hash_token(sid))
        if raw is None:
            return None
        record = json.loads(raw)
        return record["data"], record["created_at"], record["last_seen_at"]

    def save(self, sid, data, created_at, now, ttl, *, new: bool) -> bool:
        record = {"data": data, "created_at": created_at, "last_seen_at": now}
        name = self._prefix + hash_token(sid)
        # NX for a new id, XX for an existing one: a session deleted meanwhile stays deleted.
        return bool(self._redis.set(name, json.dumps(record), ex=ttl, nx=new, xx=not new))

    def delete(self, sid: str) -> None:
        self._redis.delete(self._prefix + hash_token(sid))


class ServerSessionInterface(SessionInterface):
    def __init__(self, store) -> None:
        self.store = store

    def _limits(self, app: Flask) -> tuple[int, int]:
        settings = app.extensions["idp.settings"]
        return settings.session_idle_seconds, settings.session_absolute_seconds

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        now = app.extensions["idp.clock"].now().timestamp()
        sid = request.cookies.get(cookie_name(app))
        if sid and len(sid) < 100:
            loaded = self.store.load(sid)
            if loaded is not None:
                data, created_at, last_seen = loaded
                idle, absolute = self._limits(app)
                if now - last_seen <= idle and now - created_at <= absolute:
                    session = ServerSession(data, sid=sid, created_at=created_at)
                    session.modified = True  # refresh last_seen (sliding idle timeout)
                    return session
                self.store.delete(sid)
        return ServerSession(created_at=now)

    def save_session(self, app: Flask, session: ServerSession, response: Response) -> None:
        name = cookie_name(app)
        secure = app.extensions["idp.settings"].is_https
        if session.destroy_requested or (not session and session.sid):
            if session.sid:
                self.store.delete(session.sid)
            response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="Lax")
            return
        if not session or not session.modified:
            return
        now = app.extensions["idp.clock"].now().timestamp()
        if session.rotate_requested:
            if session.sid:
                self.store.delete(session.sid)
            session.sid = None
            session.created_at = now  # the absolute timeout counts from the login
        new = session.sid is None
        if new:
            session.sid = new_token(32)
        _idle, absolute = self._limits(app)
        if not self.store.save(
            session.sid, dict(session), session.created_at, now, absolute, new=new
        ):
            return  # ended by another request meanwhile: this one must not revive it
        response.set_cookie(
            name, session.sid, httponly=True, secure=secure, samesite="Lax", path="/"
        )
        response.vary.add("Cookie")
