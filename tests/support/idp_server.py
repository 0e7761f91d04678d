"""Test databases (SQLite, or PostgreSQL when IDP_TEST_DATABASE_URL is set) and a live IdP."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from werkzeug.serving import make_server

from idp import create_app
from idp.clock import FrozenClock
from idp.config import Settings
from idp.db import normalise_url, upgrade
from idp.models import Base
from tests.support.browser import scan_origin

TEST_KEYS = {"secret_key": "s" * 16 + "test-secret-key-0123456789", "data_key": "d" * 40}


class TestDatabase:
    """One migrated database per test session; each test starts from empty tables."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server_url = os.environ.get("IDP_TEST_DATABASE_URL")
        if self.server_url:
            self.name = f"idp_test_{uuid.uuid4().hex[:10]}"
            self._admin(f'CREATE DATABASE "{self.name}"')
            self.url = self._with_db(self.name)
            upgrade(self.url)
        else:
            self.template = tmp / "template.sqlite3"
            upgrade(f"sqlite:///{self.template}")

    @property
    def is_postgres(self) -> bool:
        return bool(self.server_url)

    def _with_db(self, name: str) -> str:
        base = normalise_url(self.server_url)
        return base.rsplit("/", 1)[0] + "/" + name

    def _admin(self, statement: str) -> None:
        engine = create_engine(self._with_db("postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(statement))
        engine.dispose()

    def fresh_url(self, tmp_path: Path) -> str:
        if not self.is_postgres:
            target = tmp_path / "idp.sqlite3"
            shutil.copy(self.template, target)
            return f"sqlite:///{target}"
        engine = create_engine(self.url)
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            # The audit trail refuses TRUNCATE. Only its owner can lift that, for this reset;
            # the trigger is back before the transaction commits.
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_truncate"))
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_truncate"))
        engine.dispose()
        return self.url

    def drop(self) -> None:
        if self.is_postgres:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def postgres_server_url() -> str:
    """The PostgreSQL server for tests that exist only there; CI must provide one."""
    url = os.environ.get("IDP_TEST_POSTGRES_URL") or os.environ.get("IDP_TEST_DATABASE_URL")
    if url:
        return url
    if os.environ.get("CI") or os.environ.get("IDP_REQUIRE_POSTGRES"):
        pytest.fail("PostgreSQL tests need IDP_TEST_POSTGRES_URL or IDP_TEST_DATABASE_URL")
    pytest.skip("no PostgreSQL server configured (IDP_TEST_POSTGRES_URL)")


@contextlib.contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """A throwaway database on that server, dropped afterwards."""
    base = normalise_url(postgres_server_url()).rsplit("/", 1)[0]
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def scratch_postgres_role(prefix: str) -> Iterator[str]:
    """A throwaway login role on that server (no password: the test server trusts loopback).

    Drop the databases it was granted anything in first (nest this outside them)."""
    base = normalise_url(postgres_server_url()).rsplit("/", 1)[0]
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE ROLE "{name}" LOGIN'))
    try:
        yield name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
        admin.dispose()


def url_as_role(url: str, role: str) -> str:
    """The same database, reached as another role."""
    target = make_url(normalise_url(url)).set(username=role, password=None)
    return target.render_as_string(hide_password=False)


def require_postgres_in_ci() -> None:
    """CI runs the suite against PostgreSQL: fail loudly if it is not configured."""
    if os.environ.get("IDP_REQUIRE_POSTGRES") and not os.environ.get("IDP_TEST_DATABASE_URL"):
        pytest.fail("IDP_REQUIRE_POSTGRES is set but IDP_TEST_DATABASE_URL is not")


def make_settings(database_url: str, tmp_path: Path, **overrides) -> Settings:
    values = dict(
        issuer="http://localhost:5000",
        database_url=database_url,
        redis_url=None,
        env="test",
        instance_path=tmp_path / "instance",
        **TEST_KEYS,
    )
    values.update(overrides)
    return Settings(**values)


def real_now_clock() -> FrozenClock:
    """Frozen, but at the real time: client libraries check exp/iat against their own clock."""
    return FrozenClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


class LiveServer:
    def __init__(self, app) -> None:
        self.app = app
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://localhost:{self.port}"
        app.extensions["idp.settings"].issuer = self.url
        self._unscan = scan_origin(self.url)  # the browser fixture checks its pages (axe-core)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._unscan()
        self._server.shutdown()
        self._thread.join(timeout=5)


def build_app(database_url: str, tmp_path: Path, clock, **overrides):
    settings = make_settings(database_url, tmp_path, **overrides)
    return create_app({"SETTINGS": settings, "CLOCK": clock, "TESTING": False})
