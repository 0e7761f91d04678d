"""Pooled PostgreSQL connections are pinged only after they sat idle: a busy server sends no
extra query per request, and a connection the database dropped while idle is replaced before
anyone uses it."""

from __future__ import annotations

from sqlalchemy import text

from idp.db import PING_AFTER_IDLE_SECONDS, make_engine
from tests.support.idp_server import scratch_postgres_database


def backend_pid(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar()


def terminate(url: str, pid: int) -> None:
    killer = make_engine(url)
    with killer.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    killer.dispose()


def idle_for(engine, seconds: float) -> None:
    """Make the pooled connection look idle for ``seconds`` (the pool uses the monotonic
    clock, which a test cannot move)."""
    record = engine.pool._pool.queue[0]
    record.info["idle_since"] -= seconds


def test_a_connection_dropped_while_idle_is_replaced_before_use():
    assert PING_AFTER_IDLE_SECONDS == 30.0
    with scratch_postgres_database("idp_ping") as url:
        engine = make_engine(url)
        try:
            first = backend_pid(engine)
            terminate(url, first)
            idle_for(engine, 30.0)
            second = backend_pid(engine)  # pinged, found dead, replaced: no error
            assert second != first
        finally:
            engine.dispose()


def test_a_connection_used_moments_ago_is_not_pinged():
    with scratch_postgres_database("idp_ping") as url:
        engine = make_engine(url)
        try:
            first = backend_pid(engine)
            terminate(url, first)
            idle_for(engine, 29.9)
            try:
                backend_pid(engine)
            except Exception as error:  # the request meets the dead connection: no ping ran
                assert "terminat" in str(error).lower() or "closed" in str(error).lower()
            else:
                raise AssertionError("a recently used connection was pinged")
            assert backend_pid(engine) != first  # the pool replaced it after the error
        finally:
            engine.dispose()
