"""Redeeming an authorization code: bound to its client, single use even when the exchange
fails, expiring after 60 s, audited on reuse; PKCE parameters checked for shape."""

from __future__ import annotations

import requests
from sqlalchemy import select

from idp.db import get_db
from idp.models import AuditEvent, Practitioner, Token
from tests.support import factories
from tests.support.oidc import RelyingParty, UserAgent, query_of, redeem_code, totp_now

REDIRECT = "http://localhost:9999/callback"
VALID_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 appendix B, 43 chars


def logged_in(live_server, demo, clock) -> UserAgent:
    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], demo["password"])
    done = agent.submit_totp(totp_now(demo["totp_secret"], clock))
    assert done.status_code in (200, 302, 303), done.text
    return agent


def code_for(agent: UserAgent, rp: RelyingParty) -> str:
    """A code from the agent's existing session: no login page, straight to the client."""
    response = agent.get(rp.authorization_url())
    assert response.headers.get("Location", "").startswith(REDIRECT), response.text
    return query_of(response.headers["Location"])["code"][0]


def redeem(live_server, code: str, verifier: str | None, auth: tuple[str, str]):
    return redeem_code(
        f"{live_server.url}/token", code, redirect_uri=REDIRECT, verifier=verifier, auth=auth
    )


def demo_rp(live_server, demo) -> RelyingParty:
    return RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)


def demo_auth(demo) -> tuple[str, str]:
    return demo["client_id"], demo["client_secret"]


def tokens(live_server) -> list[Token]:
    with live_server.app.app_context():
        db = get_db()
        found = list(db.execute(select(Token)).scalars())
        db.expunge_all()
        return found


def events(live_server, name: str) -> list[AuditEvent]:
    with live_server.app.app_context():
        db = get_db()
        found = list(db.execute(select(AuditEvent).where(AuditEvent.event == name)).scalars())
        db.expunge_all()
        return found


def demo_practitioner_id(live_server, demo) -> int:
    with live_server.app.app_context():
        return (
            get_db()
            .execute(select(Practitioner.id).where(Practitioner.rpps == demo["username"]))
            .scalar_one()
        )


def refused_as_invalid_grant(response) -> bool:
    return (
        response.status_code == 400
        and response.json()["error"] == "invalid_grant"
        and "access_token" not in response.json()
    )


# --------------------------------------------------------------------------- client binding


def test_another_client_cannot_redeem_a_code_and_the_owner_still_can(live_server, demo, clock):
    """RFC 6749 §4.1.3: the code is bound to the client it was issued to.

    Client B, authenticating with its own valid secret and presenting the right PKCE verifier,
    gets invalid_grant. B's attempt does not spend the code: the user authorised client A, and
    A (which is not at fault) still redeems it, once.
    """
    with live_server.app.app_context():
        other, other_secret = factories.client(
            get_db(), name="Autre appli", redirect_uris=[REDIRECT], require_consent=False
        )
        other_id = other.client_id
    agent = logged_in(live_server, demo, clock)
    rp = demo_rp(live_server, demo)
    code = code_for(agent, rp)

    stolen = redeem(live_server, code, rp.code_verifier, (other_id, other_secret))
    assert refused_as_invalid_grant(stolen), stolen.text
    assert tokens(live_server) == []
    assert events(live_server, "oauth:token:issued") == []

    owner = redeem(live_server, code, rp.code_verifier, demo_auth(demo))
    assert owner.status_code == 200, owner.text
    assert owner.json()["access_token"] and owner.json()["id_token"]
    assert [t.client_id for t in tokens(live_server)] == [demo["client_id"]]
    again = redeem(live_server, code, rp.code_verifier, demo_auth(demo))
    assert refused_as_invalid_grant(again)


def test_an_unknown_code_is_invalid_grant(live_server, demo):
    response = redeem(live_server, "no-such-code-" + "x" * 40, "v" * 43, demo_auth(demo))
    assert refused_as_invalid_grant(response), response.text


