"""CPS card login over real HTTP, the card being a SoftHSM2 token driven through python-pkcs11:
the local-bridge path, terminal mode with the real agent, account mapping and enrolment, and the
refusals of STANDARDS.md SC-01..SC-03 (expired, revoked, untrusted, unknown RPPS, replay, other
origin, wrong key, malformed). Tokens are checked by a real OIDC client (AMR-02: sc pin hwk mfa).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import ipaddress
import re
import urllib.parse
import uuid

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from idp.db import dispose as dispose_app
from idp.factors.smartcard import login as smartcard_service
from idp.factors.smartcard.verify import CardPolicy
from idp.models import Invitation, Practitioner, PractitionerStatus, Smartcard, SmartcardLogin
from smartcard import errors as agent_errors
from smartcard.protocol import CardAnswer
from smartcard.terminal import terminal_login
from smartcard.token import utc_now
from tests.support import pki
from tests.support.cardlogin import (
    PASSWORD,
    CardPage,
    add_practitioner,
    card_answer,
    events,
    make_card_trust,
    rows,
    running_bridge,
    serve_fresh_crls,
)
from tests.support.idp_server import build_app
from tests.support.oidc import RelyingParty, UserAgent, csrf_token, totp_now
from tests.support.redis import redis_url
from tests.support.softhsm import provision_card

pytestmark = pytest.mark.pkcs11

REDIRECT = "http://localhost:9999/callback"
AMR = ["sc", "pin", "hwk", "mfa"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def other_cards(softhsm, card_pki, crl_server, rpps):
    """Tokens that must be refused: expired, soon revoked, from another CA, unknown RPPS."""
    now = utc_now()
    stranger_pki = pki.make_pki(test=True, crl_url_template=crl_server.url_template)

    def token(issuer_pki, id_nat, **certificate):
        return provision_card(
            softhsm=softhsm,
            issuer=issuer_pki.intermediate,
            id_nat=id_nat,
            crl_url_template=issuer_pki.crl_url_template,
            **certificate,
        )

    return {
        "expired": token(
            card_pki,
            "8" + rpps,
            not_valid_before=now - dt.timedelta(days=400),
            not_valid_after=now - dt.timedelta(days=1),
        ),
        "revoked": token(card_pki, "8" + rpps),
        "stranger": token(stranger_pki, "8" + rpps),
        "unknown": token(card_pki, "8" + pki.make_rpps(prefix="997")),
    }


@pytest.fixture
def trust(card_pki):
    return make_card_trust(card_pki)


@pytest.fixture
def app(database_url, tmp_path, clock, trust, crl_server, card_pki):
    """The IdP with card login on (test CAs allowed) and fresh CRLs being served."""
    serve_fresh_crls(crl_server, card_pki, now=clock.now())
    application = build_app(database_url, tmp_path, clock, smartcard=trust)
    yield application
    dispose_app(application)


@pytest.fixture
def doctor(live_server, rpps):
    """The card holder's account: active, with a password and an authenticator app."""
    return add_practitioner(live_server.app, rpps=rpps, with_totp=True)


# --------------------------------------------------------------------------- helpers


def start(live_server, demo, **extra):
    rp = RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)
    agent = UserAgent(live_server.url)
    page = agent.get(rp.authorization_url(**extra))
    return rp, agent, page


def open_card_page(agent: UserAgent) -> CardPage:
    response = agent.get("/login/card")
    assert response.status_code == 200, response.text
    return CardPage.parse(response.text)


def post_answer(agent: UserAgent, page: CardPage, answer: dict):
    return agent.post("/login/card", answer, page.html)


def id_token_claims(rp: RelyingParty, demo, callback) -> dict:
    location = callback.headers["Location"]
    assert location.startswith(REDIRECT), location
    token = rp.exchange(location)
    return rp.verify_id_token(token["id_token"], demo["client_id"])["claims"]


def is_logged_in(agent: UserAgent) -> bool:
    return agent.http.get(agent.base + "/account", allow_redirects=False).status_code == 200


def cards_of(app) -> list[Smartcard]:
    return rows(app, select(Smartcard).order_by(Smartcard.id))


