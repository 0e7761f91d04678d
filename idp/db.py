"""Engine and per-request database session; migrations applied through Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app, g
from sqlalchemy import create_engine, event
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
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True, pool_size=pool_size)


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
    app.extensions["idp.sessionmaker"] = sessionmaker(engine, expire_on_commit=False)
    app.teardown_appcontext(_close_session)


def dispose(app: Flask) -> None:
    """Close every pooled connection of the app's engines."""
    for name in ("idp.engine", "idp.state_engine"):
        app.extensions[name].dispose()


def get_db() -> Session:
    """The request's session; services commit, teardown rolls back anything left open."""
    if "db" not in g:
        g.db = current_app.extensions["idp.sessionmaker"]()
    return g.db


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.rollback()
        session.close()


def upgrade(url: str, revision: str = "head") -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    command.upgrade(cfg, revision)
