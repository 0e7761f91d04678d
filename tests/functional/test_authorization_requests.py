"""What /authorize answers to requests it must refuse: an error page while the client or its
redirect URI is in doubt, else a redirect with the OAuth error and ``iss`` (OIDC Core §3.1.2.6)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
import requests

from tests.support.oidc import RelyingParty, query_of

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