# --------------------------------------------------------------------------- single use


def test_a_failed_exchange_spends_the_code(live_server, demo, clock):
    """The claim is committed before PKCE is checked: a wrong verifier burns the code."""
    agent = logged_in(live_server, demo, clock)
    rp = demo_rp(live_server, demo)
    code = code_for(agent, rp)
    wrong = redeem(live_server, code, "w" * 50, demo_auth(demo))
    assert refused_as_invalid_grant(wrong), wrong.text
    right = redeem(live_server, code, rp.code_verifier, demo_auth(demo))
    assert refused_as_invalid_grant(right), right.text
    assert tokens(live_server) == []


def test_a_token_request_without_code_verifier_is_refused_and_spends_the_code(
    live_server, demo, clock
):
    agent = logged_in(live_server, demo, clock)
    rp = demo_rp(live_server, demo)
    code = code_for(agent, rp)
    missing = redeem(live_server, code, None, demo_auth(demo))
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    assert "access_token" not in missing.json()
    empty_code = code_for(agent, demo_rp(live_server, demo))
    empty = redeem(live_server, empty_code, "", demo_auth(demo))
    assert empty.status_code == 400 and empty.json()["error"] == "invalid_request"
    right = redeem(live_server, code, rp.code_verifier, demo_auth(demo))
    assert refused_as_invalid_grant(right)
    assert tokens(live_server) == []


def test_code_reuse_is_audited_once_with_practitioner_and_client(live_server, demo, clock):
    agent = logged_in(live_server, demo, clock)
    rp = demo_rp(live_server, demo)
    code = code_for(agent, rp)
    assert redeem(live_server, code, rp.code_verifier, demo_auth(demo)).status_code == 200
    assert events(live_server, "oauth:code:reused") == []
    reuse = redeem(live_server, code, rp.code_verifier, demo_auth(demo))
    assert refused_as_invalid_grant(reuse)
    [event] = events(live_server, "oauth:code:reused")
    assert event.practitioner_id == demo_practitioner_id(live_server, demo)
    assert event.client_id == demo["client_id"]
    assert event.details == {"revoked_tokens": 1}
    [token] = tokens(live_server)
    assert token.revoked_at is not None


# --------------------------------------------------------------------------- expiry (60 s)


def test_a_code_is_redeemable_at_60_seconds_and_not_at_61(live_server, demo, clock):
    agent = logged_in(live_server, demo, clock)
    first_rp, second_rp = demo_rp(live_server, demo), demo_rp(live_server, demo)
    first, second = code_for(agent, first_rp), code_for(agent, second_rp)  # both issued now
    clock.advance(60)
    on_the_edge = redeem(live_server, first, first_rp.code_verifier, demo_auth(demo))
    assert on_the_edge.status_code == 200, on_the_edge.text
    clock.advance(1)
    late = redeem(live_server, second, second_rp.code_verifier, demo_auth(demo))
    assert refused_as_invalid_grant(late), late.text
    assert len(tokens(live_server)) == 1


# --------------------------------------------------------------------------- PKCE shape


def authorize(live_server, demo, **overrides):
    params = {
        "response_type": "code",
        "client_id": demo["client_id"],
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "s1",
        "code_challenge": VALID_CHALLENGE,
        "code_challenge_method": "S256",
        **overrides,
    }
    return requests.get(f"{live_server.url}/authorize", params=params, allow_redirects=False)


def assert_invalid_request(response, live_server):
    assert response.status_code == 302, response.text
    params = query_of(response.headers["Location"])
    assert response.headers["Location"].startswith(REDIRECT)
    assert params["error"] == ["invalid_request"] and params["state"] == ["s1"]
    assert "code" not in params and params["iss"] == [live_server.url]


