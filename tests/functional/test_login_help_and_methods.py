"""The help page for a lost factor, and "Try another method": the page that lists every method
this login may continue with after the password."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from idp.auth.policy import FIRST_FACTOR_SECONDS
from idp.clock import FrozenClock
from tests.support.idp_server import real_now_clock
from tests.support.oidc import RelyingParty, UserAgent, json_post, totp_now
from tests.support.webauthn_crafting import SoftAuthenticator, b64url_decode

REDIRECT = "http://localhost:9999/callback"


@pytest.fixture
def clock():
    """A minute behind real time: the TOTP clock steps forward and the ID tokens minted
    afterwards must not look issued in the future to the relying party."""
    return FrozenClock(real_now_clock().now() - dt.timedelta(seconds=60))


def new_rp(live_server, demo) -> RelyingParty:
    return RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)


def method_links(html: str) -> list[tuple[str, str]]:
    """(id, href) of each choice on the methods page, in order."""
    return re.findall(r'<a class="method" href="([^"]+)" id="method-([a-z]+)">', html)


def with_security_key(live_server, demo, clock) -> None:
    """The demo practitioner adds a security key from a password + TOTP session."""
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    page = agent.get("/account/webauthn/add")
    options = json_post(agent, "/account/webauthn/add/options", page.text, {"name": "Key"}).json()
    authn = SoftAuthenticator(user_handle=b64url_decode(options["user"]["id"]))
    response = authn.registration_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url
    )
    done = agent.post(
        "/account/webauthn/add", {"name": "Key", "credential": json.dumps(response)}, page.text
    )
    assert done.status_code == 200 and "Key" in done.text, done.text
    clock.advance(30)  # a later TOTP step: the code used above is spent


# --------------------------------------------------------------------------- help


def test_login_page_links_to_the_help_page(live_server):
    page = UserAgent(live_server.url).get("/login")
    assert re.search(r'<a href="/login/help" id="login-help">', page.text)


def test_help_page_is_public_and_says_what_to_do(live_server):
    page = UserAgent(live_server.url).get("/login/help?lang=en")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    for section in ("help-lost-factor", "help-recovery-codes", "help-password"):
        assert f'id="{section}"' in page.text
    assert "Try another method" in page.text and "administrator" in page.text
    assert "choose “Use a recovery code”" in page.text  # no login in progress: no link yet
    assert 'href="/login/recovery-request" id="request-recovery"' in page.text
    assert 'href="/login/forgot" id="help-forgot-password"' in page.text
    assert 'href="/login" id="back-to-sign-in"' in page.text


def test_help_page_keeps_the_application_request(live_server, demo, clock):
    rp = new_rp(live_server, demo)
    agent = UserAgent(live_server.url)
    agent.get(rp.authorization_url())
    help_page = agent.get("/login/help")
    assert "Appli de démonstration" in help_page.text  # "back to sign-in to continue to ..."
    back = agent.get(re.search(r'href="([^"]+)" id="back-to-sign-in"', help_page.text).group(1))
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, back.text
    )
    callback = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    assert callback.status_code in (302, 303)
    assert callback.headers["Location"].startswith(REDIRECT)  # back at the application


# --------------------------------------------------------------------------- methods


def test_one_method_shows_no_link_and_the_page_lists_just_it(live_server, demo):
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    assert page.url.endswith("/login/totp")
    assert 'id="try-another-method"' not in page.text
    methods = agent.get("/login/methods")
    assert methods.status_code == 200
    assert method_links(methods.text) == [("/login/totp", "totp")]
    assert 'id="not-you"' in methods.text  # who is signing in, as on every second step


def test_every_offered_method_is_listed_the_default_first(live_server, demo, clock):
    with_security_key(live_server, demo, clock)
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    assert page.url.endswith("/login/webauthn")  # the default
    link = re.search(r'<a href="([^"]+)" id="try-another-method">', page.text)
    assert link and link.group(1) == "/login/methods"
    assert 'id="fallback-' not in page.text  # one link, not the list
    methods = agent.get(link.group(1) + "?lang=en")
    assert method_links(methods.text) == [
        ("/login/webauthn", "webauthn"),
        ("/login/totp", "totp"),
    ]
    assert "Security key or passkey" in methods.text
    assert "Code from my authenticator app" in methods.text
    # The TOTP page links back to the list too, and the choice works.
    totp = agent.get("/login/totp")
    assert 'id="try-another-method"' in totp.text
    callback = agent.submit_totp(totp_now(demo["totp_secret"], clock), totp)
    assert callback.status_code == 200 and callback.url.endswith("/account")


def test_the_list_honours_the_level_the_application_asks_for(live_server, demo, clock):
    with_security_key(live_server, demo, clock)
    rp = new_rp(live_server, demo)
    agent = UserAgent(live_server.url)
    page = agent.get(rp.authorization_url(acr_values="phr"))
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    assert page.url.endswith("/login/webauthn")
    assert 'id="try-another-method"' not in page.text  # TOTP does not reach phr
    methods = agent.get("/login/methods")
    assert method_links(methods.text) == [("/login/webauthn", "webauthn")]


def test_the_list_needs_a_fresh_password_step(live_server, demo, clock):
    anonymous = UserAgent(live_server.url).http
    refused = anonymous.get(f"{live_server.url}/login/methods", allow_redirects=False)
    assert refused.status_code == 302 and refused.headers["Location"] == "/login"
    assert "method-totp" not in refused.text

    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], demo["password"])
    assert agent.get("/login/methods").status_code == 200
    clock.advance(FIRST_FACTOR_SECONDS + 1)
    stale = agent.http.get(f"{live_server.url}/login/methods", allow_redirects=False)
    assert stale.status_code == 302 and stale.headers["Location"] == "/login"


def test_a_completed_login_without_a_password_step_in_progress_gets_no_list(
    live_server, demo, clock
):
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    done = agent.http.get(f"{live_server.url}/login/methods", allow_redirects=False)
    assert done.status_code == 302 and done.headers["Location"] == "/login"
