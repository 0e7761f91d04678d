"""The code exchange is one unit of work: the code's claim and the token it buys land together,
so a replay can never slip in between them and revoke nothing. (That a failed exchange spends
the code is in test_code_redemption.)

On PostgreSQL the exchange is one statement: the test holds it between the claim and the
token's INSERT by locking the practitioner's row, which the token's foreign key check must
share. (A lock on the ``tokens`` table would stop the statement before its claim: PostgreSQL
takes a statement's table locks before it runs.) On SQLite it is four statements in one
transaction: the test pauses it after the claim."""

from __future__ import annotations

import contextlib
import threading
import time

import requests
from sqlalchemy import select, text

from idp.crypto import hash_token
from idp.db import get_db
from idp.models import AuditEvent, AuthorizationCode, Token
from idp.oauth import exchange
from tests.functional.test_oidc_flow import REDIRECT, full_login
from tests.support.oidc import query_of, redeem_code


def redeem(live_server, demo, rp, code):
    return redeem_code(
        rp.metadata["token_endpoint"],
        code,
        redirect_uri=REDIRECT,
        verifier=rp.code_verifier,
        auth=(demo["client_id"], demo["client_secret"]),
    )


def blocked_by(engine, pid: int) -> list[int]:
    """The backends waiting on a lock that backend ``pid`` holds."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                {"pid": pid},
            ).scalars()
        )


def until(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return found


@contextlib.contextmanager
def held_after_the_claim(live_server, monkeypatch, practitioner_id: int):
    """Yields a function that waits until the first exchange has claimed the code and not yet
    written its token, then returns a function that waits until the replay waits on it; the
    exchange resumes when the block ends."""
    engine = live_server.app.extensions["idp.engine"]
    if engine.dialect.name == "postgresql":
        locker = engine.connect()
        locker.execute(
            text("SELECT 1 FROM practitioners WHERE id = :id FOR UPDATE"), {"id": practitioner_id}
        )
        mine = locker.execute(text("SELECT pg_backend_pid()")).scalar()

        def claimed():
            (exchange_pid,) = until(lambda: blocked_by(engine, mine))
            return lambda: until(lambda: blocked_by(engine, exchange_pid))

        try:
            yield claimed
        finally:
            locker.commit()
            locker.close()
        return
    claimed, release = threading.Event(), threading.Event()
    issue = exchange.issue

    def paused_issue(*args):
        claimed.set()
        release.wait(30)
        return issue(*args)

    def after_the_claim():
        assert claimed.wait(30)
        return lambda: time.sleep(0.5)  # the replay waits on SQLite's write lock

    monkeypatch.setattr(exchange, "issue", paused_issue)
    try:
        yield after_the_claim
    finally:
        release.set()


def test_a_replay_between_claim_and_token_still_revokes_the_token(
    live_server, demo, clock, monkeypatch
):
    rp, _agent, location = full_login(live_server, demo, clock)
    code = query_of(location)["code"][0]
    with live_server.app.app_context():
        holder = (
            get_db()
            .execute(
                select(AuthorizationCode.practitioner_id).where(
                    AuthorizationCode.code_hash == hash_token(code)
                )
            )
            .scalar_one()
        )
    first: dict = {}
    replayed: dict = {}
    with held_after_the_claim(live_server, monkeypatch, holder) as claimed:
        exchange_ = threading.Thread(
            target=lambda: first.update(r=redeem(live_server, demo, rp, code))
        )
        exchange_.start()
        replay_waits = claimed()
        replay = threading.Thread(
            target=lambda: replayed.update(r=redeem(live_server, demo, rp, code))
        )
        replay.start()
        replay_waits()
        assert replay.is_alive() and exchange_.is_alive()
    exchange_.join(60)
    replay.join(60)
    assert first["r"].status_code == 200 and replayed["r"].status_code == 400
    assert replayed["r"].json()["error"] == "invalid_grant"
    token = first["r"].json()["access_token"]
    info = requests.get(f"{live_server.url}/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert info.status_code == 401  # the replay revoked what the first use obtained
    with live_server.app.app_context():
        db = get_db()
        assert db.execute(select(Token.revoked_at)).scalars().all() != [None]
        reused = db.execute(
            select(AuditEvent).where(AuditEvent.event == "oauth:code:reused")
        ).scalar_one()
        assert '"revoked_tokens": 1' in reused.details_json
