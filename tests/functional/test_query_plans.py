"""No statement of a login, a token exchange, userinfo, the account page or the prune scans a
table that grows with use: each one is EXPLAINed with its own parameters (PostgreSQL with
sequential scans discouraged, SQLite's EXPLAIN QUERY PLAN). A read is bounded only when it
searches an index: a sequential scan (and on SQLite any ``SCAN t``, even ``USING INDEX``: an
index walked end to end) fails with the statement and the table."""

from __future__ import annotations

import threading

import requests
from sqlalchemy import event

from idp import housekeeping
from tests.functional.test_oidc_flow import full_login

# Configuration tables: a handful of rows set by operators, never growing with logins.
SMALL_TABLES = {
    "signing_keys",  # a few keys (current, next, retired ones kept for verification)
    "oauth_clients",  # the registered applications, cached in memory (ClientCache)
    "alembic_version",  # one row
}
SKIPPED = ("INSERT", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA", "SET")


def _capture(engines) -> list[tuple[str, object, object]]:
    seen: list[tuple[str, object, object]] = []
    lock = threading.Lock()

    def statement(_conn, _cursor, text, params, _context, many):
        if not many and not text.lstrip().upper().startswith(SKIPPED):
            with lock:
                seen.append((text, params, engine_of[id(_conn.engine)]))

    engine_of = {id(engine): engine for engine in engines}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", statement)
    return seen


def _pg_scans(node: dict):
    """Tables read sequentially. (An index walked whole is not flagged here: on the test's
    nearly empty tables the planner walks a primary key for a merge join, which it would not do
    on a grown table.)"""
    if node.get("Node Type") == "Seq Scan":
        yield node["Relation Name"]
    for child in node.get("Plans", ()):
        yield from _pg_scans(child)


def _scans(engine, text: str, params) -> list[str]:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("EXPLAIN (FORMAT JSON) " + text, params)
            plan = cursor.fetchone()[0]
            tables = list(_pg_scans(plan[0]["Plan"]))
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + text, params)
            details = [row[-1] for row in cursor.fetchall()]
            tables = [
                d.split()[1] for d in details if d.startswith("SCAN ") and "CONSTANT ROW" not in d
            ]
        return [t.strip('"') for t in tables if t.strip('"') not in SMALL_TABLES]
    finally:
        raw.rollback()
        raw.close()


def growth_scans(app, seen) -> list[str]:
    failures = []
    for text, params, engine in seen:
        for table in _scans(engine, text, params):
            failures.append(f"scan of {table}: {' '.join(text.split())[:300]}")
    return sorted(set(failures))


def test_a_whole_login_and_the_prune_scan_no_growing_table(live_server, demo, clock):
    app = live_server.app
    seen = _capture([app.extensions["idp.engine"], app.extensions["idp.state_engine"]])
    rp, agent, location = full_login(live_server, demo, clock)
    token = rp.exchange(location)
    info = requests.get(
        f"{live_server.url}/userinfo",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    )
    assert info.status_code == 200
    assert agent.get("/account").status_code == 200
    housekeeping.prune_app(app)
    assert len(seen) > 20  # the listener saw the flow
    assert {"authorization_codes", "tokens", "web_sessions"} <= {
        word.strip('"') for text, _p, _e in seen for word in text.replace(",", " ").split()
    }
    failures = growth_scans(app, seen)
    assert not failures, "\n".join(failures)
