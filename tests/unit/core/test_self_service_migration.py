"""Migration 0008: the open sessions' practitioner is filled in from their data, and the
migration goes down and up again cleanly."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import create_engine, text

from idp.db import normalise_url
from tests.unit.core.test_schema_migrations import alembic_config, schema_differences


def test_open_sessions_get_their_practitioner_and_the_migration_goes_down_and_up(tmp_path):
    url = f"sqlite:///{tmp_path / 'sessions.sqlite3'}"
    config = alembic_config(url)
    command.upgrade(config, "0005")
    engine = create_engine(normalise_url(url))
    rows = {
        "signed-in": {"auth": {"practitioner_id": 7, "sid": "s"}, "csrf_token": "t"},
        "anonymous": {"csrf_token": "t"},
        "odd": {"auth": {"practitioner_id": "7"}},
    }
    with engine.begin() as conn:
        for id_hash, data in rows.items():
            conn.execute(
                text(
                    "INSERT INTO web_sessions (id_hash, data, created_at, last_seen_at) "
                    "VALUES (:h, :d, '2026-12-02 04:00:00', '2026-12-02 04:00:00')"
                ),
                {"h": id_hash, "d": json.dumps(data)},
            )
    command.upgrade(config, "0008")
    with engine.connect() as conn:
        found = conn.execute(text("SELECT id_hash, practitioner_id FROM web_sessions"))
        owners = {row[0]: row[1] for row in found}
    assert owners == {"signed-in": 7, "anonymous": None, "odd": None}
    command.downgrade(config, "0005")
    command.upgrade(config, "head")
    engine.dispose()
    assert schema_differences(url) == []
