"""The token endpoint's own checks (``idp.oauth.exchange``): the grant type, the client's
authentication as registered, repeated parameters, the redirect URI and the verifier's shape;
every refusal a JSON error that is never cached."""

from __future__ import annotations

import base64

import requests
from sqlalchemy import select

from idp.db import get_db
from idp.models import AuthorizationCode
from tests.functional.test_code_redemption import (
    REDIRECT,
    code_for,
    demo_auth,
    demo_rp,
    logged_in,
    redeem,
    refused_as_invalid_grant,
    tokens,
)


def post(live_server, data, **kwargs):
    return requests.post(f"{live_server.url}/token", data=data, timeout=60, **kwargs)


def refused(response, error: str, status: int = 400) -> bool:
    return (
        response.status_code == status
        and response.json()["error"] == error
        and response.headers["Cache-Control"] == "no-store"
        and response.headers["Pragma"] == "no-cache"
    )


def test_a_wrong_redirect_uri_is_invalid_grant_and_spends_the_code(live_server, demo, clock):
    agent = logged_in(live_server, demo, clock)
    rp = demo_rp(live_server, demo)
    code = code_for(agent, rp)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT + "/elsewhere",
        "code_verifier": rp.code_verifier,
    }
    assert refused_as_invalid_grant(post(live_server, data, auth=demo_auth(demo)))
    with live_server.app.app_context():
        stored = get_db().execute(select(AuthorizationCode.redirect_uri)).scalars().all()
    assert stored == [REDIRECT]  # the code is as it was issued, only spent
    assert refused_as_invalid_grant(redeem(live_server, code, rp.code_verifier, demo_auth(demo)))
    assert tokens(live_server) == []


def test_a_verifier_of_the_wrong_shape_is_invalid_request(live_server, demo, clock):
    agent = logged_in(live_server, demo, clock)
    for verifier in ("v" * 42, "v" * 129, "v" * 42 + "!"):
        code = code_for(agent, demo_rp(live_server, demo))
        response = redeem(live_server, code, verifier, demo_auth(demo))
        assert refused(response, "invalid_request"), verifier
    rp = demo_rp(live_server, demo)
    assert redeem(live_server, code_for(agent, rp), rp.code_verifier, demo_auth(demo)).ok


def test_grant_type_missing_or_unsupported(live_server, demo):
    assert refused(post(live_server, {"code": "x"}, auth=demo_auth(demo)), "invalid_request")
    other = post(live_server, {"grant_type": "password"}, auth=demo_auth(demo))
    assert refused(other, "unsupported_grant_type")


def test_a_repeated_parameter_is_invalid_request(live_server, demo):
    data = [("grant_type", "authorization_code"), ("code", "a"), ("code", "b")]
    assert refused(post(live_server, data, auth=demo_auth(demo)), "invalid_request")


def test_the_client_authenticates_as_registered_or_gets_401(live_server, demo, clock):
    client_id, secret = demo_auth(demo)
    base = {"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT}
    attempts = {
        "no credentials": dict(data=base),
        "unknown client": dict(data=base, auth=("nobody", "secret")),
        "wrong secret": dict(data=base, auth=(client_id, secret + "x")),
        # registered for client_secret_basic: the same secret in the form is refused
        "other method": dict(data={**base, "client_id": client_id, "client_secret": secret}),
        "as a public client": dict(data={**base, "client_id": client_id}),
        "not base64": dict(data=base, headers={"Authorization": "Basic %%%"}),
    }
    for label, kwargs in attempts.items():
        response = post(live_server, **kwargs)
        assert refused(response, "invalid_client", 401), label
        assert response.headers["WWW-Authenticate"].startswith("Basic "), label
    # RFC 6749 §2.3.1: both parts form-urlencoded before Basic
    header = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    agent = logged_in(live_server, demo, clock)
    rp = demo_rp(live_server, demo)
    data = {**base, "code": code_for(agent, rp), "code_verifier": rp.code_verifier}
    assert post(live_server, data, headers={"Authorization": f"Basic {header}"}).ok
