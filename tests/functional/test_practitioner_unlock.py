"""``idp practitioner unlock``: a practitioner locked out by failed attempts may try again at
once, on either throttle backend; other accounts' counters and the address limiters stay."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy import select

from idp.accounts import service
from idp.db import dispose as dispose_app
from idp.db import get_db
from idp.models import AuditEvent
from idp.ratelimit import key
from idp.services import throttle
from tests.functional.test_cli_and_demo import run_idp
from tests.support import factories
from tests.support.idp_server import LiveServer, build_app
from tests.support.oidc import UserAgent
from tests.support.redis import redis_client_or_fail, redis_url

WRONG = "wrong password!!"


@pytest.fixture(params=["database", "redis"])
def server(request, database_url, tmp_path, clock):
    overrides = {}
    if request.param == "redis":
        redis_client_or_fail().close()
        overrides["redis_url"] = redis_url()
    app = build_app(database_url, tmp_path, clock, **overrides)
    live = LiveServer(app)
    yield live
    live.stop()
    dispose_app(app)


def forget_counters(app, *practitioner_ids):
    """Counters a shared Redis kept from earlier runs, for the same ids and this address."""
    client = app.extensions.get("idp.redis")
    if client is None:
        return
    patterns = ["login.ip:127.0.0.1", "2fa.ip:127.0.0.1", "password_reset.ip:*"]
    for practitioner_id in practitioner_ids:
        patterns += [f"*.account:{practitioner_id}", f"*.device:{practitioner_id}:*"]
    for pattern in patterns:
        for name in client.scan_iter(f"idp:throttle:{pattern}"):
            client.delete(name)


def test_unlock_lets_a_locked_out_practitioner_try_again(server, clock):
    app = server.app
    with app.app_context():
        db = get_db()
        locked = factories.practitioner(db, clock)
        bystander = factories.practitioner(db, clock)
        db.commit()
        locked_id, rpps, bystander_id, bystander_rpps = (
            locked.id,
            locked.rpps,
            bystander.id,
            bystander.rpps,
        )
    forget_counters(app, locked_id, bystander_id)
    agent = UserAgent(server.url)
    for identifier in (rpps, bystander_rpps):
        statuses = [agent.login_password(identifier, WRONG).status_code for _ in range(11)]
        assert statuses == [401] * 11
        assert agent.login_password(identifier, factories.PASSWORD).status_code == 429
    with app.app_context():
        # A browser's own counter for the account (its device cookie) goes too.
        throttle().reserve([key("2fa.device", locked_id, "a-device-id")])
        db = get_db()
        cleared = service.unlock_practitioner(
            db, db.get(type(locked), locked_id), throttle=throttle(), operator="carol"
        )
        db.commit()
        event = db.execute(
            select(AuditEvent).where(AuditEvent.event == "account:practitioner:unlocked")
        ).scalar_one()
        assert event.practitioner_id == locked_id and event.details["operator"] == "carol"
        again = service.unlock_practitioner(
            db, db.get(type(locked), locked_id), throttle=throttle(), operator="carol"
        )
    assert cleared == [f"2fa.device:{locked_id}:a-device-id", f"login.account:{locked_id}"]
    assert again == []
    # The password step lets them through (no factor here: the next page says so).
    assert agent.login_password(rpps, factories.PASSWORD).url.endswith("/login/second-factor")
    assert agent.login_password(bystander_rpps, factories.PASSWORD).status_code == 429


def test_the_command_prints_and_audits_what_it_cleared(tmp_path):
    run_idp("db", "upgrade", tmp_path=tmp_path)
    demo = json.loads(run_idp("seed-demo", "--json", tmp_path=tmp_path).stdout)
    with sqlite3.connect(tmp_path / "idp.sqlite3") as db:
        practitioner_id = db.execute(
            "SELECT id FROM practitioners WHERE rpps = ?", (demo["username"],)
        ).fetchone()[0]
        for counter in (f"login.account:{practitioner_id}", "login.ip:127.0.0.1"):
            db.execute(
                "INSERT INTO throttle_counters (key, failures, last_failure_at, blocked_until)"
                " VALUES (?, 11, '2026-12-02 00:00:00', '2026-12-02 00:00:00')",
                (counter,),
            )
    unlocked = run_idp(
        "practitioner",
        "unlock",
        demo["username"],
        "--operator",
        "dana",
        "--json",
        tmp_path=tmp_path,
    )
    assert json.loads(unlocked.stdout) == {
        "rpps": demo["username"],
        "cleared": [f"login.account:{practitioner_id}"],
    }
    nothing = run_idp("practitioner", "unlock", demo["username"], tmp_path=tmp_path)
    assert "no throttle counter to clear" in nothing.stdout
    unknown = run_idp("practitioner", "unlock", "19999999999", tmp_path=tmp_path, check=False)
    assert unknown.returncode == 2 and "no practitioner" in unknown.stderr
    with sqlite3.connect(tmp_path / "idp.sqlite3") as db:
        left = [row[0] for row in db.execute("SELECT key FROM throttle_counters")]
        rows = db.execute(
            "SELECT details_json FROM audit_events WHERE event = 'account:practitioner:unlocked'"
            " ORDER BY id"
        ).fetchall()
    assert left == ["login.ip:127.0.0.1"]  # the address limiter is not the account's
    assert [json.loads(details)["operator"] for (details,) in rows][0] == "dana"
    assert len(rows) == 2
