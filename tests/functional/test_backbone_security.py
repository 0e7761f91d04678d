"""Security baseline: sessions, cookies, headers, route policies, audit, secrets at rest."""

from __future__ import annotations

import pytest
import requests
from flask import Flask
from sqlalchemy import select, text

from idp.auth.policy import route_inventory
from idp.db import dispose as dispose_app
from idp.db import get_db
from idp.models import AuditEvent, OAuthClient, Practitioner, SigningKey, TotpDevice
from tests.support.idp_server import build_app
from tests.support.oidc import RelyingParty, UserAgent, csrf_token, totp_now

REDIRECT = "http://localhost:9999/callback"


def session_cookie(agent):
    return agent.http.cookies.get("idp_session")


def test_cookie_flags_and_rotation_at_each_login_step(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    page = agent.get("/login")
    raw = page.headers["Set-Cookie"]
    assert "HttpOnly" in raw and "SameSite=Lax" in raw and "Path=/" in raw
    before = session_cookie(agent)
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    after_password = session_cookie(agent)
    agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    after_totp = session_cookie(agent)
    assert len({before, after_password, after_totp}) == 3
    # The old ids are dead: replaying the pre-login cookie gives no account access.
    stale = requests.get(
        f"{live_server.url}/account", cookies={"idp_session": after_password}, allow_redirects=False
    )
    assert stale.status_code == 302


def test_https_issuer_uses_host_prefixed_secure_cookie(database_url, tmp_path, clock):
    app = build_app(database_url, tmp_path, clock, issuer="https://idp.example")
    browser = app.test_client()
    response = browser.get("/login", base_url="https://idp.example")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-idp_session=") and "Secure" in cookie
    assert "max-age=63072000" in response.headers["Strict-Transport-Security"]
    # Under https the CSRF check wants a same-origin Referer, which our Referrer-Policy lets
    # browsers send: a form post from our own page is accepted (401: wrong password, not 400).
    posted = browser.post(
        "/login",
        base_url="https://idp.example",
        data={"csrf_token": csrf_token(response.text), "identifier": "x", "password": "y"},
        headers={"Referer": "https://idp.example/login"},
    )
    assert posted.status_code == 401
    dispose_app(app)


def logged_in_agent(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], demo["password"])
    agent.submit_totp(totp_now(demo["totp_secret"], clock))
    assert agent.get("/account").status_code == 200
    return agent


def test_idle_timeout(live_server, demo, clock):
    agent = logged_in_agent(live_server, demo, clock)
    clock.advance(29 * 60)
    assert agent.get("/account").status_code == 200  # activity slides the idle window
    clock.advance(31 * 60)
    assert agent.http.get(f"{live_server.url}/account", allow_redirects=False).status_code == 302


def test_absolute_timeout(live_server, demo, clock):
    agent = logged_in_agent(live_server, demo, clock)
    for _ in range(12 * 2 + 1):  # active every 29 minutes for just over 12 hours
        clock.advance(29 * 60)
        last = agent.http.get(f"{live_server.url}/account", allow_redirects=False)
    assert last.status_code == 302


def test_logout_destroys_the_server_side_session(live_server, demo, clock):
    agent = logged_in_agent(live_server, demo, clock)
    sid = session_cookie(agent)
    page = agent.get("/logout")
    agent.post("/logout", {}, page.text)
    replay = requests.get(
        f"{live_server.url}/account", cookies={"idp_session": sid}, allow_redirects=False
    )
    assert replay.status_code == 302


def test_security_headers(live_server, demo):
    login = requests.get(f"{live_server.url}/login")
    csp = login.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert login.headers["Cache-Control"] == "no-store"
    assert login.headers["Referrer-Policy"] == "same-origin"
    assert "<script>" not in login.text and " onclick=" not in login.text
    token = requests.post(
        f"{live_server.url}/token",
        data={"grant_type": "authorization_code"},
        auth=(demo["client_id"], demo["client_secret"]),
    )
    assert token.headers["Cache-Control"] == "no-store"


