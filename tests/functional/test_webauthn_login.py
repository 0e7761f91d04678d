"""WebAuthn over real HTTP with crafted responses: enrolment, second factor, passkey, acr,
and the negatives a relying party must refuse (STANDARDS.md §6, AMR-02, STEP-01/02, NIST-10/17)."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import requests
from sqlalchemy import select

from idp.clock import FrozenClock
from idp.db import get_db
from idp.models import (
    AuditEvent,
    Practitioner,
    PractitionerStatus,
    TotpDevice,
    WebAuthnCredential,
)
from tests.support import factories
from tests.support.idp_server import real_now_clock
from tests.support.oidc import RelyingParty, UserAgent, csrf_token, json_post, query_of, totp_now
from tests.support.webauthn_crafting import SoftAuthenticator, b64url, b64url_decode

REDIRECT = "http://localhost:9999/callback"


# --------------------------------------------------------------------------- helpers


def login_with_totp(agent: UserAgent, identifier: str, password: str, secret: str, clock):
    page = agent.login_password(identifier, password)
    return agent.submit_totp(totp_now(secret, clock), page)


def start_registration(agent: UserAgent, name: str = "Blue key"):
    page = agent.get("/account/webauthn/add")
    assert page.status_code == 200, page.text
    options = json_post(agent, "/account/webauthn/add/options", page.text, {"name": name})
    assert options.status_code == 200, options.text
    return page, options.json()


def register_key(agent, live_server, authn: SoftAuthenticator, name: str = "Blue key", **knobs):
    page, options = start_registration(agent, name)
    authn.user_handle = b64url_decode(options["user"]["id"])  # what an authenticator keeps
    response = authn.registration_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url, **knobs
    )
    return agent.post(
        "/account/webauthn/add", {"name": name, "credential": json.dumps(response)}, page.text
    )


def second_factor(agent, live_server, authn: SoftAuthenticator, **knobs):
    """After the password: options, a crafted assertion, the finish POST."""
    page = agent.get("/login/webauthn")
    assert page.status_code == 200, page.text
    options = json_post(agent, "/login/webauthn/options", page.text)
    assert options.status_code == 200, options.text
    knobs = {"origin": live_server.url, **knobs}
    response = authn.authentication_response(
        challenge=b64url_decode(options.json()["challenge"]), **knobs
    )
    result = agent.post("/login/webauthn", {"credential": json.dumps(response)}, page.text)
    return result, response


def passkey_login(agent, live_server, authn: SoftAuthenticator, page=None, **knobs):
    page = page if page is not None else agent.get("/login")
    options = json_post(agent, "/login/passkey/options", page.text)
    assert options.status_code == 200, options.text
    assert not options.json().get("allowCredentials")  # discoverable: any passkey may answer
    response = authn.authentication_response(
        challenge=b64url_decode(options.json()["challenge"]), origin=live_server.url, **knobs
    )
    return agent.post("/login/passkey", {"credential": json.dumps(response)}, page.text)


def alert_text(response) -> str:
    match = re.search(r'<p class="alert" role="alert">([^<]+)</p>', response.text)
    assert match, "no alert on the page"
    return match.group(1)


def wrong_key_refusal(live_server, demo):
    """The generic refusal, for comparison: an unknown key answering a passkey challenge."""
    return passkey_login(UserAgent(live_server.url), live_server, SoftAuthenticator())


def is_logged_in(agent: UserAgent) -> bool:
    return agent.http.get(agent.base + "/account", allow_redirects=False).status_code == 200


def rows(live_server, statement) -> list:
    """Rows read in their own session, detached so they outlive it."""
    with live_server.app.app_context():
        db = get_db()
        found = list(db.execute(statement).scalars())
        db.expunge_all()
        return found


def credentials(live_server) -> list[WebAuthnCredential]:
    return rows(live_server, select(WebAuthnCredential).order_by(WebAuthnCredential.id))


def events(live_server, name: str) -> list[AuditEvent]:
    return rows(live_server, select(AuditEvent).where(AuditEvent.event == name))


def new_rp(live_server, demo) -> RelyingParty:
    return RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)


def make_practitioner(live_server, *, rpps: str, email: str, password: str) -> str:
    """Another active practitioner with a password and a confirmed TOTP device."""
    from idp.services import cipher

    with live_server.app.app_context():
        db = get_db()
        clock = live_server.app.extensions["idp.clock"]
        jules = factories.practitioner(db, clock, rpps=rpps, email=email, password=password)
        _device, secret = factories.totp_device(db, clock, jules, cipher=cipher())
        db.commit()
        return secret


@pytest.fixture
def clock():
    """A minute behind real time: tests step the TOTP clock forward by 30 s and the ID tokens
    minted afterwards must still not look issued in the future to the relying party."""
    return FrozenClock(real_now_clock().now() - dt.timedelta(seconds=60))


@pytest.fixture
def agent(live_server, demo, clock):
    """The demo practitioner, signed in with password + TOTP."""
    agent = UserAgent(live_server.url)
    done = login_with_totp(agent, demo["username"], demo["password"], demo["totp_secret"], clock)
    assert done.status_code == 200 and is_logged_in(agent)
    return agent


@pytest.fixture
def key(live_server, agent, clock) -> SoftAuthenticator:
    """A security key registered on the demo account (from the TOTP session)."""
    authn = SoftAuthenticator()
    done = register_key(agent, live_server, authn)
    assert done.status_code == 200 and "Blue key" in done.text, done.text
    clock.advance(30)  # a later TOTP step, so the demo code works again
    return authn


# --------------------------------------------------------------------------- registration


def test_registration_options_and_stored_credential(live_server, demo, agent, clock):
    _page, options = start_registration(agent)
    assert options["rp"]["id"] == "localhost"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "none"
    assert len(b64url_decode(options["challenge"])) >= 16
    handle = b64url_decode(options["user"]["id"])
    assert len(handle) == 32
    assert demo["username"].encode() not in handle and demo["email"].encode() not in handle
    authn = SoftAuthenticator()
    done = register_key(agent, live_server, authn, name="  Clé\tbleue  ", transports=["usb", "x"])
    assert done.status_code == 200 and "Clé bleue" in done.text
    [stored] = credentials(live_server)
    assert stored.credential_id == authn.credential_id
    assert stored.name == "Clé bleue" and stored.transports == "usb"
    assert stored.sign_count == 0 and stored.aaguid == "01234567-89ab-cdef-0123-456789abcdef"
    assert stored.attestation_fmt == "none" and not stored.hardware_bound
    assert stored.created_ip == "127.0.0.1" and stored.removed_at is None
    [added] = events(live_server, "account:two_factor:method_added")
    assert added.details["method"] == "webauthn" and added.details["credential"] == stored.id
    # Next time (signed in with the key: NIST-10) the key is excluded, and refused if it insists.
    agent.login_password(demo["username"], demo["password"])
    assert second_factor(agent, live_server, authn)[0].status_code == 200
    _page, options = start_registration(agent)
    excluded = [b64url_decode(c["id"]) for c in options["excludeCredentials"]]
    assert excluded == [authn.credential_id]
    again = register_key(agent, live_server, authn)
    assert again.status_code == 409
    assert len(credentials(live_server)) == 1


@pytest.mark.parametrize(
    "knobs",
    [
        {"origin": "http://localhost:1"},
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
        {"uv": False},
        {"up": False},
        {"client_data_type": "webauthn.get"},
        {"be": False, "bs": True},
    ],
    ids=["port", "origin", "rp-id", "no-uv", "no-up", "ceremony", "bs-without-be"],
)
def test_bad_registration_is_refused_and_nothing_stored(live_server, agent, knobs):
    page, options = start_registration(agent)
    knobs = {"origin": live_server.url, **knobs}
    response = SoftAuthenticator().registration_response(
        challenge=b64url_decode(options["challenge"]), **knobs
    )
    done = agent.post(
        "/account/webauthn/add", {"name": "Key", "credential": json.dumps(response)}, page.text
    )
    assert done.status_code == 400
    assert credentials(live_server) == []
    assert events(live_server, "account:webauthn:refused")


def test_registration_challenge_is_single_use(live_server, agent):
    page, options = start_registration(agent)
    authn = SoftAuthenticator()
    response = authn.registration_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url
    )
    data = {"name": "Key", "credential": json.dumps(response)}
    assert agent.post("/account/webauthn/add", data, page.text).status_code == 200
    other = SoftAuthenticator()
    forged = other.registration_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url
    )
    replay = agent.post(
        "/account/webauthn/add", {"name": "Key", "credential": json.dumps(forged)}, page.text
    )
    assert replay.status_code == 400
    assert [c.credential_id for c in credentials(live_server)] == [authn.credential_id]


# --------------------------------------------------------------------------- second factor


def test_password_then_key_gives_a_phishing_resistant_token(live_server, demo, key, clock):
    rp = new_rp(live_server, demo)
    agent = UserAgent(live_server.url)
    page = agent.get(rp.authorization_url())
    chosen = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    assert chosen.url.endswith("/login/webauthn")  # the strongest factor is offered first
    # with an always-visible way to another method, and the app code among them
    assert 'href="/login/methods" id="try-another-method"' in chosen.text
    assert 'href="/login/totp"' in agent.get("/login/methods").text
    result, _response = second_factor(agent, live_server, key)
    assert result.headers["Location"].startswith(REDIRECT)
    claims = rp.verify_id_token(rp.exchange(result.headers["Location"])["id_token"], "demo-rp")[
        "claims"
    ]
    assert claims["amr"] == ["pwd", "swk", "user", "mfa"]
    assert claims["acr"] == "phr"
    [stored] = credentials(live_server)
    assert stored.sign_count == 1 and stored.last_used_at is not None
    assert events(live_server, "auth:webauthn:succeeded")


def test_passkey_alone_satisfies_two_factors(live_server, demo, key):
    rp = new_rp(live_server, demo)
    agent = UserAgent(live_server.url)
    page = agent.get(rp.authorization_url())
    assert 'data-webauthn="passkey"' in page.text and "username webauthn" in page.text
    result = passkey_login(agent, live_server, key, page=page)
    assert result.headers["Location"].startswith(REDIRECT), result.text
    claims = rp.verify_id_token(rp.exchange(result.headers["Location"])["id_token"], "demo-rp")[
        "claims"
    ]
    assert claims["amr"] == ["swk", "user", "mfa"]
    assert claims["acr"] == "phr"


@pytest.mark.parametrize(
    "knobs",
    [
        {"origin": "https://evil.example"},
        {"origin": "http://localhost:1"},
        {"rp_id": "evil.example"},
        {"uv": False},
        {"up": False},
        {"be": True},
        {"client_data_type": "webauthn.create"},
        {"client_data_extra": {"topOrigin": "https://evil.example", "crossOrigin": True}},
        {"signing_key": "forged"},
    ],
    ids=["origin", "port", "rp-id", "no-uv", "no-up", "be-changed", "ceremony", "iframe", "sig"],
)
def test_bad_assertion_is_refused(live_server, demo, key, knobs):
    from cryptography.hazmat.primitives.asymmetric import ec

    if knobs.get("signing_key") == "forged":
        knobs = {"signing_key": ec.generate_private_key(ec.SECP256R1())}
    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], demo["password"])
    result, _response = second_factor(agent, live_server, key, **knobs)
    assert result.status_code == 401
    assert not is_logged_in(agent)
    assert credentials(live_server)[0].sign_count == 0
    [failed] = events(live_server, "auth:webauthn:failed")
    assert failed.details["reason"]


def test_replayed_assertion_fails(live_server, demo, key):
    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], demo["password"])
    page = agent.get("/login/webauthn")
    ok, response = second_factor(agent, live_server, key)
    assert ok.status_code == 200 and is_logged_in(agent)
    # Same response again in another browser that has just typed the password: no challenge.
    other = UserAgent(live_server.url)
    other.login_password(demo["username"], demo["password"])
    page = other.get("/login/webauthn")
    replay = other.post("/login/webauthn", {"credential": json.dumps(response)}, page.text)
    assert replay.status_code == 400 and not is_logged_in(other)
    # ...and answering a fresh challenge with the old response fails too.
    json_post(other, "/login/webauthn/options", page.text)
    replay = other.post("/login/webauthn", {"credential": json.dumps(response)}, page.text)
    assert replay.status_code == 401 and not is_logged_in(other)


def test_counter_regression_flags_the_key(live_server, demo, key, clock):
    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], demo["password"])
    ok, _response = second_factor(agent, live_server, key, sign_count=5)
    assert ok.status_code == 200 and is_logged_in(agent)

    clone = UserAgent(live_server.url)
    clone.login_password(demo["username"], demo["password"])
    refused, _response = second_factor(clone, live_server, key, sign_count=5)
    assert refused.status_code == 403 and not is_logged_in(clone)
    assert 'role="alert"' in refused.text
    [stored] = credentials(live_server)
    assert stored.flagged_at is not None and stored.sign_count == 5
    [event] = events(live_server, "auth:webauthn:possible_clone")
    assert event.details == {
        "credential": stored.id,
        "new_sign_count": 5,
        "stored_sign_count": 5,
    }
    # The practitioner sees the same clear message when the blocked key is tried again.
    blocked = passkey_login(clone, live_server, key, sign_count=50)
    assert blocked.status_code == 403 and not is_logged_in(clone)
    assert alert_text(blocked) == alert_text(refused)
    assert alert_text(refused) != alert_text(wrong_key_refusal(live_server, demo))
    # Blocked for good: not offered any more; the account page says so.
    page = clone.get("/login/second-factor")
    assert page.url.endswith("/login/totp")
    clock.advance(30)
    login_with_totp(clone, demo["username"], demo["password"], demo["totp_secret"], clock)
    account = clone.get("/account")
    assert f'data-credential="{stored.id}" data-state="blocked"' in account.text


def test_another_practitioners_key_never_authenticates(live_server, demo, key, clock):
    secret = make_practitioner(
        live_server, rpps="10000000017", email="jules@demo.sante.fr", password="Jules-password-1"
    )
    jules = UserAgent(live_server.url)
    login_with_totp(jules, "10000000017", "Jules-password-1", secret, clock)
    own = SoftAuthenticator()
    assert register_key(jules, live_server, own, name="Jules key").status_code == 200
    jules.http.cookies.clear()
    jules.login_password("10000000017", "Jules-password-1")
    # Jules answers his own challenge with Camille's key.
    result, _response = second_factor(jules, live_server, key)
    assert result.status_code == 401 and not is_logged_in(jules)
    # A passkey assertion of Camille's credential claiming Jules's user handle.
    with live_server.app.app_context():
        jules_handle = (
            get_db()
            .execute(select(Practitioner).where(Practitioner.rpps == "10000000017"))
            .scalar_one()
            .webauthn_user_handle
        )
    result = passkey_login(UserAgent(live_server.url), live_server, key, user_handle=jules_handle)
    assert result.status_code == 401
    # A passkey assertion without any user handle is refused: it must name its user.
    result = passkey_login(UserAgent(live_server.url), live_server, key, user_handle=None)
    assert result.status_code == 401
    assert sorted(e.details["reason"] for e in events(live_server, "auth:webauthn:failed")) == [
        "UnknownCredentialError",
        "UserHandleMismatchError",
        "UserHandleMismatchError",
    ]


MALFORMED = [
    "not json",
    "[]",
    "{}",
    '{"type": "public-key", "id": "AAAA", "rawId": "AAAA", "response": []}',
    '{"type": "public-key", "id": "AAAA", "rawId": "AAAB", "response": {}}',
    json.dumps({"type": "public-key", "id": "A" * 2000, "rawId": "A" * 2000, "response": {}}),
    json.dumps({"type": "public-key", "padding": "x" * 100_000}),
    "[" * 10_000 + "]" * 10_000,
    '{"type": "public-key", "response": ' + '{"a":' * 10_000 + "1" + "}" * 10_001,
]
MALFORMED_IDS = [
    "text",
    "list",
    "empty",
    "response-list",
    "id-mismatch",
    "long-id",
    "oversized",
    "deep-list",
    "deep-object",
]
DEEP_CLIENT_DATA = b64url(b"[" * 10_000 + b"]" * 10_000)


@pytest.mark.parametrize("payload", MALFORMED, ids=MALFORMED_IDS)
def test_malformed_assertions_get_a_clear_400(live_server, demo, key, payload):
    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], demo["password"])
    page = agent.get("/login/webauthn")
    json_post(agent, "/login/webauthn/options", page.text)
    result = agent.post("/login/webauthn", {"credential": payload}, page.text)
    assert result.status_code == 400 and "Traceback" not in result.text
    assert not is_logged_in(agent)
    assert credentials(live_server)[0].sign_count == 0


@pytest.mark.parametrize("payload", MALFORMED, ids=MALFORMED_IDS)
def test_malformed_registrations_get_a_clear_400_and_store_nothing(live_server, agent, payload):
    page, _options = start_registration(agent)
    result = agent.post("/account/webauthn/add", {"name": "K", "credential": payload}, page.text)
    assert result.status_code == 400 and "Traceback" not in result.text
    assert credentials(live_server) == []


def test_deeply_nested_json_is_a_clear_400_at_every_webauthn_login(live_server, demo, key):
    """Nested 10,000 deep, the credential or the clientDataJSON inside it (JSON inside the
    JSON) is refused as malformed, not a 500 (the other entry points: MALFORMED above)."""
    # Passkey alone.
    anonymous = UserAgent(live_server.url)
    page = anonymous.get("/login")
    options = json_post(anonymous, "/login/passkey/options", page.text).json()
    response = key.authentication_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url
    )
    response["response"]["clientDataJSON"] = DEEP_CLIENT_DATA
    result = anonymous.post("/login/passkey", {"credential": json.dumps(response)}, page.text)
    assert result.status_code == 400 and not is_logged_in(anonymous)
    json_post(anonymous, "/login/passkey/options", page.text)
    deep = "[" * 10_000 + "]" * 10_000
    result = anonymous.post("/login/passkey", {"credential": deep}, page.text)
    assert result.status_code == 400 and not is_logged_in(anonymous)
    # Second factor after the password.
    second = UserAgent(live_server.url)
    second.login_password(demo["username"], demo["password"])
    page = second.get("/login/webauthn")
    options = json_post(second, "/login/webauthn/options", page.text).json()
    response = key.authentication_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url
    )
    response["response"]["clientDataJSON"] = DEEP_CLIENT_DATA
    result = second.post("/login/webauthn", {"credential": json.dumps(response)}, page.text)
    assert result.status_code == 400 and not is_logged_in(second)


def test_deeply_nested_client_data_is_a_clear_400_when_adding_a_key(live_server, agent):
    page, options = start_registration(agent)
    response = SoftAuthenticator().registration_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url
    )
    response["response"]["clientDataJSON"] = DEEP_CLIENT_DATA
    data = {"name": "Deep", "credential": json.dumps(response)}
    assert agent.post("/account/webauthn/add", data, page.text).status_code == 400
    assert credentials(live_server) == []


@pytest.mark.parametrize("where", ["credential", "clientDataJSON"])
def test_deeply_nested_json_at_invitation_enrolment_is_a_clear_400(live_server, where):
    agent, page = invited_at_second_step(live_server)
    options = json_post(agent, "/enrol/webauthn/options", page.text).json()
    response = SoftAuthenticator().registration_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url
    )
    response["response"]["clientDataJSON"] = DEEP_CLIENT_DATA
    payload = json.dumps(response) if where == "clientDataJSON" else "[" * 10_000 + "]" * 10_000
    result = agent.post("/enrol/webauthn", {"credential": payload}, page.text)
    assert result.status_code == 400 and "Traceback" not in result.text
    assert credentials(live_server) == []


def test_payload_over_the_request_limit_is_refused(live_server, demo, key):
    agent = UserAgent(live_server.url)
    agent.login_password(demo["username"], demo["password"])
    page = agent.get("/login/webauthn")
    json_post(agent, "/login/webauthn/options", page.text)
    result = agent.post("/login/webauthn", {"credential": "x" * 300_000}, page.text)
    assert result.status_code == 413 and not is_logged_in(agent)


def test_failed_assertions_are_throttled(live_server, demo, key):
    agent = UserAgent(live_server.url)
    for _ in range(2):  # three answers per login, five free failures per practitioner
        agent.login_password(demo["username"], demo["password"])
        for attempt in range(3):
            result, _response = second_factor(agent, live_server, key, uv=False)
            assert result.status_code == 401
        assert 'autocomplete="current-password"' in result.text  # back to the password
    agent.login_password(demo["username"], demo["password"])
    page = agent.get("/login/webauthn")
    options = json_post(agent, "/login/webauthn/options", page.text)
    assert options.status_code == 429 and options.json()["error"]
    assert int(options.headers["Retry-After"]) > 0


# --------------------------------------------------------------------------- assurance levels


def test_phr_request_steps_up_a_totp_session_and_offers_only_webauthn(
    live_server, demo, agent, key, clock
):
    rp = new_rp(live_server, demo)
    # The TOTP session (substantial) is not accepted silently for phr: the practitioner, signed
    # in, confirms with a factor that reaches it, without a password...
    stepped = agent.get(rp.authorization_url(acr_values="phr"))
    assert stepped.url.endswith("/login/reauthenticate") and stepped.status_code == 200
    assert 'id="confirm-webauthn"' in stepped.text and 'name="password"' not in stepped.text
    assert is_logged_in(agent)  # the lower session stays while they confirm
    # ...and the only factor offered reaches phr: no code from the app.
    assert "/login/totp" not in stepped.text
    totp_page = agent.http.get(f"{live_server.url}/login/totp", allow_redirects=False)
    assert totp_page.status_code == 302
    result, _response = second_factor(agent, live_server, key)
    claims = rp.verify_id_token(rp.exchange(result.headers["Location"])["id_token"], "demo-rp")[
        "claims"
    ]
    assert claims["acr"] == "phr" and claims["amr"] == ["pwd", "swk", "user", "mfa"]
    # A phr session now satisfies phr without any login, and still satisfies substantial.
    for acr_values in ("phr", "substantial"):
        again = new_rp(live_server, demo)
        silent = agent.get(again.authorization_url(acr_values=acr_values, prompt="none"))
        assert "code" in query_of(silent.headers["Location"])


def silent_acr(agent, live_server, demo) -> str:
    """The level the session has now, as a client asking nothing would get it."""
    rp = new_rp(live_server, demo)
    silent = agent.get(rp.authorization_url(prompt="none"))
    return rp.verify_id_token(rp.exchange(silent.headers["Location"])["id_token"], "demo-rp")[
        "claims"
    ]["acr"]


def test_a_step_up_given_up_leaves_the_lower_session(live_server, demo, agent, key, clock):
    rp = new_rp(live_server, demo)
    stepped = agent.get(rp.authorization_url(acr_values="phr"))
    assert 'id="confirm-cancel"' in stepped.text and 'action="/authorize/cancel"' in stepped.text
    back = agent.post("/authorize/cancel", {}, stepped.text)
    assert query_of(back.headers["Location"])["error"] == ["access_denied"]
    assert is_logged_in(agent) and silent_acr(agent, live_server, demo) == "substantial"
    # The confirmation went with it: its second-step page no longer opens.
    assert agent.http.get(f"{live_server.url}/login/webauthn", allow_redirects=False).is_redirect
    assert [e.event for e in events(live_server, "auth:session:logout")] == []


def test_a_step_up_no_factor_meets_says_so_and_leaves_the_session(
    live_server, demo, agent, key, clock
):
    rp = new_rp(live_server, demo)
    stepped = agent.get(rp.authorization_url(acr_values="phrh"))  # the key is not attested
    assert 'id="confirm-none"' in stepped.text and 'id="confirm-webauthn"' not in stepped.text
    back = agent.post("/authorize/cancel", {"reason": "unmet"}, stepped.text)
    assert query_of(back.headers["Location"])["error"] == ["unmet_authentication_requirements"]
    assert is_logged_in(agent) and silent_acr(agent, live_server, demo) == "substantial"


def test_a_password_login_given_up_at_the_second_step_keeps_the_own_session(
    live_server, demo, agent, key, clock
):
    """Typing one's password again (prompt=login, a step-up from the login page) opens a new
    login; given up, the practitioner still has the session they had."""
    rp = new_rp(live_server, demo)
    page = agent.get(rp.authorization_url(prompt="login"))
    assert page.url.endswith("/login")
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    assert page.url.endswith("/login/webauthn")
    assert is_logged_in(agent) and silent_acr(agent, live_server, demo) == "substantial"


def test_not_you_on_a_confirmation_signs_the_session_out(live_server, demo, agent, key, clock):
    """On a shared workstation the session asking to confirm may be someone else's."""
    page = agent.get(new_rp(live_server, demo).authorization_url(acr_values="phr"))
    page = agent.post("/login/restart", {}, page.text)
    assert page.url.endswith("/login") and 'name="password"' in page.text
    assert not is_logged_in(agent)
    [logout] = events(live_server, "auth:session:logout")
    assert logout.practitioner_id == rows(live_server, select(Practitioner))[0].id


