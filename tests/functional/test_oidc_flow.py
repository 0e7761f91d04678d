"""The authorization code flow over real HTTP with Authlib as the relying party."""

from __future__ import annotations

import requests

from tests.support.oidc import (
    RelyingParty,
    UserAgent,
    csrf_token,
    query_of,
    redeem_code,
    totp_now,
)

REDIRECT = "http://localhost:9999/callback"


def start(live_server, demo, **extra):
    rp = RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)
    agent = UserAgent(live_server.url)
    page = agent.get(rp.authorization_url(**extra))
    return rp, agent, page


def full_login(live_server, demo, clock, **extra):
    rp, agent, page = start(live_server, demo, **extra)
    assert page.status_code == 200 and 'autocomplete="username webauthn"' in page.text
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    assert 'autocomplete="one-time-code"' in page.text and 'inputmode="numeric"' in page.text
    callback = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    assert callback.status_code in (302, 303), callback.text
    return rp, agent, callback.headers["Location"]


def test_happy_flow_issues_verified_id_token(live_server, demo, clock):
    rp, _agent, location = full_login(live_server, demo, clock)
    params = query_of(location)
    assert params["state"] == [rp.state]
    assert params["iss"] == [live_server.url]  # RFC 9207
    token = rp.exchange(location)
    assert token["token_type"].lower() == "bearer"
    verified = rp.verify_id_token(token["id_token"], demo["client_id"])
    claims = verified["claims"]
    assert verified["header"]["alg"] == "RS256" and verified["header"]["kid"]
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == "substantial"
    assert claims["rpps"] == demo["username"]
    assert claims["profession_code"] == "10"
    assert abs(claims["auth_time"] - int(clock.now().timestamp())) <= 1
    assert "at_hash" in claims
    info = requests.get(
        f"{live_server.url}/userinfo",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert info.status_code == 200
    assert info.json()["sub"] == claims["sub"] and info.json()["rpps"] == demo["username"]


def totp_answer(live_server, demo, clock, **extra):
    """A login up to its last step, and that step's own answer (its redirect not followed)."""
    rp, agent, page = start(live_server, demo, **extra)
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    answer = agent.http.post(
        live_server.url + "/login/totp",
        data={"csrf_token": csrf_token(page.text), "code": totp_now(demo["totp_secret"], clock)},
        allow_redirects=False,
    )
    return rp, agent, answer


def test_the_last_factor_sends_the_code_to_the_application_itself(live_server, demo, clock):
    """No detour through /authorize once the login is done: the code comes with the answer to
    the second factor, a 303 (RFC 9700 §4.12: that request carried a credential)."""
    rp, agent, answer = totp_answer(live_server, demo, clock)
    assert answer.status_code == 303
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    assert query_of(location)["state"] == [rp.state]
    assert query_of(location)["iss"] == [live_server.url]
    assert rp.exchange(location)["id_token"]
    again = agent.get(rp.authorization_url())  # signed in: the next request gets a code at once
    assert again.status_code == 302 and again.headers["Location"].startswith(REDIRECT + "?")


def test_what_the_login_does_not_settle_goes_back_to_the_request(live_server, demo, clock):
    """A request that asks more than a login (here the practitioner's consent) is
    /authorize's to answer, as before: the login sends the browser back there."""
    _rp, agent, answer = totp_answer(live_server, demo, clock, prompt="consent")
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/authorize?")
    consent = agent.get(answer.headers["Location"])
    assert consent.status_code == 200 and "consent_decision" in consent.text


def test_discovery_and_jwks(live_server, demo):
    meta = requests.get(f"{live_server.url}/.well-known/openid-configuration").json()
    assert meta["issuer"] == live_server.url
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert "RS256" in meta["id_token_signing_alg_values_supported"]
    assert "none" not in meta["id_token_signing_alg_values_supported"]
    assert meta["acr_values_supported"][0] == "substantial"
    keys = requests.get(meta["jwks_uri"]).json()["keys"]
    assert len({k["kid"] for k in keys}) == len(keys) >= 2
    assert all("d" not in k and "p" not in k for k in keys)  # public parts only


def test_password_alone_never_yields_a_code(live_server, demo):
    rp, agent, page = start(live_server, demo)
    agent.post("/login", {"identifier": demo["username"], "password": demo["password"]}, page.text)
    again = agent.get(rp.authorization_url())
    assert again.status_code == 200
    assert "/login" in again.url
    assert not again.headers.get("Location", "").startswith(REDIRECT)
    prompt_none = agent.http.get(rp.authorization_url(prompt="none"), allow_redirects=False)
    assert prompt_none.headers["Location"].startswith(REDIRECT)
    params = query_of(prompt_none.headers["Location"])
    assert params["error"] == ["login_required"] and "code" not in params
    assert params["iss"] == [live_server.url]
    account = agent.http.get(f"{live_server.url}/account", allow_redirects=False)
    assert account.status_code == 302 and account.headers["Location"].endswith("/login")


def test_wrong_and_replayed_totp(live_server, demo, clock):
    rp, agent, page = start(live_server, demo)
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    wrong = agent.submit_totp(
        "000000" if totp_now(demo["totp_secret"], clock) != "000000" else "111111", page
    )
    assert wrong.status_code == 401
    code = totp_now(demo["totp_secret"], clock)
    ok = agent.submit_totp(code, wrong)
    assert ok.headers["Location"].startswith(REDIRECT)
    # Same code in another browser: refused even though it is still within its window.
    other = UserAgent(live_server.url)
    rp2 = RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)
    page = other.get(rp2.authorization_url())
    page = other.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    replay = other.submit_totp(code, page)
    assert replay.status_code == 401
    # the same answer as any wrong code: nothing tells a replay from a guess
    assert "Code incorrect" in replay.text and "Code incorrect" in wrong.text


