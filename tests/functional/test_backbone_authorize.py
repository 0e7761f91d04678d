"""Authorization request options: prompt, max_age, consent, client types, algorithms, acr."""

from __future__ import annotations

import re

import pytest
import requests

from idp.db import get_db
from tests.support import factories
from tests.support.oidc import RelyingParty, UserAgent, query_of, totp_now

REDIRECT = "http://localhost:9999/callback"


def add_client(live_server, **kwargs):
    with live_server.app.app_context():
        client, secret = factories.client(get_db(), redirect_uris=[REDIRECT], **kwargs)
        return client.client_id, secret


def login_through(agent, page, demo, clock):
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    return agent.submit_totp(totp_now(demo["totp_secret"], clock), page)


def rp_for(live_server, client_id, secret, **kwargs):
    return RelyingParty(live_server.url, client_id, secret, REDIRECT, **kwargs)


def test_prompt_login_forces_a_new_login_with_later_auth_time(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    rp = rp_for(live_server, demo["client_id"], demo["client_secret"])
    first = login_through(agent, agent.get(rp.authorization_url()), demo, clock)
    first_claims = rp.verify_id_token(
        rp.exchange(first.headers["Location"])["id_token"], demo["client_id"]
    )["claims"]
    clock.advance(45)
    rp2 = rp_for(live_server, demo["client_id"], demo["client_secret"])
    page = agent.get(rp2.authorization_url(prompt="login"))
    assert page.status_code == 200 and 'name="password"' in page.text
    second = login_through(agent, page, demo, clock)
    claims = rp2.verify_id_token(
        rp2.exchange(second.headers["Location"])["id_token"], demo["client_id"], clock
    )["claims"]
    assert claims["auth_time"] >= first_claims["auth_time"] + 45


def test_existing_session_gives_a_code_without_ui_and_max_age(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    rp = rp_for(live_server, demo["client_id"], demo["client_secret"])
    login_through(agent, agent.get(rp.authorization_url()), demo, clock)
    silent = agent.get(
        rp_for(live_server, demo["client_id"], demo["client_secret"]).authorization_url(
            prompt="none"
        )
    )
    assert "code" in query_of(silent.headers["Location"])
    clock.advance(120)
    fresh_enough = agent.get(
        rp_for(live_server, demo["client_id"], demo["client_secret"]).authorization_url(
            max_age="10000"
        )
    )
    assert "code" in query_of(fresh_enough.headers["Location"])
    too_old = agent.get(
        rp_for(live_server, demo["client_id"], demo["client_secret"]).authorization_url(
            max_age="60"
        )
    )
    assert too_old.status_code == 200 and 'name="password"' in too_old.text
    too_old_silent = agent.get(
        rp_for(live_server, demo["client_id"], demo["client_secret"]).authorization_url(
            max_age="60", prompt="none"
        )
    )
    assert query_of(too_old_silent.headers["Location"])["error"] == ["login_required"]


def test_consent_approve_deny_and_prompt_none(live_server, demo, clock):
    client_id, secret = add_client(live_server, name="Portail patients")
    agent = UserAgent(live_server.url)
    rp = rp_for(live_server, client_id, secret)
    consent = login_through(agent, agent.get(rp.authorization_url()), demo, clock)
    assert consent.status_code == 200 and "Portail patients" in consent.text
    silent = agent.get(rp_for(live_server, client_id, secret).authorization_url(prompt="none"))
    assert query_of(silent.headers["Location"])["error"] == ["consent_required"]
    # The consent form posts back every parameter; without its CSRF token it is refused.
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', consent.text))
    fields.pop("csrf_token")
    forged = agent.http.post(
        f"{live_server.url}/authorize",
        data={**fields, "consent_decision": "approve"},
        allow_redirects=False,
    )
    assert forged.status_code == 400 and "Location" not in forged.headers
    denied = agent.post("/authorize", {**fields, "consent_decision": "deny"}, consent.text)
    assert query_of(denied.headers["Location"])["error"] == ["access_denied"]
    rp2 = rp_for(live_server, client_id, secret)
    page = agent.get(rp2.authorization_url())
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
    fields.pop("csrf_token")
    approved = agent.post("/authorize", {**fields, "consent_decision": "approve"}, page.text)
    assert "code" in query_of(approved.headers["Location"])
    rp2.exchange(approved.headers["Location"])
    again = agent.get(rp_for(live_server, client_id, secret).authorization_url(prompt="none"))
    assert "code" in query_of(again.headers["Location"])


@pytest.mark.parametrize("alg", ["ES256", "PS256"])
def test_per_client_id_token_algorithm(live_server, demo, clock, alg):
    client_id, secret = add_client(
        live_server, name=f"App {alg}", id_token_alg=alg, require_consent=False
    )
    agent = UserAgent(live_server.url)
    rp = rp_for(live_server, client_id, secret)
    callback = login_through(agent, agent.get(rp.authorization_url()), demo, clock)
    verified = rp.verify_id_token(rp.exchange(callback.headers["Location"])["id_token"], client_id)
    assert verified["header"]["alg"] == alg


def test_client_secret_post_and_public_client(live_server, demo, clock):
    post_id, post_secret = add_client(
        live_server, name="Post", auth_method="client_secret_post", require_consent=False
    )
    public_id, _ = add_client(live_server, name="Mobile", public=True, require_consent=False)
    agent = UserAgent(live_server.url)
    rp = rp_for(live_server, post_id, post_secret, auth_method="client_secret_post")
    callback = login_through(agent, agent.get(rp.authorization_url()), demo, clock)
    assert rp.exchange(callback.headers["Location"])["access_token"]
    rp_public = rp_for(live_server, public_id, None, auth_method="none")
    callback = agent.get(rp_public.authorization_url())
    token = rp_public.exchange(callback.headers["Location"])
    rp_public.verify_id_token(token["id_token"], public_id)
    # A confidential client may not fall back to another method or a wrong secret.
    rp_basic = rp_for(live_server, demo["client_id"], demo["client_secret"])
    callback = agent.get(rp_basic.authorization_url())
    wrong = requests.post(
        rp_basic.metadata["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": query_of(callback.headers["Location"])["code"][0],
            "redirect_uri": REDIRECT,
            "code_verifier": rp_basic.code_verifier,
        },
        auth=(demo["client_id"], "not-the-secret"),
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_request_objects_are_refused_explicitly(live_server, demo):
    rp = rp_for(live_server, demo["client_id"], demo["client_secret"])
    response = requests.get(
        rp.authorization_url(request="eyJhbGciOiJub25lIn0.e30."), allow_redirects=False
    )
    assert query_of(response.headers["Location"])["error"] == ["request_not_supported"]


def test_post_to_authorize_and_login_hint(live_server, demo):
    rp = rp_for(live_server, demo["client_id"], demo["client_secret"])
    params = query_of(rp.authorization_url(login_hint=demo["username"]))
    agent = UserAgent(live_server.url)
    page = agent.post("/authorize", {k: v[0] for k, v in params.items()})
    assert page.status_code == 200 and f'value="{demo["username"]}"' in page.text


def test_phishing_resistant_request_with_totp_only_account(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    rp = rp_for(live_server, demo["client_id"], demo["client_secret"])
    page = agent.get(rp.authorization_url(acr_values="phr"))
    result = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    assert result.status_code == 403  # no factor reaches the level: TOTP is not offered
    assert "/login/totp" not in result.text
    totp_page = agent.http.get(f"{live_server.url}/login/totp", allow_redirects=False)
    assert totp_page.status_code == 302
    # Returning to the application is a button (POST with the page's CSRF token)...
    cancel = agent.post("/authorize/cancel", {"reason": "unmet"}, result.text)
    params = query_of(cancel.headers["Location"])
    assert params["error"] == ["unmet_authentication_requirements"]
    assert params["iss"] == [live_server.url] and params["state"] == [rp.state]


def test_a_link_cannot_end_a_pending_sign_in(live_server, demo):
    """GET /authorize/cancel used to abort the sign-in: any site could link to it."""
    agent = UserAgent(live_server.url)
    rp = rp_for(live_server, demo["client_id"], demo["client_secret"])
    page = agent.get(rp.authorization_url(acr_values="phr"))
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    assert 'action="/authorize/cancel"' in page.text
    linked = agent.http.get(f"{live_server.url}/authorize/cancel", allow_redirects=False)
    assert linked.status_code == 405
    forged = agent.http.post(
        f"{live_server.url}/authorize/cancel", data={"reason": "unmet"}, allow_redirects=False
    )
    assert forged.status_code == 400 and "Location" not in forged.headers
    # The pending request survived both: the page's own button still returns to the client.
    cancel = agent.post("/authorize/cancel", {}, page.text)
    assert query_of(cancel.headers["Location"])["error"] == ["access_denied"]


def test_substantial_session_is_stepped_up_not_accepted(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    rp = rp_for(live_server, demo["client_id"], demo["client_secret"])
    login_through(agent, agent.get(rp.authorization_url()), demo, clock)
    rp2 = rp_for(live_server, demo["client_id"], demo["client_secret"])
    stepped = agent.get(rp2.authorization_url(acr_values="phr"))
    assert "Location" not in stepped.headers or "code=" not in stepped.headers["Location"]
    silent = agent.get(
        rp_for(live_server, demo["client_id"], demo["client_secret"]).authorization_url(
            acr_values="phr", prompt="none"
        )
    )
    assert query_of(silent.headers["Location"])["error"] == ["login_required"]
