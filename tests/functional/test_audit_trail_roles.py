"""The audit trail cannot be emptied: triggers refuse UPDATE, DELETE and TRUNCATE, and the
server's own PostgreSQL role (``idp db grants``) can only add to it and read it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from idp.db import get_db, normalise_url, upgrade
from idp.grants import APPEND_ONLY, ORDINARY, grant_statements, sequences
from idp.models import AuditEvent, Base
from tests.support.idp_server import (
    LiveServer,
    build_app,
    scratch_postgres_database,
    scratch_postgres_role,
    url_as_role,
)
from tests.support.oidc import RelyingParty, UserAgent, totp_now

REDIRECT = "http://localhost:9999/callback"
INSERT_EVENT = text(
    "INSERT INTO audit_events (at, event, details_json) "
    "VALUES (CURRENT_TIMESTAMP, 'test:audit:written', '{}')"
)
COUNT_EVENTS = text("SELECT count(*) FROM audit_events")


def idp_cli(*args: str, database_url: str, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(
        IDP_ENV="development", IDP_INSTANCE_PATH=str(tmp_path), IDP_DATABASE_URL=database_url
    )
    return subprocess.run(
        [sys.executable, "-m", "idp.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


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


def test_db_grants_says_sqlite_has_no_roles(tmp_path):
    result = idp_cli(
        "db",
        "grants",
        "--role",
        "idp_app",
        database_url=f"sqlite:///{tmp_path / 'idp.sqlite3'}",
        tmp_path=tmp_path,
    )
    assert result.returncode == 2
    assert "SQLite has no database roles" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_grant_statements_cover_every_table_and_keep_the_audit_trail_append_only():
    statements = grant_statements('idp "app"')
    granted = {}
    for statement in statements:
        if statement.startswith("GRANT ") and " ON TABLE " in statement:
            privileges, rest = statement.removeprefix("GRANT ").split(" ON TABLE ")
            table, grantee = rest.split(" TO ")
            assert grantee == '"idp ""app"""'
            granted[table] = privileges
    assert set(granted) == {table.name for table in Base.metadata.sorted_tables}
    assert granted.pop("audit_events") == "SELECT, INSERT"
    assert set(granted.values()) == {"SELECT, INSERT, UPDATE, DELETE"}
    assert APPEND_ONLY == {"audit_events": ("SELECT", "INSERT")}
    # Everything is revoked first, Alembic's table included, so a rerun converges.
    assert statements[0].startswith("REVOKE ALL ON TABLE ") and "alembic_version" in statements[0]
    assert statements[1].startswith("REVOKE ALL ON SEQUENCE ")
    assert statements[-1].startswith("GRANT USAGE ON SEQUENCE ")
    assert "audit_events_id_seq" in sequences(Base.metadata)
    assert not any("TRUNCATE" in s or "DEFAULT PRIVILEGES" in s for s in statements)


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


def privileges(engine, role: str) -> set[tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = :role"
            ),
            {"role": role},
        ).all()
        serials = {
            (name, "USAGE")
            for name in sequences(Base.metadata)
            if connection.execute(
                text("SELECT has_sequence_privilege(:role, :name, 'USAGE')"),
                {"role": role, "name": name},
            ).scalar_one()
        }
    return {tuple(row) for row in rows} | serials


# Each is refused for lack of a privilege or of ownership, before any trigger runs.
FORBIDDEN_TO_THE_SERVER = (
    "UPDATE audit_events SET event = 'x'",
    "DELETE FROM audit_events",
    "TRUNCATE audit_events",
    "ALTER TABLE audit_events DISABLE TRIGGER ALL",
    "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
    "DROP TRIGGER audit_events_append_only ON audit_events",
    "DROP TRIGGER audit_events_no_truncate ON audit_events",
    "DROP TABLE audit_events",
    "ALTER TABLE audit_events RENAME TO audit_events_old",
    """CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$
    BEGIN RETURN NULL; END; $$ LANGUAGE plpgsql""",
    "SET session_replication_role = replica",
    "TRUNCATE practitioners CASCADE",
    "SELECT * FROM alembic_version",
)


