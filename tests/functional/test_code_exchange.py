"""The code exchange is one unit of work: the code's claim and the token it buys land together,
so a replay can never slip in between them and revoke nothing. (That a failed exchange spends
the code is in test_code_redemption.)"""

from __future__ import annotations

import threading
import time

import requests
from sqlalchemy import select

from idp import audit
from idp.db import get_db
from idp.models import AuditEvent, Token
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


def test_a_replay_between_claim_and_token_still_revokes_the_token(
    live_server, demo, clock, monkeypatch
):
    rp, _agent, location = full_login(live_server, demo, clock)
    code = query_of(location)["code"][0]
    claimed = threading.Event()
    values = audit.values

    def slow_token_audit(event, **kwargs):
        """The first exchange has claimed the code and not yet committed its token: pause."""
        row = values(event, **kwargs)
        if event == "oauth:token:issued" and not claimed.is_set():
            claimed.set()
            time.sleep(1.0)  # the replay arrives now
        return row

    monkeypatch.setattr(audit, "values", slow_token_audit)
    first: dict = {}
    exchange = threading.Thread(target=lambda: first.update(r=redeem(live_server, demo, rp, code)))
    exchange.start()
    assert claimed.wait(30)
    replay = redeem(live_server, demo, rp, code)
    exchange.join(60)
    assert first["r"].status_code == 200 and replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
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
