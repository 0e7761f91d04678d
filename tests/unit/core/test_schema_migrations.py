"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL, and
the smart-card migration goes down and up again cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from idp.db import MIGRATIONS_DIR, normalise_url, upgrade
from idp.models import Base
from tests.support.idp_server import scratch_postgres_database

CARD_TABLES = {"smartcards", "smartcard_logins", "crl_cache"}


def schema_differences(url: str) -> list:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(normalise_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def test_sqlite_schema_matches_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'schema.sqlite3'}"
    upgrade(url)

    assert schema_differences(url) == []


def test_postgresql_schema_matches_the_models():
    with scratch_postgres_database("idp_schema") as url:
        upgrade(url)
        assert schema_differences(url) == []


def test_smartcard_migration_goes_down_and_up(tmp_path):
    url = f"sqlite:///{tmp_path / 'roundtrip.sqlite3'}"
    upgrade(url)
    assert CARD_TABLES <= tables(url)

    command.downgrade(alembic_config(url), "0002")
    assert not CARD_TABLES & tables(url)
    assert "auth_challenges" in tables(url)  # the WebAuthn schema below is untouched

    command.upgrade(alembic_config(url), "head")
    assert CARD_TABLES <= tables(url)
    assert schema_differences(url) == []