def assert_goes_to_login(response):
    assert response.status_code == 302, response.text
    assert not response.headers["Location"].startswith(REDIRECT)
    assert response.headers["Location"].endswith("/login")


def test_code_challenge_length_edges(live_server, demo):
    """RFC 7636 §4.2: 43 to 128 characters of [A-Z a-z 0-9 - . _ ~]."""
    assert_invalid_request(authorize(live_server, demo, code_challenge="a" * 42), live_server)
    assert_goes_to_login(authorize(live_server, demo, code_challenge="a" * 43))
    assert_goes_to_login(authorize(live_server, demo, code_challenge="a" * 128))
    assert_invalid_request(authorize(live_server, demo, code_challenge="a" * 129), live_server)


def test_code_challenge_with_invalid_characters_is_refused(live_server, demo):
    for bad in (
        VALID_CHALLENGE[:-1] + "+",
        VALID_CHALLENGE[:-1] + "/",
        VALID_CHALLENGE + "=",  # padded base64url
        VALID_CHALLENGE[:-1] + " ",
    ):
        assert_invalid_request(authorize(live_server, demo, code_challenge=bad), live_server)
    assert_goes_to_login(authorize(live_server, demo, code_challenge="A-._~" + "b" * 38))


def test_two_code_challenges_are_refused(live_server, demo):
    response = requests.get(
        f"{live_server.url}/authorize",
        params=[
            ("response_type", "code"),
            ("client_id", demo["client_id"]),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "s1"),
            ("code_challenge", VALID_CHALLENGE),
            ("code_challenge", "b" * 43),
            ("code_challenge_method", "S256"),
        ],
        allow_redirects=False,
    )
    assert_invalid_request(response, live_server)


# --------------------------------------------------------------------------- what redemption gives


def test_a_disabled_practitioners_code_is_not_redeemable(live_server, demo, clock):
    from idp.models import PractitionerStatus

    agent = logged_in(live_server, demo, clock)
    rp = demo_rp(live_server, demo)
    code = code_for(agent, rp)
    with live_server.app.app_context():
        db = get_db()
        practitioner = db.get(Practitioner, demo_practitioner_id(live_server, demo))
        practitioner.status = PractitionerStatus.DISABLED
        db.commit()
    response = redeem(live_server, code, rp.code_verifier, demo_auth(demo))
    assert refused_as_invalid_grant(response), response.text
    assert tokens(live_server) == []


def test_id_token_times_come_from_the_provider_clock_and_last_600_seconds(live_server, demo, clock):
    agent = logged_in(live_server, demo, clock)
    rp = demo_rp(live_server, demo)
    code = code_for(agent, rp)
    clock.advance(45)  # the injected clock, not the machine's, dates the token
    response = redeem(live_server, code, rp.code_verifier, demo_auth(demo))
    assert response.status_code == 200, response.text
    verified = rp.verify_id_token(response.json()["id_token"], demo["client_id"], clock)
    claims, header = verified["claims"], verified["header"]
    assert claims["iat"] == int(clock.now().timestamp())
    assert claims["exp"] == claims["iat"] + 600
    assert claims["aud"] == demo["client_id"] and claims["iss"] == live_server.url
    assert header["typ"] == "JWT"


def test_token_issue_is_audited_with_practitioner_client_and_scope(live_server, demo, clock):
    agent = logged_in(live_server, demo, clock)
    rp = demo_rp(live_server, demo)
    code = code_for(agent, rp)
    assert redeem(live_server, code, rp.code_verifier, demo_auth(demo)).status_code == 200
    [event] = events(live_server, "oauth:token:issued")
    assert event.practitioner_id == demo_practitioner_id(live_server, demo)
    assert event.client_id == demo["client_id"]
    assert set(event.details["scope"].split()) == {"openid", "profile", "email", "rpps"}
    [token] = tokens(live_server)
    assert set(token.scope.split()) == {"openid", "profile", "email", "rpps"}