def test_code_is_single_use_and_reuse_revokes_tokens(live_server, demo, clock):
    rp, _agent, location = full_login(live_server, demo, clock)
    token = rp.exchange(location)
    code = query_of(location)["code"][0]
    second = redeem_code(
        rp.metadata["token_endpoint"],
        code,
        redirect_uri=REDIRECT,
        verifier=rp.code_verifier,
        auth=(demo["client_id"], demo["client_secret"]),
    )
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    info = requests.get(
        f"{live_server.url}/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert info.status_code == 401


def test_expired_code(live_server, demo, clock):
    rp, _agent, location = full_login(live_server, demo, clock)
    clock.advance(61)
    response = redeem_code(
        rp.metadata["token_endpoint"],
        query_of(location)["code"][0],
        redirect_uri=REDIRECT,
        verifier=rp.code_verifier,
        auth=(demo["client_id"], demo["client_secret"]),
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_wrong_pkce_verifier(live_server, demo, clock):
    rp, _agent, location = full_login(live_server, demo, clock)
    response = redeem_code(
        rp.metadata["token_endpoint"],
        query_of(location)["code"][0],
        redirect_uri=REDIRECT,
        verifier="x" * 50,
        auth=(demo["client_id"], demo["client_secret"]),
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def authorize_params(demo, **overrides):
    params = {
        "response_type": "code",
        "client_id": demo["client_id"],
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "s1",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def test_missing_or_plain_pkce_is_refused(live_server, demo):
    for overrides in (
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},
    ):
        response = requests.get(
            f"{live_server.url}/authorize",
            params=authorize_params(demo, **overrides),
            allow_redirects=False,
        )
        assert response.status_code == 302, overrides
        params = query_of(response.headers["Location"])
        assert params["error"] == ["invalid_request"] and params["state"] == ["s1"]
        assert params["iss"] == [live_server.url]


def test_unregistered_redirect_uri_and_unknown_client_get_a_page(live_server, demo):
    for overrides in (
        {"redirect_uri": "https://evil.example/cb"},
        {"redirect_uri": REDIRECT + "/extra"},
        {"client_id": "no-such-client"},
    ):
        response = requests.get(
            f"{live_server.url}/authorize",
            params=authorize_params(demo, **overrides),
            allow_redirects=False,
        )
        assert response.status_code == 400, overrides
        assert "Location" not in response.headers
        assert "<html" in response.text


def test_login_form_without_csrf_token_is_refused(live_server, demo):
    response = requests.post(
        f"{live_server.url}/login",
        data={"identifier": demo["username"], "password": demo["password"]},
    )
    assert response.status_code == 400
    assert "Traceback" not in response.text