def test_cancelling_a_confirmation_goes_back_to_the_account(live_server, demo, agent, clock):
    clock.advance(6 * 60)
    page = agent.get("/account/totp/add")
    assert page.url.endswith("/login/reauthenticate") and 'id="confirm-totp"' in page.text
    back = agent.post("/login/reauthenticate/cancel", {}, page.text)
    assert back.url.endswith("/account") and back.status_code == 200
    assert agent.http.get(f"{live_server.url}/login/totp", allow_redirects=False).is_redirect
    # Confirmed with a code instead, the practitioner comes back to the change they asked.
    page = agent.get("/account/totp/add")
    page = agent.get("/login/totp")
    clock.advance(30)  # the next code: the one of the login is spent
    done = agent.post("/login/totp", {"code": totp_now(demo["totp_secret"], clock)}, page.text)
    assert done.url.endswith("/account/totp/add") and done.status_code == 200


def test_phrh_request_is_not_met_by_an_unattested_key(live_server, demo, key):
    rp = new_rp(live_server, demo)
    agent = UserAgent(live_server.url)
    page = agent.get(rp.authorization_url(acr_values="phrh"))
    result = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    assert result.status_code == 403  # no_factor.html
    passkey = UserAgent(live_server.url)
    page = passkey.get(rp.authorization_url(acr_values="phrh"))
    result = passkey_login(passkey, live_server, key, page=page)
    assert result.status_code == 403 and not is_logged_in(passkey)
    assert credentials(live_server)[0].sign_count == 1  # genuine: the counter moved
    [refused] = events(live_server, "auth:webauthn:refused")
    assert refused.details["required_acr"] == "phrh"


