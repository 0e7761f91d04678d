"""The language switch keeps the current step: the pending authorization request and the
login in progress survive it, and it only ever comes back to a page of this site."""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode

import pytest
import requests

from idp.db import dispose as dispose_app
from idp.db import get_db
from tests.support import factories
from tests.support.idp_server import build_app
from tests.support.oidc import RelyingParty, UserAgent, query_of, totp_now

REDIRECT = "http://localhost:9999/callback"
SWITCH_RE = re.compile(r'<a href="([^"]+)" hreflang="(en|fr)"')


def switch_link(page: requests.Response, lang: str) -> str:
    found = dict((code, html.unescape(href)) for href, code in SWITCH_RE.findall(page.text))
    assert lang in found, "no language switch on the page"
    return found[lang]


def switch_to(agent: UserAgent, page: requests.Response, lang: str) -> requests.Response:
    """Click the switch, as a person would: back on the same page, in the other language."""
    before = page.url
    switched = agent.get(switch_link(page, lang))
    assert switched.status_code == 200, switched.text
    assert switched.url == before
    assert f'<html lang="{lang}">' in switched.text
    return switched


def password_step(agent: UserAgent, page: requests.Response, demo) -> requests.Response:
    return agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )


def test_switch_on_the_second_step_keeps_the_login_and_the_request(live_server, demo, clock):
    rp = RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)
    agent = UserAgent(live_server.url)
    second = password_step(agent, agent.get(rp.authorization_url()), demo)
    assert '<html lang="fr">' in second.text and 'autocomplete="one-time-code"' in second.text
    english = switch_to(agent, second, "en")
    assert 'autocomplete="one-time-code"' in english.text
    assert 'hreflang="fr"' in english.text  # the switch now offers French
    callback = agent.submit_totp(totp_now(demo["totp_secret"], clock), english)
    assert callback.status_code in (302, 303), callback.text
    location = callback.headers["Location"]
    assert location.startswith(REDIRECT) and query_of(location)["state"] == [rp.state]
    claims = rp.verify_id_token(rp.exchange(location)["id_token"], demo["client_id"])["claims"]
    assert claims["rpps"] == demo["username"] and claims["amr"] == ["pwd", "otp", "mfa"]
    # The choice stays for the next pages.
    assert '<html lang="en">' in agent.get("/account").text


@pytest.mark.parametrize("extra", [{}, {"prompt": "login"}], ids=["plain", "prompt-login"])
def test_switch_on_the_consent_page_keeps_the_request(live_server, demo, clock, extra):
    with live_server.app.app_context():
        client, secret = factories.client(
            get_db(), redirect_uris=[REDIRECT], name="Portail patients"
        )
        client_id = client.client_id
    rp = RelyingParty(live_server.url, client_id, secret, REDIRECT)
    agent = UserAgent(live_server.url)
    second = password_step(agent, agent.get(rp.authorization_url(**extra)), demo)
    consent = agent.submit_totp(totp_now(demo["totp_secret"], clock), second)
    assert consent.status_code == 200 and "Portail patients" in consent.text
    assert '<html lang="fr">' in consent.text and "/authorize?" in consent.url
    english = switch_to(agent, consent, "en")
    assert "Allow Portail patients to access your information?" in english.text
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', english.text))
    fields.pop("csrf_token")
    approved = agent.post("/authorize", {**fields, "consent_decision": "approve"}, english.text)
    location = approved.headers["Location"]
    assert location.startswith(REDIRECT) and query_of(location)["state"] == [rp.state]
    claims = rp.verify_id_token(rp.exchange(location)["id_token"], client_id)["claims"]
    assert claims["rpps"] == demo["username"]


def switch(live_server, lang: str, next_value: str | None) -> requests.Response:
    query = "" if next_value is None else "?" + urlencode({"next": next_value})
    return requests.get(f"{live_server.url}/language/{lang}{query}", allow_redirects=False)


def test_switch_overrides_a_lang_parameter_of_the_page(live_server):
    response = switch(live_server, "fr", "/login?lang=en&x=1")
    assert response.headers["Location"] == "/login?lang=fr&x=1"
    assert '<html lang="fr">' in requests.get(live_server.url + response.headers["Location"]).text


def test_switch_stores_the_choice_in_a_long_lived_lax_cookie(live_server):
    response = switch(live_server, "en", "/login?x=1&y=%C3%A9")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?x=1&y=%C3%A9"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("idp_lang=en;")
    assert "SameSite=Lax" in cookie and "Max-Age=31536000" in cookie and "HttpOnly" in cookie
    assert "Secure" not in cookie  # the test server speaks plain http
    page = requests.get(f"{live_server.url}/login", cookies={"idp_lang": "en"})
    assert '<html lang="en">' in page.text


@pytest.mark.parametrize(
    "next_value",
    [
        "//evil.example/login",
        "///evil.example",
        "https://evil.example/",
        "http:evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "\\/evil.example",
        "/\t/evil.example",
        "/\r\nSet-Cookie: x=y",
        "javascript:alert(1)",
        "evil.example",
        "",
        None,
    ],
)
def test_switch_never_leaves_the_site(live_server, next_value):
    response = switch(live_server, "en", next_value)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert response.headers["Set-Cookie"].startswith("idp_lang=en;")


def test_unknown_language_is_not_found(live_server):
    response = switch(live_server, "de", "/login")
    assert response.status_code == 404
    assert "idp_lang" not in response.headers.get("Set-Cookie", "")


def test_switch_cookie_is_secure_under_https(database_url, tmp_path, clock):
    app = build_app(database_url, tmp_path, clock, issuer="https://idp.example")
    response = app.test_client().get(
        "/language/en?next=/login/totp", base_url="https://idp.example"
    )
    assert response.status_code == 303 and response.headers["Location"] == "/login/totp"
    cookies = response.headers.getlist("Set-Cookie")
    lang = next(cookie for cookie in cookies if cookie.startswith("idp_lang="))
    assert "Secure" in lang and "SameSite=Lax" in lang
    dispose_app(app)
