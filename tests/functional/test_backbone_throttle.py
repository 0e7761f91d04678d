"""Throttling over HTTP: growing delays, no lockout of the owner by someone elsewhere, client
addresses behind trusted proxies only, one answer for every wrong code, a restart after a few,
bursts that get no more guesses than a sequence, and the practitioner told about failures."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, select

from idp.db import dispose as dispose_app
from idp.forwarded import parse_trusted_proxies
from idp.models import AuditEvent
from tests.support.idp_server import LiveServer, build_app
from tests.support.oidc import UserAgent, totp_now
from tests.support.redis import redis_url

WRONG_PASSWORD = "wrong password!!"


def fail_password(agent, identifier, times, **kwargs):
    return [
        agent_login(agent, identifier, WRONG_PASSWORD, **kwargs).status_code for _ in range(times)
    ]


def agent_login(agent, identifier, password, *, forwarded_for=None):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    page = agent.get("/login", headers=headers)
    return agent.post(
        "/login", {"identifier": identifier, "password": password}, page.text, headers=headers
    )


def log_in(agent, demo, clock):
    page = agent.login_password(demo["username"], demo["password"])
    clock.advance(30)
    return agent.submit_totp(totp_now(demo["totp_secret"], clock), page)


def wrong_code(demo, clock):
    good = totp_now(demo["totp_secret"], clock)
    return "123456" if good != "123456" else "654321"


def test_password_failures_grow_delays_then_recover(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    assert fail_password(agent, demo["username"], 11) == [401] * 11  # ten free, then 1 s
    blocked = agent.login_password(demo["username"], demo["password"])  # even the right one
    assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "1"
    clock.advance(1)
    assert agent.login_password(demo["username"], WRONG_PASSWORD).status_code == 401
    second = agent.login_password(demo["username"], demo["password"])
    assert second.status_code == 429 and second.headers["Retry-After"] == "2"
    clock.advance(2)
    ok = agent.login_password(demo["username"], demo["password"])
    assert ok.status_code == 200 and 'autocomplete="one-time-code"' in ok.text


def test_an_attacker_elsewhere_cannot_lock_the_owner_out(live_server, demo, clock):
    """The owner's browser logged in before: its attempts count on its own limiter."""
    owner = UserAgent(live_server.url)
    assert log_in(owner, demo, clock).status_code == 200
    assert owner.http.cookies.get("idp_device")
    owner.post("/logout", {}, owner.get("/logout").text)

    attacker = UserAgent(live_server.url)
    statuses = fail_password(attacker, demo["username"], 30)
    assert statuses[:11] == [401] * 11 and 429 in statuses  # the attacker is slowed down
    assert attacker.login_password(demo["username"], demo["password"]).status_code == 429
    newcomer = UserAgent(live_server.url)  # a browser that never logged in shares the limit
    assert newcomer.login_password(demo["username"], demo["password"]).status_code == 429

    page = owner.login_password(demo["username"], demo["password"])  # the owner is not
    assert page.status_code == 200 and 'autocomplete="one-time-code"' in page.text


def test_a_forged_device_cookie_is_ignored(live_server, demo):
    agent = UserAgent(live_server.url)
    agent.http.cookies.set("idp_device", "W1sxLCJ4Il1d.forged")
    fail_password(agent, demo["username"], 11)
    assert agent.login_password(demo["username"], demo["password"]).status_code == 429


def test_one_answer_for_every_wrong_code(live_server, demo, clock):
    """A code that will be right in a few minutes says nothing more than any wrong code."""
    import pyotp

    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    future = pyotp.TOTP(demo["totp_secret"]).at(clock.now().timestamp() + 3 * 30)
    later = agent.submit_totp(future, page)
    wrong = agent.submit_totp(wrong_code(demo, clock), later)
    assert later.status_code == wrong.status_code == 401
    body = lambda page: page.text.split("<main>")[1].split("csrf_token")[0]  # noqa: E731
    assert body(later) == body(wrong)
    assert future not in later.text  # the wrong code is not kept in the field