def test_adding_a_second_key_from_a_totp_session_steps_up(live_server, demo, key, clock):
    """NIST-10: with a phr key on the account, binding another needs a phr login."""
    agent = UserAgent(live_server.url)
    login_with_totp(agent, demo["username"], demo["password"], demo["totp_secret"], clock)
    page = agent.get("/account/webauthn/add")
    assert page.url.endswith("/login/reauthenticate") and 'id="confirm-webauthn"' in page.text
    assert "/login/totp" not in page.text and 'name="password"' not in page.text
    assert is_logged_in(agent)  # a link here ends nothing: the session stays until confirmed
    result, _response = second_factor(agent, live_server, key)
    assert result.url.endswith("/account/webauthn/add") and result.status_code == 200
    assert register_key(agent, live_server, SoftAuthenticator(), name="Spare").status_code == 200
    assert [c.name for c in credentials(live_server)] == ["Blue key", "Spare"]


# --------------------------------------------------------------------------- account management


def account_form(agent: UserAgent):
    page = agent.get("/account")
    assert page.status_code == 200
    return page


def test_rename_and_remove_with_the_last_factor_rule(live_server, demo, key, clock):
    agent = UserAgent(live_server.url)
    login_with_totp(agent, demo["username"], demo["password"], demo["totp_secret"], clock)
    [stored] = credentials(live_server)
    page = account_form(agent)
    assert "Blue key" in page.text
    renamed = agent.post(f"/account/webauthn/{stored.id}/rename", {"name": "Red key"}, page.text)
    assert renamed.status_code == 200 and "Red key" in renamed.text
    too_long = agent.post(f"/account/webauthn/{stored.id}/rename", {"name": "x" * 65}, page.text)
    assert too_long.status_code == 400
    # TOTP may go: the key remains as a second factor.
    [device] = rows(live_server, select(TotpDevice))
    removed = agent.post(f"/account/totp/{device.id}/remove", {}, page.text)
    assert removed.status_code == 200
    # The key is now the last factor: it stays.
    last = agent.post(f"/account/webauthn/{stored.id}/remove", {}, page.text)
    assert last.status_code == 409
    assert credentials(live_server)[0].removed_at is None
    assert {e.details["method"] for e in events(live_server, "account:two_factor:method_removed")}
    assert events(live_server, "account:two_factor:method_renamed")


