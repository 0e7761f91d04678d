"""Login state is typed and cleared: state made for one person or one step is honoured only for
that person and that step, and a new login starts clean (the enrolment takeover)."""

from __future__ import annotations

import json

from sqlalchemy import select, update

from idp.auth import enrolment
from idp.db import get_db
from idp.models import (
    Invitation,
    Practitioner,
    PractitionerStatus,
    TotpDevice,
    WebAuthnCredential,
)
from tests.support import factories
from tests.support.oidc import UserAgent, json_post
from tests.support.webauthn_crafting import SoftAuthenticator, b64url_decode

PASSWORD = "Attacker-long-password-1"


def invite(live_server, *, rpps="10000000033", email="mallory@demo.sante.fr") -> str:
    with live_server.app.app_context():
        db = get_db()
        clock = live_server.app.extensions["idp.clock"]
        _, token = factories.invited(db, clock, rpps=rpps, email=email)
        db.commit()
    return token


def without_usable_factor(live_server, demo) -> int:
    """The demo practitioner's only factor is gone (say a flagged, possibly cloned key)."""
    with live_server.app.app_context():
        db = get_db()
        victim = db.execute(select(Practitioner).where(Practitioner.rpps == demo["username"]))
        victim = victim.scalar_one()
        db.execute(
            update(TotpDevice)
            .where(TotpDevice.practitioner_id == victim.id)
            .values(removed_at=live_server.app.extensions["idp.clock"].now())
        )
        db.commit()
        return victim.id


def open_invitation(agent, token):
    page = agent.get(f"/enrol/{token}")
    assert page.status_code == 200
    return agent.post(page.url, {"password": PASSWORD, "confirm": PASSWORD}, page.text)


def credentials_of(live_server, practitioner_id):
    with live_server.app.app_context():
        return list(
            get_db()
            .execute(
                select(WebAuthnCredential).where(
                    WebAuthnCredential.practitioner_id == practitioner_id
                )
            )
            .scalars()
        )


def test_leftover_enrolment_cannot_bind_a_passkey_to_another_account(live_server, demo):
    victim_id = without_usable_factor(live_server, demo)
    attacker = UserAgent(live_server.url)
    enrolment_page = open_invitation(attacker, invite(live_server))
    assert enrolment_page.url.endswith("/enrol/totp")
    # Same browser, now with the victim's password (taken from a mailbox, say).
    second = attacker.login_password(demo["username"], demo["password"])
    assert second.status_code == 403  # no usable factor: the page says so, nothing to enrol
    options = json_post(attacker, "/enrol/webauthn/options", enrolment_page.text)
    assert options.status_code == 400
    authn = SoftAuthenticator(user_handle=b"x" * 32)
    response = authn.registration_response(challenge=b"c" * 32, origin=live_server.url)
    done = attacker.post(
        "/enrol/webauthn", {"credential": json.dumps(response)}, enrolment_page.text
    )
    assert done.url.endswith("/login")
    assert credentials_of(live_server, victim_id) == []
    assert attacker.get("/account").url.endswith("/login")


def test_leftover_enrolment_cannot_confirm_an_app_for_another_account(live_server, demo, clock):
    import pyotp

    without_usable_factor(live_server, demo)
    attacker = UserAgent(live_server.url)
    enrolment_page = open_invitation(attacker, invite(live_server))
    secret = enrolment_page.text.split('<code class="secret">')[1].split("</code>")[0]
    attacker.login_password(demo["username"], demo["password"])
    code = pyotp.TOTP(secret.replace(" ", "")).at(clock.now())
    page = attacker.post("/enrol/totp", {"code": code}, enrolment_page.text)
    assert page.url.endswith("/login")
    with live_server.app.app_context():
        mallory = get_db().execute(select(Practitioner).where(Practitioner.rpps == "10000000033"))
        assert mallory.scalar_one().status == PractitionerStatus.INVITED


def test_every_login_attempt_starts_from_a_clean_state(live_server, demo):
    """Even a refused attempt (here the invited practitioner's own password on the login page,
    not the invitation's step) ends the enrolment that was in progress."""
    attacker = UserAgent(live_server.url)
    enrolment_page = open_invitation(attacker, invite(live_server))
    attacker.login_password("mallory@demo.sante.fr", PASSWORD)  # refused: not activated yet
    options = json_post(attacker, "/enrol/webauthn/options", enrolment_page.text)
    assert options.status_code in (400, 401)


def test_binding_a_key_and_accepting_the_invitation_are_one_transaction(live_server, monkeypatch):
    agent = UserAgent(live_server.url)
    page = open_invitation(agent, invite(live_server))
    options = json_post(agent, "/enrol/webauthn/options", page.text).json()
    authn = SoftAuthenticator(user_handle=b64url_decode(options["user"]["id"]))
    response = authn.registration_response(
        challenge=b64url_decode(options["challenge"]), origin=live_server.url
    )

    def refused(db, *, invitation, now, codes=None):
        raise enrolment.InvitationInvalidError()

    monkeypatch.setattr(enrolment, "accept_invitation", refused)
    done = agent.post("/enrol/webauthn", {"credential": json.dumps(response)}, page.text)
    assert done.status_code == 409
    with live_server.app.app_context():
        mallory = get_db().execute(
            select(Practitioner.id).where(Practitioner.rpps == "10000000033")
        )
        mallory_id = mallory.scalar_one()
    assert credentials_of(live_server, mallory_id) == []


def test_the_invitation_token_leaves_the_url_at_once(live_server):
    token = invite(live_server)
    agent = UserAgent(live_server.url)
    first = agent.http.get(f"{live_server.url}/enrol/{token}", allow_redirects=False)
    assert first.status_code == 303 and first.headers["Location"].endswith("/enrol")
    assert token not in first.headers["Location"]
    page = agent.get("/enrol")
    assert page.status_code == 200 and token not in page.text
    stranger = UserAgent(live_server.url)  # the page without the link's session: nothing
    assert stranger.get("/enrol").status_code == 404
    assert UserAgent(live_server.url).get("/enrol/not-a-token").status_code == 404


def test_an_expired_invitation_stops_the_enrolment_page(live_server):
    agent = UserAgent(live_server.url)
    page = agent.get(f"/enrol/{invite(live_server)}")
    with live_server.app.app_context():
        db = get_db()
        db.execute(
            update(Invitation).values(expires_at=live_server.app.extensions["idp.clock"].now())
        )
        db.commit()
    again = agent.post("/enrol", {"password": PASSWORD, "confirm": PASSWORD}, page.text)
    assert again.status_code == 404