def refusal_text(response) -> str:
    match = re.search(r'<p class="alert" role="alert" id="card-refusal">([^<]+)</p>', response.text)
    assert match, response.text
    return match.group(1)


def last_failure(app) -> dict:
    failed = events(app, "auth:smartcard:failed")
    assert failed, "no failure audited"
    return failed[-1].details


def status_of(agent: UserAgent) -> dict:
    response = agent.http.get(
        agent.base + "/login/card/status", headers={"Accept": "application/json"}
    )
    assert response.status_code == 200
    return response.json()


# --------------------------------------------------------------------------- the local bridge


def test_card_login_through_the_bridge_issues_phrh_tokens(
    live_server, demo, doctor, softhsm, card, rpps
):
    rp, agent, login_page = start(live_server, demo, acr_values="phrh")
    assert 'href="/login/card"' in login_page.text
    page = open_card_page(agent)
    assert page.origin == live_server.url and len(page.challenge) >= 22

    with running_bridge(softhsm, card, origin=live_server.url) as bridge:
        status = requests.get(f"{bridge}/status", headers={"Origin": page.origin}, timeout=10)
        assert status.json()["certificate"]["rpps"] == rpps
        signed = requests.post(
            f"{bridge}/sign",
            json={
                "origin": page.origin,
                "transaction": page.transaction,
                "challenge": page.challenge,
                "pin": card.pin,
            },
            headers={"Origin": page.origin},
            timeout=30,
        )
    assert signed.status_code == 200, signed.text
    callback = post_answer(agent, page, signed.json())

    claims = id_token_claims(rp, demo, callback)
    assert claims["acr"] == "phrh"
    assert claims["amr"] == AMR
    assert claims["rpps"] == rpps
    enrolled = cards_of(live_server.app)
    assert [c.practitioner_id for c in enrolled] == [doctor["id"]]
    assert enrolled[0].fingerprint_sha256 == hashlib.sha256(card.auth.der).hexdigest()
    assert enrolled[0].id_nat == "8" + rpps
    assert enrolled[0].serial == f"{card.auth.certificate.serial_number:x}"
    assert "IGC-SANTE" in enrolled[0].issuer_dn
    added = events(live_server.app, "account:two_factor:method_added")
    assert [(e.practitioner_id, e.details["method"]) for e in added] == [
        (doctor["id"], "smartcard")
    ]


def test_wrong_pin_stays_on_the_workstation_and_the_right_one_then_works(
    live_server, demo, doctor, softhsm, card
):
    rp, agent, _login = start(live_server, demo)
    page = open_card_page(agent)
    wrong = "000000" if card.pin != "000000" else "111111"
    with running_bridge(softhsm, card, origin=live_server.url) as bridge:
        body = {"origin": page.origin, "transaction": page.transaction, "challenge": page.challenge}
        refused = requests.post(
            f"{bridge}/sign", json=body | {"pin": wrong}, headers={"Origin": page.origin}
        )
        assert refused.status_code == 401
        assert refused.json()["error"] == "pin_incorrect"
        assert refused.json()["count_low"] is True  # SoftHSM2 flags the low try counter
        assert events(live_server.app, "auth:smartcard:failed") == []  # the IdP saw nothing
        signed = requests.post(
            f"{bridge}/sign", json=body | {"pin": card.pin}, headers={"Origin": page.origin}
        )
    callback = post_answer(agent, page, signed.json())
    assert id_token_claims(rp, demo, callback)["acr"] == "phrh"


def test_agent_signing_directly_with_python_pkcs11(live_server, demo, doctor, softhsm, card):
    rp, agent, _login = start(live_server, demo)
    page = open_card_page(agent)
    answer = card_answer(softhsm, card, page.payload())
    assert set(answer) == {"certificate", "signature", "mechanism"}  # no PIN in the answer

    callback = post_answer(agent, page, answer)

    claims = id_token_claims(rp, demo, callback)
    assert (claims["acr"], claims["amr"]) == ("phrh", AMR)
    assert events(live_server.app, "auth:smartcard:succeeded")[-1].details["method"] == "bridge"


