"""What /authorize answers to requests it must refuse: an error page while the client or its
redirect URI is in doubt, else a redirect with the OAuth error and ``iss`` (OIDC Core §3.1.2.6)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
import requests
from markupsafe import escape

from idp.oauth.messages import page_message
from tests.support.oidc import RelyingParty, UserAgent, query_of, totp_now

REDIRECT = "http://localhost:9999/callback"


def rp_for(live_server, demo) -> RelyingParty:
    return RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)


def authorize(live_server, params: dict, method: str = "GET") -> requests.Response:
    url = f"{live_server.url}/authorize"
    if method == "POST":
        return requests.post(url, data=params, allow_redirects=False)
    return requests.get(f"{url}?{urlencode(params)}", allow_redirects=False)


def valid_params(live_server, demo, **overrides) -> dict:
    params = {k: v[0] for k, v in query_of(rp_for(live_server, demo).authorization_url()).items()}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def assert_error_page(response: requests.Response, *fragments: str) -> None:
    assert response.status_code == 400, response.status_code
    assert "Location" not in response.headers
    assert 'role="alert"' in response.text and "Traceback" not in response.text
    for fragment in fragments:
        assert fragment in response.text


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "redirect_uri",
    [REDIRECT + "\n", REDIRECT + "\x00", REDIRECT + "\r\nSet-Cookie: x=1", REDIRECT + "é", " "],
    ids=["newline", "nul", "header-injection", "non-ascii", "space"],
)
def test_redirect_uri_with_control_characters_gets_an_error_page(
    live_server, demo, method, redirect_uri
):
    params = valid_params(live_server, demo, redirect_uri=redirect_uri)
    assert_error_page(authorize(live_server, params, method))


def test_redirect_uri_is_required_even_with_one_registered(live_server, demo):
    """OIDC Core §3.1.2.1: REQUIRED. OAuth 2.0's fallback to the single registered URI is not
    taken: the request gets an error page that names the missing parameter, never a redirect."""
    response = authorize(live_server, valid_params(live_server, demo, redirect_uri=None))
    assert_error_page(response, "redirect_uri")


@pytest.mark.parametrize("response_type", [None, "token", "code\n", "cödé"])
def test_unsupported_response_type_with_a_bad_redirect_uri_gets_an_error_page(
    live_server, demo, response_type
):
    params = valid_params(live_server, demo, response_type=response_type, redirect_uri=None)
    assert_error_page(authorize(live_server, params))


@pytest.mark.parametrize("response_type", ["token", "code\n", "cödé", "id_token code"])
def test_unsupported_response_type_is_redirected_once_the_redirect_uri_is_valid(
    live_server, demo, response_type
):
    response = authorize(live_server, valid_params(live_server, demo, response_type=response_type))
    assert response.status_code == 302
    params = query_of(response.headers["Location"])
    assert params["error"] == ["unsupported_response_type"]
    assert params["iss"] == [live_server.url]


def redirected_error(response: requests.Response, live_server) -> dict[str, list[str]]:
    assert response.status_code == 302, (response.status_code, response.text[:300])
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?"), location
    params = query_of(location)
    assert params["iss"] == [live_server.url] and params["state"] == ["s"]
    return params


def test_discovery_advertises_exactly_what_is_implemented(live_server):
    metadata = requests.get(f"{live_server.url}/.well-known/openid-configuration").json()
    assert metadata["response_modes_supported"] == ["query"]
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["claims_parameter_supported"] is False
    assert metadata["request_parameter_supported"] is False
    assert metadata["request_uri_parameter_supported"] is False


@pytest.mark.parametrize("mode", ["fragment", "form_post", "query.jwt", "jwt", "bogus"])
def test_an_unknown_response_mode_is_refused_not_answered_in_the_query(live_server, demo, mode):
    params = valid_params(live_server, demo, response_mode=mode, state="s")
    error = redirected_error(authorize(live_server, params), live_server)
    assert error["error"] == ["invalid_request"]
    assert "response_mode" in error["error_description"][0]


def test_response_mode_query_is_accepted(live_server, demo):
    response = authorize(live_server, valid_params(live_server, demo, response_mode="query"))
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")


@pytest.mark.parametrize("scope", ["profile email", "rpps", None, "openidx profile"])
def test_a_request_without_the_openid_scope_is_refused(live_server, demo, scope):
    """An OpenID Connect provider: without openid there is no ID token to issue, so no code."""
    params = valid_params(live_server, demo, scope=scope, state="s")
    error = redirected_error(authorize(live_server, params), live_server)
    assert error["error"] == ["invalid_scope"]


@pytest.mark.parametrize(
    ("parameter", "expected"),
    [
        ("request", "request_not_supported"),
        ("request_uri", "request_uri_not_supported"),
        ("registration", "registration_not_supported"),
    ],
)
def test_request_objects_are_refused_before_what_they_would_carry(
    live_server, demo, parameter, expected
):
    """OIDC Core §3.1.2.6: PKCE inside the request object is not "missing code_challenge"."""
    value = {
        "request": "eyJhbGciOiJub25lIn0.eyJjb2RlX2NoYWxsZW5nZSI6IngifQ.",
        "request_uri": "https://client.example/request.jwt",
        "registration": '{"logo_uri": "https://client.example/logo.png"}',
    }[parameter]
    params = valid_params(
        live_server, demo, state="s", code_challenge=None, code_challenge_method=None
    )
    error = redirected_error(authorize(live_server, {**params, parameter: value}), live_server)
    assert error["error"] == [expected]


@pytest.mark.parametrize(
    "claims",
    ["not json", "[]", '{"id_token": []}', '{"id_token": {"acr": 5}}', "[" * 5_000 + "]" * 5_000],
    ids=["text", "list", "member-list", "claim-number", "deep"],
)
def test_a_malformed_claims_parameter_is_refused(live_server, demo, claims):
    params = valid_params(live_server, demo, claims=claims, state="s")
    error = redirected_error(authorize(live_server, params), live_server)
    assert error["error"] == ["invalid_request"]


ESSENTIAL_PHR = json.dumps({"id_token": {"acr": {"essential": True, "values": ["phr"]}}})


def logged_in_with_totp(live_server, demo, clock) -> UserAgent:
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    return agent


def test_an_essential_acr_in_claims_steps_up_like_acr_values(live_server, demo, clock):
    """A TOTP session (substantial) is not silently accepted for an essential phr."""
    agent = logged_in_with_totp(live_server, demo, clock)
    url = rp_for(live_server, demo).authorization_url(claims=ESSENTIAL_PHR)
    stepped = agent.get(url)
    assert stepped.url.endswith("/login/reauthenticate") and 'id="reauthenticate"' in stepped.text
    silent = agent.get(
        rp_for(live_server, demo).authorization_url(claims=ESSENTIAL_PHR, prompt="none")
    )
    assert query_of(silent.headers["Location"])["error"] == ["login_required"]
    # The confirmation offers only what reaches phr: this account has none.
    assert 'id="confirm-none"' in stepped.text and "/login/totp" not in stepped.text
    # An essential acr wins over a lower acr_values: still no code from the TOTP login.
    agent = logged_in_with_totp(live_server, demo, clock)
    url = rp_for(live_server, demo).authorization_url(
        claims=ESSENTIAL_PHR, acr_values="substantial", prompt="none"
    )
    assert query_of(agent.get(url).headers["Location"])["error"] == ["login_required"]


def test_an_essential_acr_met_by_the_session_gives_a_code(live_server, demo, clock):
    agent = logged_in_with_totp(live_server, demo, clock)
    essential = json.dumps({"id_token": {"acr": {"essential": True, "value": "substantial"}}})
    rp = rp_for(live_server, demo)
    callback = agent.get(rp.authorization_url(claims=essential, prompt="none"))
    claims = rp.verify_id_token(rp.exchange(callback.headers["Location"])["id_token"], "demo-rp")
    assert claims["claims"]["acr"] == "substantial"


def test_an_essential_acr_no_level_can_meet_is_refused(live_server, demo):
    claims = json.dumps({"id_token": {"acr": {"essential": True, "values": ["urn:other:loa:4"]}}})
    params = valid_params(live_server, demo, claims=claims, state="s")
    error = redirected_error(authorize(live_server, params), live_server)
    assert error["error"] == ["unmet_authentication_requirements"]


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize(
    ("overrides", "english_description"),
    [
        ({"client_id": "nobody"}, "does not exist on this server"),
        ({"client_id": None}, "Missing 'client_id'"),
        ({"redirect_uri": None}, "Missing 'redirect_uri'"),
        ({"redirect_uri": "https://evil.example/cb"}, "not registered for this client"),
        ({"redirect_uri": REDIRECT + "\n"}, "printable ASCII"),
        ({"redirect_uri": None, "response_type": "token"}, "is not supported"),
    ],
    ids=["unknown-client", "no-client", "no-redirect", "unregistered", "malformed", "token"],
)
def test_error_pages_speak_the_page_language_not_authlib_english(
    live_server, demo, lang, overrides, english_description
):
    params = {**valid_params(live_server, demo, **overrides), "lang": lang}
    params = {k: v for k, v in params.items() if v is not None}
    response = authorize(live_server, params)
    assert_error_page(response)
    assert english_description not in response.text
    error = oauth_error_for(live_server, params)
    with live_server.app.test_request_context(f"/?lang={lang}"):
        expected = str(escape(page_message(error)))
    assert expected in response.text
    assert f'lang="{lang}"' in response.text


def oauth_error_for(live_server, params: dict):
    """The error the provider raises for these parameters, to look its page message up."""
    from authlib.oauth2 import OAuth2Error

    query = urlencode(params)
    with live_server.app.test_request_context(f"/authorize?{query}"):
        try:
            live_server.app.extensions["idp.oauth_server"].get_consent_grant(end_user=None)
        except OAuth2Error as error:
            return error
    raise AssertionError("no error raised")
