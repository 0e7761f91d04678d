"""Throttling with growing delays, shared through the database or Redis; no enumeration."""

from __future__ import annotations

import os
import uuid

import pytest

from idp.ratelimit import FREE_FAILURES, RedisThrottle, ThrottleUnavailableError
from tests.support.idp_server import LiveServer, build_app
from tests.support.oidc import UserAgent, totp_now


def fail_password(agent, identifier, times):
    statuses = []
    for _ in range(times):
        statuses.append(agent.login_password(identifier, "wrong password!!").status_code)
    return statuses


def test_password_failures_grow_delays_then_recover(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    assert fail_password(agent, demo["username"], FREE_FAILURES + 1) == [401] * (FREE_FAILURES + 1)
    blocked = agent.login_password(demo["username"], demo["password"])  # even the right one
    assert blocked.status_code == 429
    first_wait = int(blocked.headers["Retry-After"])
    assert first_wait >= 1
    clock.advance(first_wait)
    assert agent.login_password(demo["username"], "wrong password!!").status_code == 401
    second = agent.login_password(demo["username"], demo["password"])
    assert second.status_code == 429 and int(second.headers["Retry-After"]) > first_wait
    clock.advance(int(second.headers["Retry-After"]))
    ok = agent.login_password(demo["username"], demo["password"])
    assert ok.status_code == 200 and 'autocomplete="one-time-code"' in ok.text


def test_unknown_and_known_accounts_answer_alike(live_server, demo):
    agent = UserAgent(live_server.url)
    known = agent.login_password(demo["username"], "wrong password!!")
    unknown = agent.login_password("99999999999", "wrong password!!")
    assert known.status_code == unknown.status_code == 401
    strip = lambda html: html.replace("99999999999", "").replace(demo["username"], "")  # noqa: E731
    assert strip(known.text.split("<main>")[1].split("csrf_token")[0]) == strip(
        unknown.text.split("<main>")[1].split("csrf_token")[0]
    )


def test_totp_failures_are_throttled_per_account(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    good = totp_now(demo["totp_secret"], clock)
    wrong = "123456" if good != "123456" else "654321"
    for _ in range(FREE_FAILURES + 1):
        page = agent.submit_totp(wrong, page)
        assert page.status_code == 401
    blocked = agent.submit_totp(good, page)
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers


def redis_url() -> str:
    return os.environ.get("IDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis.from_url(redis_url())
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI: {exc}")
        pytest.skip(f"Redis unavailable: {exc}")
    return client


def test_redis_backend_shares_throttles_and_sessions(redis_client, database_url, tmp_path, clock):
    from idp.demo import seed

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
        fail_password(other, "redis-" + uuid.uuid4().hex, FREE_FAILURES + 1)
        assert any(redis_client.scan_iter("idp:throttle:login.user:?*"))
    finally:
        server.stop()
        app.extensions["idp.engine"].dispose()


def test_redis_down_fails_closed(clock):
    import redis

    throttle = RedisThrottle(redis.Redis(host="127.0.0.1", port=1, socket_timeout=0.2), clock)
    with pytest.raises(ThrottleUnavailableError):
        throttle.retry_after("login.user:1")