def test_postgresql_server_role_can_only_add_to_and_read_the_audit_trail(tmp_path, clock):
    with (
        scratch_postgres_role("idp_app") as role,
        scratch_postgres_database("idp_roles") as url,
    ):
        upgrade(url)
        applied = idp_cli(
            "db", "grants", "--role", role, "--apply", database_url=url, tmp_path=tmp_path
        )
        assert applied.returncode == 0, applied.stderr
        owner = create_engine(normalise_url(url))
        granted = privileges(owner, role)
        assert {p for table, p in granted if table == "audit_events"} == {"SELECT", "INSERT"}
        assert {p for table, p in granted if table == "practitioners"} == set(ORDINARY)
        assert ("audit_events_id_seq", "USAGE") in granted
        # Idempotent: the same statements again change nothing.
        again = idp_cli(
            "db", "grants", "--role", role, "--apply", database_url=url, tmp_path=tmp_path
        )
        assert again.returncode == 0, again.stderr
        assert again.stdout == applied.stdout and privileges(owner, role) == granted

        server_url = url_as_role(url, role)
        server_db = create_engine(normalise_url(server_url))
        try:
            with server_db.begin() as connection:
                assert connection.execute(text("SELECT current_user")).scalar_one() == role
                connection.execute(INSERT_EVENT)
            assert count_events(server_db) == 1
            for statement in FORBIDDEN_TO_THE_SERVER:
                with pytest.raises(DBAPIError, match="permission denied|must be owner"):
                    with server_db.begin() as connection:
                        connection.execute(text(statement))
            assert count_events(owner) == 1

            # Ordinary work goes through: a whole login, as that role only.
            app = build_app(server_url, tmp_path, clock)
            live = LiveServer(app)
            try:
                from idp.demo import seed

                with app.app_context():
                    demo = seed(rp_url="http://localhost:9999")
                agent = UserAgent(live.url)
                agent.login_password(demo["username"], "wrong password!!")
                rp = RelyingParty(live.url, demo["client_id"], demo["client_secret"], REDIRECT)
                page = agent.get(rp.authorization_url())
                page = agent.post(
                    "/login",
                    {"identifier": demo["username"], "password": demo["password"]},
                    page.text,
                )
                callback = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
                assert "access_token" in rp.exchange(callback.headers["Location"])
                with app.app_context():
                    events = set(get_db().execute(select(AuditEvent.event)).scalars())
                assert {"auth:password:failed", "oauth:token:issued"} <= events
            finally:
                live.stop()
                app.extensions["idp.engine"].dispose()
        finally:
            server_db.dispose()
            owner.dispose()


def test_db_grants_refuses_roles_it_cannot_restrict(tmp_path):
    with scratch_postgres_database("idp_grants") as url:
        missing = idp_cli(
            "db",
            "grants",
            "--role",
            "no_such_role_x",
            "--apply",
            database_url=url,
            tmp_path=tmp_path,
        )
        assert missing.returncode == 2 and "idp db upgrade" in missing.stderr
        upgrade(url)
        missing = idp_cli(
            "db",
            "grants",
            "--role",
            "no_such_role_x",
            "--apply",
            database_url=url,
            tmp_path=tmp_path,
        )
        assert missing.returncode == 2 and "does not exist" in missing.stderr
        engine = create_engine(normalise_url(url))
        with engine.connect() as connection:
            me = connection.execute(text("SELECT current_user")).scalar_one()
        engine.dispose()
        itself = idp_cli(
            "db", "grants", "--role", me, "--apply", database_url=url, tmp_path=tmp_path
        )
        assert itself.returncode == 2 and "Traceback" not in itself.stderr
        assert "superuser" in itself.stderr or "owner" in itself.stderr