def test_removed_key_cannot_log_in_and_its_record_survives(live_server, demo, key, clock):
    agent = UserAgent(live_server.url)
    login_with_totp(agent, demo["username"], demo["password"], demo["totp_secret"], clock)
    [stored] = credentials(live_server)
    page = account_form(agent)
    removed = agent.post(f"/account/webauthn/{stored.id}/remove", {}, page.text)
    assert removed.status_code == 200 and "Blue key" not in removed.text
    [kept] = credentials(live_server)
    assert kept.removed_at is not None  # NIST-12: soft delete
    [event] = events(live_server, "account:two_factor:method_removed")
    assert event.details == {"credential": stored.id, "method": "webauthn"}
    result = passkey_login(UserAgent(live_server.url), live_server, key)
    assert result.status_code == 401
    gone = f"/account/webauthn/{stored.id}"
    assert agent.post(f"{gone}/remove", {}, page.text).status_code == 404
    assert agent.post(f"{gone}/rename", {"name": "x"}, page.text).status_code == 404
    # A removed credential id stays taken (WA-03): the authenticator must make a new one.
    again = register_key(agent, live_server, key)
    assert again.status_code == 409


def test_factor_changes_need_a_recent_login(live_server, demo, key, clock):
    agent = UserAgent(live_server.url)
    login_with_totp(agent, demo["username"], demo["password"], demo["totp_secret"], clock)
    page = account_form(agent)
    [stored] = credentials(live_server)
    clock.advance(6 * 60)
    options = json_post(agent, "/account/webauthn/add/options", page.text)
    assert options.status_code == 401 and options.json()["error"]
    removal = agent.http.post(
        f"{live_server.url}/account/webauthn/{stored.id}/remove",
        data={"csrf_token": csrf_token(page.text)},
        allow_redirects=False,
    )
    assert removal.status_code == 302 and removal.headers["Location"].endswith("/reauthenticate")
    assert credentials(live_server)[0].removed_at is None


