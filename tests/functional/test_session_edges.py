"""Session limits on both sides of their edge, with literal values (STYLE 13).

Each side is probed by its own browser, signed in at the same instant, so the test does not
depend on whether a probe refreshes any timestamp.
"""

from __future__ import annotations

import json

from tests.support.oidc import UserAgent, csrf_token, json_post, totp_now
from tests.support.webauthn_crafting import SoftAuthenticator, b64url_decode


def raw_get(agent: UserAgent, path: str):
    return agent.http.get(agent.base + path, allow_redirects=False)


def signed_in(live_server, demo, clock) -> UserAgent:
    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], demo["password"])
    done = agent.submit_totp(totp_now(demo["totp_secret"], clock))
    assert done.status_code == 200, done.text
    return agent


def password_only(live_server, demo) -> UserAgent:
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    assert page.url.endswith("/login/totp"), page.url
    return agent


# --------------------------------------------------------------------------- recent-strong (5 min)


def test_recent_strong_json_call_allowed_at_300_seconds_refused_at_301(live_server, demo, clock):
    """``POST /account/webauthn/add/options`` from a login 300 s ago works; 301 s: 401 JSON."""
    # Two browsers, one TOTP code each: the second login needs the next time step.
    on_edge = signed_in(live_server, demo, clock)
    on_edge_page = on_edge.get("/account/webauthn/add")
    assert on_edge_page.status_code == 200
    clock.advance(30)
    past_edge = signed_in(live_server, demo, clock)
    past_edge_page = past_edge.get("/account/webauthn/add")
    assert past_edge_page.status_code == 200

    clock.advance(300 - 30)  # the first login is now exactly 300 s old
    allowed = json_post(on_edge, "/account/webauthn/add/options", on_edge_page.text, {"name": "K"})
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["challenge"]

    clock.advance(30 + 1)  # the second login is now 301 s old
    refused = json_post(
        past_edge, "/account/webauthn/add/options", past_edge_page.text, {"name": "K"}
    )
    assert refused.status_code == 401, refused.text
    assert refused.headers["Content-Type"].startswith("application/json")
    assert "Location" not in refused.headers
    assert refused.json()["error"]


def test_recent_strong_page_allowed_at_300_seconds_sends_to_reauthenticate_at_301(
    live_server, demo, clock
):
    on_edge = signed_in(live_server, demo, clock)
    clock.advance(30)
    past_edge = signed_in(live_server, demo, clock)
    clock.advance(300 - 30)
    assert raw_get(on_edge, "/account/webauthn/add").status_code == 200
    clock.advance(30 + 1)
    late = raw_get(past_edge, "/account/webauthn/add")
    assert late.status_code == 302 and late.headers["Location"].endswith("/reauthenticate")
    # Still signed in: only the factor changes need the fresh login.
    assert raw_get(past_edge, "/account").status_code == 200


# --------------------------------------------------------------------------- first factor (10 min)


def test_second_step_page_open_600_seconds_after_the_password_not_601(live_server, demo, clock):
    on_edge = password_only(live_server, demo)
    past_edge = password_only(live_server, demo)
    clock.advance(600)
    page = raw_get(on_edge, "/login/totp")
    assert page.status_code == 200 and 'autocomplete="one-time-code"' in page.text
    clock.advance(1)
    late = raw_get(past_edge, "/login/totp")
    assert late.status_code == 302 and late.headers["Location"].endswith("/login")


def test_second_step_json_call_600_seconds_after_the_password_not_601(live_server, demo, clock):
    """The key options call answers on its own at 600 s (this account has no key: 400) and
    gets the session-expired 401 JSON at 601 s."""
    on_edge = password_only(live_server, demo)
    past_edge = password_only(live_server, demo)
    on_edge_page = on_edge.get("/login/totp")
    past_edge_page = past_edge.get("/login/totp")
    clock.advance(600)
    answered = json_post(on_edge, "/login/webauthn/options", on_edge_page.text)
    assert answered.status_code == 400, answered.text
    clock.advance(1)
    expired = json_post(past_edge, "/login/webauthn/options", past_edge_page.text)
    assert expired.status_code == 401, expired.text
    assert expired.headers["Content-Type"].startswith("application/json")
    assert expired.json()["error"] != answered.json()["error"]


def test_totp_code_accepted_600_seconds_after_the_password_not_601(live_server, demo, clock):
    on_edge = password_only(live_server, demo)
    past_edge = password_only(live_server, demo)
    on_edge_page = on_edge.get("/login/totp")
    past_edge_page = past_edge.get("/login/totp")
    clock.advance(600)
    done = on_edge.post(
        "/login/totp", {"code": totp_now(demo["totp_secret"], clock)}, on_edge_page.text
    )
    assert done.status_code == 200 and raw_get(on_edge, "/account").status_code == 200
    clock.advance(1 + 30)  # past the edge, and a fresh TOTP step so the code itself is fine
    late = past_edge.http.post(
        past_edge.base + "/login/totp",
        data={
            "csrf_token": csrf_token(past_edge_page.text),
            "code": totp_now(demo["totp_secret"], clock),
        },
        allow_redirects=False,
    )
    assert late.status_code == 302 and late.headers["Location"].endswith("/login")
    assert raw_get(past_edge, "/account").status_code == 302


# --------------------------------------------------------------------------- challenge size


def test_webauthn_options_carry_a_32_byte_challenge(live_server, demo, clock):
    agent = signed_in(live_server, demo, clock)
    page = agent.get("/account/webauthn/add")
    options = json_post(agent, "/account/webauthn/add/options", page.text, {"name": "K"}).json()
    assert len(b64url_decode(options["challenge"])) == 32
    key = SoftAuthenticator(user_handle=b64url_decode(options["user"]["id"]))
    response = key.registration_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url
    )
    added = agent.post(
        "/account/webauthn/add", {"name": "K", "credential": json.dumps(response)}, page.text
    )
    assert added.status_code == 200, added.text

    browser = UserAgent(live_server.url)
    login_page = browser.get("/login")
    passkey = json_post(browser, "/login/passkey/options", login_page.text)
    assert len(b64url_decode(passkey.json()["challenge"])) == 32
    second_step = browser.login_password(demo["username"], demo["password"])
    assert second_step.url.endswith("/login/webauthn")
    options = json_post(browser, "/login/webauthn/options", second_step.text)
    assert options.status_code == 200, options.text
    assert len(b64url_decode(options.json()["challenge"])) == 32