# --------------------------------------------------------------------------- terminal mode


def test_terminal_mode_with_the_real_agent(live_server, demo, doctor, softhsm, card, rpps):
    rp, agent, _login = start(live_server, demo, acr_values="phrh")
    page = open_card_page(agent)
    assert re.fullmatch(r"[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}", page.code)
    assert status_of(agent) == {"status": "pending"}

    reply = terminal_login(
        issuer=live_server.url,
        code=page.code,
        lib=softhsm.lib,
        pin=card.pin,
        token_label=card.label,
    )

    assert reply == {"status": "ok"}
    stranger = UserAgent(live_server.url)
    assert status_of(stranger)["status"] != "completed"  # another browser learns nothing
    assert status_of(agent) == {"status": "completed"}
    callback = agent.post("/login/card/complete", {}, page.html)
    claims = id_token_claims(rp, demo, callback)
    assert (claims["acr"], claims["amr"], claims["rpps"]) == ("phrh", AMR, rpps)
    # The code, the challenge and the completion are all single use.
    again = requests.get(f"{live_server.url}/smartcard/code/{page.code}")
    assert again.status_code == 410 and again.json()["error"] == "transaction_used"
    second = agent.http.post(
        agent.base + "/login/card/complete",
        data={"csrf_token": csrf_token(page.html)},
        allow_redirects=False,
    )
    assert second.status_code in (400, 403, 409)
    completed = events(live_server.app, "auth:smartcard:completed")
    assert [e.details["method"] for e in completed] == ["code"]


