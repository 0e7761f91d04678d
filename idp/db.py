"""Engine and per-request database session; migrations applied through Alembic."""

from __future__ import annotations

import time
from pathlib import Path

from flask import Flask, current_app, g
from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from idp.resources import resource_dir

MIGRATIONS_DIR = resource_dir("migrations")


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


DEFAULT_POOL_SIZE = 5


def make_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """Statement parameters stay out of error messages and logs: a failed write of a session
    or a lookup would otherwise print the values it carried.

    ``pool_size`` connections stay open (``init_app``: one per request thread and one for the
    background thread beside them); up to 10 more open for a burst and close after it."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30}, hide_parameters=True, pool_size=pool_size
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # WAL's recommended level: a commit survives the process, not a power cut
            # (the embedded default; PostgreSQL is the production store).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    engine = create_engine(
        url, hide_parameters=True, pool_size=pool_size, pool_recycle=RECYCLE_SECONDS
    )
    _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_SECONDS = 30.0
"""A pooled connection unused for this long is checked before it is handed out."""
RECYCLE_SECONDS = 1800


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pre-ping costs a round trip on every checkout: on a busy server that is
    one more query per request for nothing. Only a connection left idle long enough to have
    been dropped (a database restart, a proxy's idle timeout) is pinged; a dead one is
    replaced before the request sees it."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection, record, _proxy):
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_connection.rollback()
        except Exception as error:  # the driver's own error for a dead connection
            raise exc.DisconnectionError() from error


def init_app(app: Flask, url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
    """``pool_size``: at least the worker's request threads (``Settings.threads`` + 1), so no
    request waits for a connection another thread holds."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url, pool_size=pool_size)
    app.extensions["idp.engine"] = engine
    # Throttle counters and browser sessions are written on short transactions of their own,
    # from a pool of their own: a burst of requests holding the request pool's connections can
    # never starve them (which would leave each request waiting for the next).
    app.extensions["idp.state_engine"] = make_engine(url, pool_size=pool_size)
    app.extensions["idp.sessionmaker"] = maker = sessionmaker(engine, expire_on_commit=False)
    event.listen(maker, "loaded_as_persistent", _hold)
    app.teardown_appcontext(_close_session)


def _hold(session: Session, instance) -> None:
    """A request's session keeps what it loaded until the request ends. The identity map
    alone holds objects weakly: a practitioner loaded by one step and dropped would be read
    again by the next ``db.get`` of the same request."""
    session.info.setdefault("held", []).append(instance)


def memoized(db: Session, key: tuple, compute):
    """``compute()`` once per unit of work: the same lookup asked twice in a request (the
    methods a practitioner has, for the page and then for the answer) reads the database once.
    Pending changes are flushed first, as the query would have done, and every flush, commit
    or rollback forgets what was kept, so nothing stale is ever returned."""
    if db.new or db.dirty or db.deleted:
        db.flush()
    memo = db.info.setdefault("memo", {})
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _forget(session: Session, *_args) -> None:
    session.info.pop("memo", None)


for _moment in ("after_flush", "after_commit", "after_rollback"):
    event.listen(Session, _moment, _forget)


def dispose(app: Flask) -> None:
    """Close every pooled connection of the app's engines."""
    for name in ("idp.engine", "idp.state_engine"):
        app.extensions[name].dispose()


def get_db() -> Session:
    """The request's session; services commit, teardown rolls back anything left open."""
    if "db" not in g:
        g.db = current_app.extensions["idp.sessionmaker"]()
    return g.db


def commit_if_open() -> None:
    """Commit the request's session if anything opened one (a request served from memory and
    autocommitted statements never does)."""
    session = g.get("db")
    if session is not None:
        session.commit()


def autocommit_one(statement, params: dict):
    """One statement in a transaction of its own (autocommit: no BEGIN, no COMMIT to send),
    outside the request's ORM session, and its row (or None): for the hottest requests, whose
    whole work is one statement (UserInfo's read, the code exchange on PostgreSQL)."""
    engine = current_app.extensions["idp.engine"]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        return connection.execute(statement, params).one_or_none()


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.rollback()
        session.close()


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command  # migrations only: the served app never loads Alembic
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    command.upgrade(cfg, revision)