def test_every_route_declares_a_policy(app):
    undeclared = [row for row in route_inventory(app) if row[2] == "UNDECLARED"]
    assert undeclared == []
    assert len(route_inventory(app)) >= 15


def test_an_undeclared_route_is_denied_and_reported(database_url, tmp_path, clock):
    app: Flask = build_app(database_url, tmp_path, clock)

    @app.get("/forgotten-api")
    def forgotten():
        return {"patients": ["..."]}

    assert ("GET", "/forgotten-api", "UNDECLARED") in route_inventory(app)
    assert app.test_client().get("/forgotten-api").status_code == 404
    dispose_app(app)


def test_audit_trail_is_append_only_and_records_the_journey(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], "wrong password!!")
    rp = RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)
    page = agent.get(rp.authorization_url())
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    callback = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    rp.exchange(callback.headers["Location"])
    with live_server.app.app_context():
        db = get_db()
        events = [e.event for e in db.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars()]
        for expected in (
            "auth:password:failed",
            "auth:password:succeeded",
            "auth:totp:succeeded",
            "oauth:token:issued",
        ):
            assert expected in events
        entry = db.execute(
            select(AuditEvent).where(AuditEvent.event == "auth:password:failed")
        ).scalar_one()
        assert entry.ip == "127.0.0.1"
        with pytest.raises(Exception, match="append-only"):
            db.execute(text("UPDATE audit_events SET event = 'x'"))
            db.flush()
        db.rollback()
        with pytest.raises(Exception, match="append-only"):
            db.execute(text("DELETE FROM audit_events"))
            db.flush()
        db.rollback()


def test_secrets_are_not_stored_in_clear(live_server, demo):
    with live_server.app.app_context():
        db = get_db()
        device = db.execute(select(TotpDevice)).scalars().first()
        assert demo["totp_secret"] not in device.secret_encrypted
        client = db.execute(select(OAuthClient)).scalars().first()
        assert demo["client_secret"] not in (client.client_secret_hash or "")
        for key in db.execute(select(SigningKey)).scalars():
            assert '"d"' not in key.private_jwk_encrypted and key.private_jwk_encrypted[:3] == "v1."


@pytest.mark.parametrize(
    "path",
    [
        "/authorize?client_id=%00&response_type=code",
        "/authorize?response_type=token&client_id=demo-rp",
        "/enrol/garbage",
        "/nowhere",
        "/userinfo",
    ],
)
def test_bad_input_gets_a_clear_error_not_a_trace(live_server, demo, path):
    response = requests.get(live_server.url + path, allow_redirects=False)
    assert 400 <= response.status_code < 500 or response.status_code == 302
    assert "Traceback" not in response.text


def test_control_characters_in_login_fields_are_a_plain_failure(live_server, demo):
    agent = UserAgent(live_server.url)
    for identifier in ("\x00", demo["username"] + "\x00", "\x07" * 300):
        response = agent.login_password(identifier, "whatever password")
        assert response.status_code in (400, 401), identifier
        assert "Traceback" not in response.text


def test_password_step_expires_after_ten_minutes(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], demo["password"])
    clock.advance(11 * 60)
    late = agent.http.get(f"{live_server.url}/login/totp", allow_redirects=False)
    assert late.status_code == 302 and late.headers["Location"].endswith("/login")


def test_disabling_an_account_ends_its_open_sessions(live_server, demo, clock):
    agent = logged_in_agent(live_server, demo, clock)
    with live_server.app.app_context():
        db = get_db()
        practitioner = db.execute(
            select(Practitioner).where(Practitioner.rpps == demo["username"])
        ).scalar_one()
        practitioner.status = "disabled"
        db.commit()
    after = agent.http.get(f"{live_server.url}/account", allow_redirects=False)
    assert after.status_code == 302 and after.headers["Location"].endswith("/login")


def test_logout_is_audited(live_server, demo, clock):
    agent = logged_in_agent(live_server, demo, clock)
    page = agent.get("/logout")
    agent.post("/logout", {}, page.text)
    with live_server.app.app_context():
        events = [e.event for e in get_db().execute(select(AuditEvent)).scalars()]
    assert "auth:session:logout" in events
