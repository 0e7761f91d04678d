"""The audit trail cannot be emptied: triggers refuse UPDATE, DELETE and TRUNCATE."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from idp.db import normalise_url, upgrade
from tests.support.idp_server import scratch_postgres_database

INSERT_EVENT = text(
    "INSERT INTO audit_events (at, event, details_json) "
    "VALUES (CURRENT_TIMESTAMP, 'test:audit:written', '{}')"
)
COUNT_EVENTS = text("SELECT count(*) FROM audit_events")


def count_events(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(COUNT_EVENTS).scalar_one()


# --------------------------------------------------------------------------- SQLite


def test_sqlite_refuses_delete_without_where(tmp_path):
    """SQLite has no TRUNCATE; its fast path for an unqualified DELETE must not skip the
    trigger either."""
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(INSERT_EVENT)
            connection.execute(INSERT_EVENT)
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as connection:
                connection.execute(text("DELETE FROM audit_events"))
        assert count_events(engine) == 2
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- PostgreSQL


def test_postgresql_owner_cannot_truncate_the_audit_trail():
    with scratch_postgres_database("idp_audit") as url:
        upgrade(url)
        engine = create_engine(normalise_url(url))
        try:
            with engine.begin() as connection:
                connection.execute(INSERT_EVENT)
            for statement in (
                "TRUNCATE audit_events",
                "TRUNCATE practitioners, audit_events RESTART IDENTITY CASCADE",
                "DELETE FROM audit_events",
            ):
                with pytest.raises(DBAPIError, match="append-only"):
                    with engine.begin() as connection:
                        connection.execute(text(statement))
            assert count_events(engine) == 1
        finally:
            engine.dispose()
