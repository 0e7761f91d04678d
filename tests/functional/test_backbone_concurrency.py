"""Single-use things under real concurrency: exactly one of two racing requests wins."""

from __future__ import annotations

import threading

from sqlalchemy import select

from idp.auth.contract import Attempt
from idp.auth.devices import Client
from idp.auth.orchestrator import orchestrator
from idp.db import get_db
from idp.factors.totp.method import InvalidCodeError
from idp.models import Practitioner
from idp.services import clock as app_clock
from idp.services import methods
from tests.support.oidc import RelyingParty, UserAgent, query_of, redeem_code, totp_now

REDIRECT = "http://localhost:9999/callback"


def race(n, target):
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(index):
        barrier.wait()
        results[index] = target()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_same_totp_code_twice_at_once_succeeds_exactly_once(live_server, demo, clock):
    app = live_server.app

    def attempt(code, login):
        with app.app_context():
            db = get_db()
            practitioner = db.execute(
                select(Practitioner).where(Practitioner.rpps == demo["username"])
            ).scalar_one()
            try:
                attempt = Attempt(
                    client=Client(ip="10.1.1.1"),
                    now=app_clock().now(),
                    practitioner_id=practitioner.id,
                    login=login,
                )
                orchestrator().authenticate(db, methods()["totp"], attempt, {"code": code})
                return "ok"
            except InvalidCodeError:  # the same answer as any wrong code
                return "replay"

    for _round in range(5):
        clock.advance(30)
        code = totp_now(demo["totp_secret"], clock)
        results = race(2, lambda code=code, login=f"login-{_round}": attempt(code, login))
        assert sorted(results) == ["ok", "replay"], results


def test_same_code_redeemed_twice_at_once_gives_one_token(live_server, demo, clock):
    for _round in range(3):
        rp = RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)
        agent = UserAgent(live_server.url)
        page = agent.get(rp.authorization_url())
        page = agent.post(
            "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
        )
        clock.advance(30)
        callback = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
        code = query_of(callback.headers["Location"])["code"][0]

        def redeem(code=code, rp=rp):
            return redeem_code(
                rp.metadata["token_endpoint"],
                code,
                redirect_uri=REDIRECT,
                verifier=rp.code_verifier,
                auth=(demo["client_id"], demo["client_secret"]),
            ).status_code

        assert sorted(race(2, redeem)) == [200, 400]
