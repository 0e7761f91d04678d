"""Every step after the password says who is signing in, and "Not you?" starts over."""

from __future__ import annotations

from idp.db import get_db
from tests.support import factories
from tests.support.oidc import RelyingParty, UserAgent, csrf_token, totp_now

REDIRECT = "http://localhost:9999/callback"


def after_password(live_server, demo):
    rp = RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)
    agent = UserAgent(live_server.url)
    page = agent.get(rp.authorization_url())
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    assert page.url.endswith("/login/totp"), page.url
    return rp, agent, page


def another_practitioner(live_server) -> tuple[str, str]:
    from idp.services import cipher

    with live_server.app.app_context():
        db = get_db()
        clock = live_server.app.extensions["idp.clock"]
        other = factories.practitioner(
            db, clock, rpps="10000000017", given_name="Jules", family_name="Durand"
        )
        _device, secret = factories.totp_device(db, clock, other, cipher=cipher())
        db.commit()
        return other.rpps, secret


def test_second_step_names_the_practitioner_with_a_masked_rpps(live_server, demo):
    _rp, _agent, page = after_password(live_server, demo)
    assert "Camille Martin" in page.text
    assert "100•••••009" in page.text
    assert demo["username"] not in page.text
    assert 'action="/login/restart"' in page.text and 'id="not-you"' in page.text


def test_login_page_names_nobody(live_server, demo):
    agent = UserAgent(live_server.url)
    page = agent.get("/login")
    assert 'id="not-you"' not in page.text and "Camille Martin" not in page.text


def test_not_you_restarts_and_keeps_the_application_request(live_server, demo, clock):
    rp, agent, page = after_password(live_server, demo)
    back = agent.post("/login/restart", {}, page.text)
    assert back.status_code == 200 and back.url.endswith("/login")
    assert "Camille Martin" not in back.text
    # The second step of the abandoned login is closed.
    refused = agent.http.get(f"{live_server.url}/login/totp", allow_redirects=False)
    assert refused.status_code in (302, 303) and refused.headers["Location"].endswith("/login")
    # Someone else signs in, and lands back at the application that asked.
    rpps, secret = another_practitioner(live_server)
    page = agent.post("/login", {"identifier": rpps, "password": factories.PASSWORD}, back.text)
    assert page.url.endswith("/login/totp") and "Jules Durand" in page.text
    assert "100•••••017" in page.text and "Camille Martin" not in page.text
    callback = agent.submit_totp(totp_now(secret, clock), page)
    assert callback.status_code in (302, 303), callback.text
    assert callback.headers["Location"].startswith(REDIRECT)
    token = rp.exchange(callback.headers["Location"])
    claims = rp.verify_id_token(token["id_token"], demo["client_id"])["claims"]
    assert claims["rpps"] == rpps


def test_restart_refuses_get_and_requires_csrf(live_server, demo):
    _rp, agent, page = after_password(live_server, demo)
    get = agent.http.get(f"{live_server.url}/login/restart", allow_redirects=False)
    assert get.status_code == 405
    forged = agent.http.post(f"{live_server.url}/login/restart", data={}, allow_redirects=False)
    assert forged.status_code == 400
    wrong = agent.http.post(
        f"{live_server.url}/login/restart", data={"csrf_token": "x"}, allow_redirects=False
    )
    assert wrong.status_code == 400
    # Neither ended the login in progress.
    still = agent.get("/login/totp")
    assert still.status_code == 200 and "Camille Martin" in still.text
    assert csrf_token(still.text)