def test_three_wrong_codes_send_the_practitioner_back_to_the_password(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    for _ in range(2):
        page = agent.submit_totp(wrong_code(demo, clock), page)
        assert page.status_code == 401 and 'autocomplete="one-time-code"' in page.text
    page = agent.submit_totp(wrong_code(demo, clock), page)
    assert page.status_code == 401 and 'autocomplete="current-password"' in page.text
    assert "Sign in again with your password" in page.text or "mot de passe" in page.text
    # the right code no longer works in that login: the password comes first again
    again = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    assert 'autocomplete="current-password"' in again.text
    assert agent.get("/account").url.endswith("/login")


def test_second_factor_failures_add_up_across_logins(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    for _ in range(2):  # 2 × 3 wrong codes: the account's five free failures are spent
        page = agent.login_password(demo["username"], demo["password"])
        for _ in range(3):
            page = agent.submit_totp(wrong_code(demo, clock), page)
    page = agent.login_password(demo["username"], demo["password"])
    blocked = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "1"


def test_the_account_page_tells_about_failed_attempts(live_server, demo, clock):
    attacker = UserAgent(live_server.url)
    fail_password(attacker, demo["username"], 3)
    owner = UserAgent(live_server.url)
    page = log_in(owner, demo, clock)
    assert "3" in page.text and ("failed" in page.text or "échou" in page.text)
    assert 'data-failed-attempts="3"' in page.text
    owner.post("/logout", {}, owner.get("/logout").text)
    clean = log_in(owner, demo, clock)  # counted since the previous login only
    assert "data-failed-attempts" not in clean.text


def test_concurrent_wrong_passwords_get_one_verification(live_server, demo):
    """Twenty wrong passwords at once at the edge of the limit: exactly one is verified."""
    agent = UserAgent(live_server.url)
    fail_password(agent, demo["username"], 10)
    statuses = race(20, lambda: agent_login(UserAgent(live_server.url), demo["username"], "x" * 12))
    assert sorted(statuses) == [401] + [429] * 19
    with live_server.app.app_context():
        from idp.db import get_db

        failed = (
            get_db()
            .execute(select(func.count()).where(AuditEvent.event == "auth:password:failed"))
            .scalar()
        )
    assert failed == 11


def test_concurrent_submissions_of_one_code_never_fail(live_server, demo, clock):
    """Twenty submissions of the same right code at once: one login, no error, no 500."""
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    clock.advance(30)
    code = totp_now(demo["totp_secret"], clock)

    def submit():
        return agent.http.post(
            f"{live_server.url}/login/totp",
            data={"code": code, "csrf_token": csrf(page.text)},
            allow_redirects=False,
        ).status_code

    statuses = race(20, submit)
    assert all(status < 500 for status in statuses), statuses
    # one login; the others: wrong (the step is spent), or their login is over (restarted, or
    # their session rotated away: the form's token no longer matches)
    assert statuses.count(303) == 1 and set(statuses) <= {303, 400, 401}, statuses
    with live_server.app.app_context():
        from idp.db import get_db

        verified = (
            get_db()
            .execute(select(func.count()).where(AuditEvent.event.like("auth:totp:%")))
            .scalar()
        )
    assert verified <= 3  # the login's three answers, however many arrived at once


def csrf(html):
    from tests.support.oidc import csrf_token

    return csrf_token(html)


def race(count, fn):
    barrier = threading.Barrier(count)
    results, lock = [], threading.Lock()

    def run():
        barrier.wait()
        result = fn()
        with lock:
            results.append(result.status_code if hasattr(result, "status_code") else result)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


# --------------------------------------------------------------------------- behind a proxy


@pytest.fixture
def proxied(database_url, tmp_path, clock):
    """The IdP behind a reverse proxy on the loopback address (IDP_TRUSTED_PROXIES)."""
    from idp.demo import seed

    app = build_app(
        database_url, tmp_path, clock, trusted_proxies=parse_trusted_proxies("127.0.0.1/32")
    )
    server = LiveServer(app)
    with app.app_context():
        demo = seed(rp_url="http://localhost:9999")
    yield server, demo
    server.stop()
    dispose_app(app)


def test_address_limits_apply_per_client_behind_a_trusted_proxy(proxied):
    server, demo = proxied
    for n in range(51):  # fifty free failures per address, on fifty-one accounts
        agent_login(UserAgent(server.url), f"nobody{n}@example.org", WRONG_PASSWORD,
                    forwarded_for="203.0.113.7")  # fmt: skip
    blocked = agent_login(UserAgent(server.url), demo["username"], demo["password"],
                          forwarded_for="203.0.113.7")  # fmt: skip
    assert blocked.status_code == 429
    other = agent_login(UserAgent(server.url), demo["username"], demo["password"],
                        forwarded_for="198.51.100.4")  # fmt: skip
    assert other.status_code == 200  # another client behind the same proxy is not blocked
    with server.app.app_context():
        from idp.db import get_db

        addresses = set(
            get_db().execute(select(AuditEvent.ip).where(AuditEvent.ip.is_not(None))).scalars()
        )
    assert addresses == {"203.0.113.7", "198.51.100.4"}  # the audit names the clients


def test_forwarded_for_is_ignored_from_an_untrusted_peer(live_server, demo):
    """Without IDP_TRUSTED_PROXIES a client cannot pick its own address."""
    for n in range(51):
        agent_login(UserAgent(live_server.url), f"nobody{n}@example.org", WRONG_PASSWORD,
                    forwarded_for=f"203.0.113.{n}")  # fmt: skip
    blocked = agent_login(UserAgent(live_server.url), demo["username"], demo["password"],
                          forwarded_for="198.51.100.4")  # fmt: skip
    assert blocked.status_code == 429
    with live_server.app.app_context():
        from idp.db import get_db

        addresses = set(
            get_db().execute(select(AuditEvent.ip).where(AuditEvent.ip.is_not(None))).scalars()
        )
    assert addresses == {"127.0.0.1"}


# --------------------------------------------------------------------------- Redis


def test_redis_backend_shares_throttles_and_sessions(redis_client, database_url, tmp_path, clock):
    from idp.demo import seed

    for stale in redis_client.scan_iter("idp:throttle:*"):  # counters of earlier runs
        redis_client.delete(stale)
    app = build_app(database_url, tmp_path, clock, redis_url=redis_url())
    server = LiveServer(app)
    try:
        with app.app_context():
            demo = seed(rp_url="http://localhost:9999")
        agent = UserAgent(server.url)
        page = agent.login_password(demo["username"], demo["password"])
        agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
        assert agent.get("/account").status_code == 200
        keys = [k.decode() for k in redis_client.scan_iter("idp:session:*")]
        assert keys, "the session lives in Redis"
        other = UserAgent(server.url)
        identifier = "redis-" + uuid.uuid4().hex
        assert fail_password(other, identifier, 11) == [401] * 11
        assert other.login_password(identifier, WRONG_PASSWORD).status_code == 429
        assert any(redis_client.scan_iter("idp:throttle:login.account:?*"))
    finally:
        server.stop()
        dispose_app(app)


def test_an_operator_limit_applies_to_the_running_server(database_url, tmp_path, clock):
    """IDP_RATE_LIMITS reaches the throttle the views use: two free failures, then a wait."""
    from idp.demo import seed
    from idp.ratelimit import parse_overrides

    app = build_app(database_url, tmp_path, clock, rate_limits=parse_overrides("login.account=2"))
    server = LiveServer(app)
    try:
        with app.app_context():
            demo = seed(rp_url="http://localhost:9999")
        agent = UserAgent(server.url)
        assert fail_password(agent, demo["username"], 3) == [401] * 3  # two free, then 1 s
        blocked = agent.login_password(demo["username"], demo["password"])
        assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "1"
    finally:
        server.stop()
        dispose_app(app)
