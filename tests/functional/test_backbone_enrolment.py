"""Invitation, password choice, TOTP enrolment, and self-service factor changes."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import pyotp
from babel.dates import format_date
from sqlalchemy import select

from idp.db import get_db
from idp.models import AuditEvent, Practitioner, TotpDevice
from idp.services import clock as app_clock
from tests.support import factories
from tests.support.oidc import UserAgent, totp_now

RPPS = "10000000017"


def invite(live_server) -> str:
    with live_server.app.app_context():
        db = get_db()
        _, token = factories.invited(
            db, app_clock(), rpps=RPPS, email="lea.durand@example.fr", given_name="Léa"
        )
        db.commit()
        return token


def secret_from(page_text: str) -> str:
    return (
        re.search(r'<code class="secret">([A-Z2-7 ]+)</code>', page_text).group(1).replace(" ", "")
    )


def enrol(live_server, clock, token):
    agent = UserAgent(live_server.url)
    page = agent.get(f"/enrol/{token}")
    assert page.status_code == 200 and 'autocomplete="new-password"' in page.text
    password = "un mot de passe assez long"
    setup = agent.post("/enrol", {"password": password, "confirm": password}, page.text)
    assert 'src="data:image/svg+xml' in setup.text
    secret = secret_from(setup.text)
    return agent, setup, secret, password


def test_invitation_to_active_account(live_server, clock):
    token = invite(live_server)
    agent, setup, secret, password = enrol(live_server, clock, token)
    # Before confirmation the practitioner cannot log in: status is still invited.
    other = UserAgent(live_server.url)
    assert other.login_password(RPPS, password).status_code == 403
    wrong = agent.post(
        "/enrol/totp",
        {"code": "000000" if pyotp.TOTP(secret).at(clock.now()) != "000000" else "111111"},
        setup.text,
    )
    assert wrong.status_code == 400
    shown = agent.post("/enrol/totp", {"code": pyotp.TOTP(secret).at(clock.now())}, wrong.text)
    assert shown.url.endswith("/account/recovery/codes/new")  # the recovery codes, once
    assert shown.text.count("<li><code>") == 10
    done = agent.post("/account/recovery/codes/saved", {}, shown.text)
    assert done.status_code == 200 and "Léa" in done.text  # landed on the account page
    assert "mot de passe + code d'application d'authentification (substantiel)" in (
        done.text.replace("&#39;", "'")
    )
    assert UserAgent(live_server.url).get(f"/enrol/{token}").status_code == 404  # single use
    clock.advance(30)
    again = UserAgent(live_server.url)
    page = again.login_password("lea.durand@example.fr", password)
    landed = again.submit_totp(pyotp.TOTP(secret).at(clock.now()), page)
    assert landed.status_code == 200 and landed.url.endswith("/account")
    with live_server.app.app_context():
        practitioner = (
            get_db().execute(select(Practitioner).where(Practitioner.rpps == RPPS)).scalar_one()
        )
        assert practitioner.status == "active"
        assert practitioner.password_hash.startswith("$argon2id$")


def test_expired_invitation(live_server, clock):
    token = invite(live_server)
    clock.advance(days=4)
    response = UserAgent(live_server.url).get(f"/enrol/{token}")
    assert response.status_code == 404 and "Traceback" not in response.text


def login(live_server, demo, clock):
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    return agent


def test_adding_a_factor_needs_a_recent_login(live_server, demo, clock):
    agent = login(live_server, demo, clock)
    clock.advance(6 * 60)
    stale = agent.http.get(f"{live_server.url}/account/totp/add", allow_redirects=False)
    assert stale.status_code == 302 and "reauthenticate" in stale.headers["Location"]
    confirm = agent.get("/account/totp/add")
    # One short page: why, the factors the practitioner has, no password; the login kept.
    assert "Pour configurer une application d&#39;authentification" in confirm.text
    assert 'name="password"' not in confirm.text and 'id="confirm-totp"' in confirm.text
    assert agent.http.get(f"{live_server.url}/account", allow_redirects=False).status_code == 200
    clock.advance(30)  # the next code: the login's one is spent
    start = agent.submit_totp(totp_now(demo["totp_secret"], clock))
    assert start.url.endswith("/account/totp/add") and "data:image/svg+xml" not in start.text
    setup = agent.post("/account/totp/add", {}, start.text)  # the new key: a POST
    assert setup.status_code == 200 and "data:image/svg+xml" in setup.text
    secret = secret_from(setup.text)
    clock.advance(30)
    done = agent.post("/account/totp/add", {"code": pyotp.TOTP(secret).at(clock.now())}, setup.text)
    assert done.status_code == 200 and done.url.endswith("/account?done=added")
    assert "La nouvelle méthode de connexion est prête." in done.text
    assert len(re.findall(r"/account/totp/\d+/remove", done.text)) == 2
    paris = clock.now().astimezone(ZoneInfo("Europe/Paris"))  # dates as the practitioner reads them
    assert f"ajoutée le {format_date(paris, 'long', locale='fr')}" in done.text
    with live_server.app.app_context():
        events = [e.event for e in get_db().execute(select(AuditEvent)).scalars()]
        assert "account:two_factor:method_added" in events


def test_last_factor_cannot_be_removed(live_server, demo, clock):
    agent = login(live_server, demo, clock)
    account = agent.get("/account")
    assert not re.search(r"/account/totp/\d+/remove", account.text)  # no button for the only one
    assert "ajoutez-en une autre avant de la retirer" in account.text
    with live_server.app.app_context():
        [(device_id, name)] = get_db().execute(select(TotpDevice.id, TotpDevice.name)).all()
    refused = agent.post(f"/account/totp/{device_id}/remove", {}, account.text)
    assert refused.status_code == 409  # and the server refuses it anyway
    assert name in agent.get("/account").text


def test_invited_practitioner_is_told_to_finish_activation(live_server, clock):
    token = invite(live_server)
    agent, _setup, _secret, password = enrol(live_server, clock, token)
    response = UserAgent(live_server.url).login_password(RPPS, password)
    assert response.status_code == 403 and "invitation" in response.text