def invited_at_second_step(live_server, rpps: str = "10000000025"):
    """An invited practitioner who chose a password: the page offering the second factor."""
    with live_server.app.app_context():
        db = get_db()
        clock = live_server.app.extensions["idp.clock"]
        _, token = factories.invited(db, clock, rpps=rpps, email="ana@demo.sante.fr")
        db.commit()
    agent = UserAgent(live_server.url)
    page = agent.get(f"/enrol/{token}")
    password = "Long-password-of-mine-1"
    page = agent.post("/enrol", {"password": password, "confirm": password}, page.text)
    assert page.url.endswith("/enrol/totp") and 'data-webauthn="register"' in page.text
    return agent, page


def test_invitation_enrolment_with_a_passkey(live_server, demo):
    agent, page = invited_at_second_step(live_server)
    options = json_post(agent, "/enrol/webauthn/options", page.text)
    assert options.status_code == 200
    options = options.json()
    assert options["user"]["name"] == "ana@demo.sante.fr"
    authn = SoftAuthenticator(user_handle=b64url_decode(options["user"]["id"]))
    response = authn.registration_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url
    )
    shown = agent.post("/enrol/webauthn", {"credential": json.dumps(response)}, page.text)
    assert shown.url.endswith("/account/recovery/codes/new")  # the recovery codes, once
    done = agent.post("/account/recovery/codes/saved", {}, shown.text)
    assert done.status_code == 200 and done.url.endswith("/account")
    assert "mot de passe + clé d&#39;accès (résistant à l&#39;hameçonnage)" in done.text
    with live_server.app.app_context():
        ana = get_db().execute(select(Practitioner).where(Practitioner.rpps == "10000000025"))
        assert ana.scalar_one().status == PractitionerStatus.ACTIVE
    # The passkey alone now signs Ana in.
    ana = UserAgent(live_server.url)
    assert passkey_login(ana, live_server, authn).url.endswith("/account") and is_logged_in(ana)


def test_every_webauthn_route_declares_its_policy(app):
    from idp.auth.policy import route_inventory

    rows = {(path, methods): found for methods, path, found in route_inventory(app)}
    assert rows[("/login/webauthn", "GET,POST")] == "first-factor"
    assert rows[("/login/webauthn/options", "POST")] == "first-factor"
    assert rows[("/login/passkey", "POST")] == "public"
    assert rows[("/login/passkey/options", "POST")] == "public"
    assert rows[("/enrol/webauthn", "POST")] == "first-factor"
    assert rows[("/enrol/webauthn/options", "POST")] == "first-factor"
    assert rows[("/account/webauthn/add", "GET,POST")] == "recent-strong"
    assert rows[("/account/webauthn/add/options", "POST")] == "recent-strong"
    assert rows[("/account/webauthn/<int:credential_id>/rename", "POST")] == "recent-strong"
    assert rows[("/account/webauthn/<int:credential_id>/remove", "POST")] == "recent-strong"


def test_options_without_csrf_header_are_refused(live_server, demo):
    response = requests.post(f"{live_server.url}/login/passkey/options")
    assert response.status_code == 400