def test_code_api_contract_and_errors(live_server, doctor, softhsm, card):
    agent = UserAgent(live_server.url)
    page = open_card_page(agent)
    url = f"{live_server.url}/smartcard/code/{page.code}"

    request = requests.get(url)
    assert request.status_code == 200
    assert request.json() == {
        "origin": live_server.url,
        "transaction": page.transaction,
        "challenge": page.challenge,
    }
    lower = requests.get(f"{live_server.url}/smartcard/code/{page.code.lower().replace('-', '')}")
    assert lower.status_code == 200  # typed in lower case, without the hyphen
    unknown = requests.get(f"{live_server.url}/smartcard/code/ABCDEFGH")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_code"
    assert requests.post(url, data="x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert requests.post(url, json={"code": "ZZZZZZZZ"}).status_code == 400

    answer = card_answer(softhsm, card, page.payload(origin="https://evil.example"))
    refused = requests.post(url, json=answer | {"code": page.code})  # no CSRF token: exempt API
    assert refused.status_code == 401
    assert refused.json()["error"] == "bad_signature" and refused.json()["message"]
    assert status_of(agent)["status"] == "failed" and status_of(agent)["message"]
    good = card_answer(softhsm, card, page.payload())
    assert requests.post(url, json=good | {"code": page.code}).status_code == 410
    assert cards_of(live_server.app) == []


def test_code_guessing_is_throttled(live_server):
    statuses = []
    for _ in range(60):
        response = requests.get(f"{live_server.url}/smartcard/code/{uuid.uuid4().hex[:8]}")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"] == "throttled"
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {404}


# --------------------------------------------------------------------------- refusals


def refused_login(live_server, answer_for) -> tuple:
    """A fresh browser, the card page, an answer built by ``answer_for(page)``, posted."""
    agent = UserAgent(live_server.url)
    page = open_card_page(agent)
    response = post_answer(agent, page, answer_for(page))
    assert not is_logged_in(agent)
    assert cards_of(live_server.app) == []
    return response, last_failure(live_server.app)


def test_expired_certificate_is_refused(live_server, doctor, softhsm, other_cards):
    expired = other_cards["expired"]
    signing_time = expired.auth.certificate.not_valid_before_utc + dt.timedelta(days=1)

    with pytest.raises(agent_errors.CertificateExpiredError):  # the agent says so first
        card_answer(softhsm, expired, b"payload")
    response, failure = refused_login(
        live_server,
        lambda page: card_answer(softhsm, expired, page.payload(), now=lambda: signing_time),
    )

    assert response.status_code == 403
    assert failure["reason"] == "certificate_expired"
    assert "expiré" in refusal_text(response)


def test_revoked_certificate_is_refused(
    live_server, doctor, softhsm, other_cards, crl_server, card_pki, clock
):
    revoked = other_cards["revoked"]
    serve_fresh_crls(
        crl_server, card_pki, now=clock.now(), revoked=(revoked.auth.certificate.serial_number,)
    )

    response, failure = refused_login(
        live_server, lambda page: card_answer(softhsm, revoked, page.payload())
    )

    assert response.status_code == 403
    assert failure["reason"] == "certificate_revoked"
    assert "révoquée" in refusal_text(response)


def test_certificate_from_an_untrusted_ca_is_refused(live_server, doctor, softhsm, other_cards):
    response, failure = refused_login(
        live_server, lambda page: card_answer(softhsm, other_cards["stranger"], page.payload())
    )

    assert response.status_code == 403
    assert failure["reason"] == "untrusted_certificate"


def test_unknown_rpps_gets_a_clear_refusal(live_server, doctor, softhsm, other_cards):
    unknown = other_cards["unknown"]
    id_nat = unknown.auth.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    unknown_rpps = id_nat[0].value[1:]

    response, failure = refused_login(
        live_server, lambda page: card_answer(softhsm, unknown, page.payload())
    )

    assert response.status_code == 403
    assert failure["reason"] == "unknown_practitioner" and failure["rpps"] == unknown_rpps
    assert unknown_rpps in refusal_text(response)
    assert "Aucun compte" in refusal_text(response)


def test_signature_for_another_origin_is_refused(live_server, doctor, softhsm, card):
    response, failure = refused_login(
        live_server,
        lambda page: card_answer(softhsm, card, page.payload(origin="https://idp.evil.example")),
    )

    assert response.status_code == 401
    assert failure["reason"] == "bad_signature"


def test_signature_by_a_key_that_is_not_the_certificates(
    live_server, doctor, softhsm, card, card_pki, rpps
):
    """The card signs, but the answer carries another valid certificate of the same person."""
    other = card_pki.issue(id_nat="8" + rpps)

    def answer_for(page):
        answer = card_answer(softhsm, card, page.payload())
        return answer | {"certificate": CardAnswer(other.der, b"", "").to_json()["certificate"]}

    response, failure = refused_login(live_server, answer_for)

    assert response.status_code == 401
    assert failure["reason"] == "bad_signature"


@pytest.mark.parametrize(
    "answer",
    [
        {"certificate": "%%%", "signature": "AAAA", "mechanism": "SHA256_RSA_PKCS"},
        {"certificate": "AAAA", "signature": "AAAA", "mechanism": "MD5_RSA"},
        {"certificate": "", "signature": "", "mechanism": ""},
    ],
)
def test_malformed_submission_is_a_clear_400(live_server, doctor, answer):
    response, _failure = refused_login(live_server, lambda page: answer)

    assert response.status_code == 400
    assert "lue" in refusal_text(response)  # « … n'a pas pu être lue »


def test_replayed_answer_is_refused(live_server, demo, doctor, softhsm, card):
    rp, agent, _login = start(live_server, demo)
    page = open_card_page(agent)
    answer = card_answer(softhsm, card, page.payload())
    assert post_answer(agent, page, answer).headers["Location"].startswith(REDIRECT)

    again = post_answer(agent, page, answer)  # same browser, same answer
    assert again.status_code in (400, 409)
    other = UserAgent(live_server.url)
    other_page = open_card_page(other)
    replay = post_answer(other, other_page, answer)  # the answer names the first transaction

    assert replay.status_code == 401
    assert last_failure(live_server.app)["reason"] == "bad_signature"
    assert not is_logged_in(other)


def test_an_answer_for_the_code_path_cannot_also_be_used_by_the_page(
    live_server, doctor, softhsm, card
):
    agent = UserAgent(live_server.url)
    page = open_card_page(agent)
    answer = card_answer(softhsm, card, page.payload())
    url = f"{live_server.url}/smartcard/code/{page.code}"
    assert requests.post(url, json=answer | {"code": page.code}).status_code == 200

    response = post_answer(agent, page, answer)

    assert response.status_code == 409
    assert last_failure(live_server.app)["reason"] == "transaction_used"


def test_production_refuses_test_cards(
    database_url, tmp_path, clock, softhsm, card, card_pki, rpps, crl_server
):
    """CardPolicy.production: test CAs and 997 numbers are refused even when configured."""
    serve_fresh_crls(crl_server, card_pki, now=clock.now())
    app = build_app(
        database_url, tmp_path, clock, smartcard=make_card_trust(card_pki, policy=CardPolicy())
    )
    try:
        add_practitioner(app, rpps=rpps)
        client = app.test_client()
        page = CardPage.parse(client.get("/login/card").get_data(as_text=True))
        answer = card_answer(softhsm, card, page.payload())
        response = client.post("/login/card", data=answer | {"csrf_token": csrf_token(page.html)})
        assert response.status_code == 403
        assert last_failure(app)["reason"] == "test_card_refused"
    finally:
        dispose_app(app)


def test_production_refuses_a_997_number_from_a_production_ca(
    database_url, tmp_path, clock, crl_server
):
    production_pki = pki.make_pki(test=False, crl_url_template=crl_server.url_template)
    serve_fresh_crls(crl_server, production_pki, now=clock.now())
    test_number = pki.make_rpps(prefix="997")
    holder = production_pki.issue(id_nat="8" + test_number)
    app = build_app(
        database_url,
        tmp_path,
        clock,
        smartcard=make_card_trust(production_pki, policy=CardPolicy()),
    )
    try:
        add_practitioner(app, rpps=test_number)
        client = app.test_client()
        page = CardPage.parse(client.get("/login/card").get_data(as_text=True))
        signature = holder.key.sign(page.payload(), padding.PKCS1v15(), hashes.SHA256())
        answer = CardAnswer(holder.der, signature, "SHA256_RSA_PKCS").to_json()
        response = client.post("/login/card", data=answer | {"csrf_token": csrf_token(page.html)})
        assert response.status_code == 403
        assert last_failure(app)["reason"] == "test_card_refused"
    finally:
        dispose_app(app)


# --------------------------------------------------------------------------- accounts


def test_invited_practitioner_is_enrolled_and_activated_by_the_card(
    live_server, softhsm, card, rpps
):
    invited = add_practitioner(live_server.app, rpps=rpps, status=PractitionerStatus.INVITED)
    agent = UserAgent(live_server.url)
    page = open_card_page(agent)

    landed = post_answer(agent, page, card_answer(softhsm, card, page.payload()))

    assert landed.status_code == 200 and landed.url.endswith("/account")
    assert "8" + rpps in landed.text  # the card is listed on the account page
    practitioner = rows(live_server.app, select(Practitioner).where(Practitioner.rpps == rpps))[0]
    assert practitioner.status == PractitionerStatus.ACTIVE
    assert all(i.used_at for i in rows(live_server.app, select(Invitation)))
    assert requests.get(f"{live_server.url}/enrol/{invited['invitation']}").status_code == 404
    added = events(live_server.app, "account:two_factor:method_added")
    assert [e.details["method"] for e in added] == ["smartcard"]
    accepted = events(live_server.app, "account:invitation:accepted")
    assert [(e.practitioner_id, e.details["method"]) for e in accepted] == [
        (invited["id"], "smartcard")
    ]


def test_active_practitioner_enrols_the_card_once(live_server, doctor, softhsm, card, clock):
    for _ in range(2):
        agent = UserAgent(live_server.url)
        page = open_card_page(agent)
        post_answer(agent, page, card_answer(softhsm, card, page.payload()))
        assert is_logged_in(agent)
        clock.advance(60)

    enrolled = cards_of(live_server.app)
    assert len(enrolled) == 1 and enrolled[0].last_used_at == clock.now() - dt.timedelta(seconds=60)
    added = [
        e
        for e in events(live_server.app, "account:two_factor:method_added")
        if e.details["method"] == "smartcard"
    ]
    assert len(added) == 1 and added[0].practitioner_id == doctor["id"]
    assert len(events(live_server.app, "auth:smartcard:succeeded")) == 2


def test_suspended_account_is_refused(live_server, softhsm, card, rpps):
    add_practitioner(live_server.app, rpps=rpps, status=PractitionerStatus.LOCKED)

    response, failure = refused_login(
        live_server, lambda page: card_answer(softhsm, card, page.payload())
    )

    assert response.status_code == 403
    assert failure["reason"] == "account_unavailable"


def login_with_card(live_server, softhsm, card) -> tuple[UserAgent, object]:
    agent = UserAgent(live_server.url)
    page = open_card_page(agent)
    landed = post_answer(agent, page, card_answer(softhsm, card, page.payload()))
    assert landed.url.endswith("/account"), landed.text
    return agent, landed


def remove_button(landed) -> str:
    match = re.search(r'action="(/account/smartcard/\d+/remove)"', landed.text)
    assert match, "no remove button for the card"
    return match.group(1)


def test_last_factor_card_cannot_be_removed(live_server, softhsm, card, rpps):
    add_practitioner(live_server.app, rpps=rpps, status=PractitionerStatus.INVITED)
    agent, landed = login_with_card(live_server, softhsm, card)
    assert not re.search(r"/account/smartcard/\d+/remove", landed.text)  # no button for it

    response = agent.post(
        f"/account/smartcard/{cards_of(live_server.app)[0].id}/remove", {}, landed.text
    )

    assert response.status_code == 409  # and the server refuses it anyway
    assert cards_of(live_server.app)[0].removed_at is None


def test_card_removal_needs_a_recent_login_then_blocks_that_card(
    live_server, doctor, softhsm, card, clock
):
    agent, landed = login_with_card(live_server, softhsm, card)
    clock.advance(6 * 60)
    stale = agent.http.post(
        agent.base + remove_button(landed),
        data={"csrf_token": csrf_token(landed.text)},
        allow_redirects=False,
    )
    assert stale.status_code == 302 and stale.headers["Location"].endswith("/login/reauthenticate")
    assert cards_of(live_server.app)[0].removed_at is None

    agent, landed = login_with_card(live_server, softhsm, card)
    removed = agent.post(remove_button(landed), {}, landed.text)
    assert removed.status_code == 200 and removed.url.endswith("/account?done=removed")
    assert cards_of(live_server.app)[0].removed_at == clock.now()
    assert 'action="/account/smartcard/' not in removed.text
    removals = events(live_server.app, "account:two_factor:method_removed")
    assert [e.details["method"] for e in removals] == ["smartcard"]

    response, failure = refused_login_keeping_cards(live_server, softhsm, card)
    assert response.status_code == 403 and failure["reason"] == "card_removed"


def refused_login_keeping_cards(live_server, softhsm, card):
    agent = UserAgent(live_server.url)
    page = open_card_page(agent)
    response = post_answer(agent, page, card_answer(softhsm, card, page.payload()))
    assert not is_logged_in(agent)
    return response, last_failure(live_server.app)


# --------------------------------------------------------------------------- acr and offers


def test_phrh_offers_the_card_and_never_the_app_code(live_server, demo, doctor, softhsm, card):
    rp, agent, login_page = start(live_server, demo, acr_values="phrh")
    assert 'href="/login/card"' in login_page.text and 'id="card-login-link"' in login_page.text
    assert "clé de sécurité certifiée" in login_page.text
    no_factor = agent.post(
        "/login", {"identifier": doctor["rpps"], "password": PASSWORD}, login_page.text
    )
    assert no_factor.status_code == 403  # TOTP cannot reach phrh
    assert 'href="/login/card"' in no_factor.text

    # Once the card is enrolled, the password step leads to it.
    login_with_card(live_server, softhsm, card)
    rp, agent, login_page = start(live_server, demo, acr_values="phrh")
    card_page = agent.post(
        "/login", {"identifier": doctor["rpps"], "password": PASSWORD}, login_page.text
    )
    assert card_page.status_code == 200 and card_page.url.endswith("/login/card")


def test_password_step_still_defaults_to_the_app_code(
    live_server, demo, doctor, softhsm, card, clock
):
    login_with_card(live_server, softhsm, card)
    rp, agent, login_page = start(live_server, demo)
    second = agent.post(
        "/login", {"identifier": doctor["rpps"], "password": PASSWORD}, login_page.text
    )
    assert second.url.endswith("/login/totp")
    # The card stays at hand: "Try another method" lists it.
    assert 'href="/login/methods" id="try-another-method"' in second.text
    assert 'href="/login/card"' in agent.get("/login/methods").text
    callback = agent.submit_totp(totp_now(doctor["totp_secret"], clock), second)
    assert id_token_claims(rp, demo, callback)["acr"] == "substantial"


def test_card_page_security_headers(live_server):
    response = requests.get(f"{live_server.url}/login/card")
    csp = response.headers["Content-Security-Policy"]
    assert "connect-src 'self' http://127.0.0.1:47615" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert "<script>" not in response.text
    pin_input = re.search(r"<input id=\"card-pin\"[^>]*>", response.text).group(0)
    assert " name=" not in pin_input
    answer_form = re.search(r"<form data-smartcard-answer.*?</form>", response.text, re.S).group(0)
    assert "card-pin" not in answer_form


def test_card_login_is_off_without_trust_anchors(database_url, tmp_path, clock):
    app = build_app(database_url, tmp_path, clock)
    try:
        client = app.test_client()
        assert client.get("/login/card").status_code == 404
        assert 'href="/login/card"' not in client.get("/login").get_data(as_text=True)
        assert client.get("/smartcard/code/ABCDEFGH").status_code == 404
    finally:
        dispose_app(app)


# --------------------------------------------------------------------------- TLS at the HTTP level


def forwarded_headers(certificate_pem: bytes, verify: str = "SUCCESS") -> dict:
    return {
        "X-SSL-Client-Cert": urllib.parse.quote(certificate_pem.decode(), safe=""),
        "X-SSL-Client-Verify": verify,
    }


def card_host_visit(live_server, transaction: str, headers: dict) -> requests.Response:
    """What the card host's proxy forwards for a browser presenting a card: no cookie."""
    return requests.get(
        f"{live_server.url}/login/card/tls",
        params={"t": transaction},
        headers=headers,
        allow_redirects=False,
    )


def test_tls_login_is_bound_to_the_browser_that_started_it(live_server, demo, doctor, card, rpps):
    """An attacker's transaction completed by a victim's card logs nobody in."""
    pem = card.auth.certificate.public_bytes(Encoding.PEM)
    attacker = UserAgent(live_server.url)
    attacker_page = open_card_page(attacker)
    start_tls = attacker.http.get(attacker.base + "/login/card/tls/start", allow_redirects=False)
    location = start_tls.headers["Location"]
    assert location == f"{live_server.url}/login/card/tls?t={attacker_page.transaction}"

    victim_visit = card_host_visit(live_server, attacker_page.transaction, forwarded_headers(pem))
    back = victim_visit.headers["Location"]
    assert back.startswith(f"{live_server.url}/login/card/tls/return?r=")
    victim = UserAgent(live_server.url)
    assert victim.get(back).status_code == 400 and not is_logged_in(victim)
    for probe in ("/login/card/tls/return", "/login/card/tls/return?r=guess"):
        assert attacker.get(probe).status_code == 400
    assert status_of(attacker)["status"] == "pending"  # polling does not reveal it either
    assert attacker.post("/login/card/complete", {}, attacker_page.html).status_code == 400
    assert not is_logged_in(attacker)


def test_tls_login_through_a_trusted_proxy(live_server, demo, doctor, card, rpps):
    pem = card.auth.certificate.public_bytes(Encoding.PEM)
    rp, agent, _login = start(live_server, demo, acr_values="phrh")
    open_card_page(agent)
    to_card_host = agent.http.get(agent.base + "/login/card/tls/start", allow_redirects=False)
    transaction = urllib.parse.parse_qs(
        urllib.parse.urlsplit(to_card_host.headers["Location"]).query
    )["t"][0]

    back = card_host_visit(live_server, transaction, forwarded_headers(pem)).headers["Location"]
    callback = agent.get(back)

    claims = id_token_claims(rp, demo, callback)
    assert (claims["acr"], claims["amr"], claims["rpps"]) == ("phrh", AMR, rpps)
    assert agent.get(back).status_code == 400  # the result is single use
    assert events(live_server.app, "auth:smartcard:completed")[-1].details["method"] == "tls"


@pytest.mark.parametrize(
    ("proxies", "headers", "reason"),
    [
        ("10.0.0.0/8", "forged", "untrusted_proxy"),
        ("127.0.0.1/32", "none", "client_certificate_missing"),
        ("127.0.0.1/32", "failed", "client_certificate_missing"),
    ],
)
def test_tls_headers_count_only_from_a_trusted_proxy(
    live_server, doctor, card, trust, proxies, headers, reason
):
    forwarding = dataclasses.replace(
        trust.forwarding, trusted_proxies=(ipaddress.ip_network(proxies),)
    )
    live_server.app.extensions["idp.settings"].smartcard = dataclasses.replace(
        trust, forwarding=forwarding
    )
    pem = card.auth.certificate.public_bytes(Encoding.PEM)
    sent = {
        "forged": forwarded_headers(pem) | {"X-Forwarded-For": "10.1.2.3"},
        "none": {},
        "failed": forwarded_headers(pem, verify="FAILED:certificate has expired"),
    }[headers]
    agent = UserAgent(live_server.url)
    page = open_card_page(agent)

    back = card_host_visit(live_server, page.transaction, sent).headers["Location"]
    refusal = agent.get(back)

    assert back.endswith(f"?error={reason}")
    assert refusal.status_code in (401, 403)
    assert last_failure(live_server.app)["reason"] == reason
    assert not is_logged_in(agent) and cards_of(live_server.app) == []


# --------------------------------------------------------------------------- CRL store down


def test_unreachable_crl_store_is_a_503(
    database_url, tmp_path, clock, trust, softhsm, card, rpps, card_pki, redis_client
):
    """Redis configured: CRLs live there; a broken store fails closed like the throttles."""
    client, url = redis_client, redis_url()
    crl_url = card_pki.crl_url(card_pki.intermediate)
    key = "idp:crl:" + hashlib.sha256(crl_url.encode()).hexdigest()
    client.set(key, "not a hash")  # any command on it now fails: WRONGTYPE
    app = build_app(database_url, tmp_path, clock, smartcard=trust, redis_url=url)
    try:
        add_practitioner(app, rpps=rpps)
        http = app.test_client()
        page = CardPage.parse(http.get("/login/card").get_data(as_text=True))
        answer = card_answer(softhsm, card, page.payload())
        response = http.post("/login/card", data=answer | {"csrf_token": csrf_token(page.html)})
        assert response.status_code == 503
        assert "indisponible" in response.get_data(as_text=True)
        code = http.post(f"/smartcard/code/{page.code}", json=answer | {"code": page.code})
        assert code.status_code == 410  # the first attempt spent the challenge
        assert rows(app, select(Smartcard)) == []
    finally:
        client.delete(key)
        client.close()
        dispose_app(app)


def test_expired_transactions_are_refused_and_purged(live_server, doctor, softhsm, card, clock):
    agent = UserAgent(live_server.url)
    page = open_card_page(agent)
    answer = card_answer(softhsm, card, page.payload())
    clock.advance(smartcard_service.LOGIN_TTL.total_seconds() + 1)

    response = post_answer(agent, page, answer)

    assert response.status_code == 400
    assert last_failure(live_server.app)["reason"] == "transaction_invalid"
    assert status_of(agent)["status"] in ("expired", "failed")
    clock.advance((smartcard_service.LOGIN_TTL + smartcard_service.PICKUP_WINDOW).total_seconds())
    open_card_page(UserAgent(live_server.url))  # a new page purges what can never complete
    remaining = rows(live_server.app, select(SmartcardLogin.transaction))
    assert page.transaction not in remaining
