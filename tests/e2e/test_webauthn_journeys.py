"""WebAuthn journeys in real Chromium with a CDP virtual authenticator, checked at the end by a
real OIDC client (Authlib): enrol, second factor, passkey, acr "phr" step-up, removal."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from idp.clock import FrozenClock
from idp.db import get_db
from idp.models import AuditEvent, WebAuthnCredential
from tests.support.browser import (
    add_virtual_authenticator,
    get_credentials,
    serve_wsgi_app,
    set_user_verified,
)
from tests.support.idp_server import real_now_clock
from tests.support.oidc import RelyingParty, totp_now

pytestmark = pytest.mark.browser

NO_AUTOFILL = "delete PublicKeyCredential.isConditionalMediationAvailable;"


@pytest.fixture
def clock():
    """A minute behind real time: a journey may step the TOTP clock forward and the ID tokens
    minted afterwards must still not look issued in the future to the client."""
    return FrozenClock(real_now_clock().now() - dt.timedelta(seconds=60))


def client_landing(environ, start_response):
    """The client's redirect URI: a page that exists, so the browser stops there."""
    start_response("200 OK", [("Content-Type", "text/html")])
    return [b"<!doctype html><title>client</title><p>client</p>"]


@pytest.fixture
def client(live_server, demo):
    """The demo client, with a redirect URI served locally (Chromium must land somewhere)."""
    from idp.demo import seed

    url, stop = serve_wsgi_app(client_landing)
    with live_server.app.app_context():
        seed(rp_url=url)
    yield {**demo, "url": url, "redirect_uri": f"{url}/callback"}
    stop()


@pytest.fixture
def page(browser_page):
    browser_page.on("pageerror", lambda exc: pytest.fail(f"page error: {exc}"))
    return browser_page


def sign_in_with_password(page, demo) -> None:
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.locator("form[action='/login'] button[type='submit']").click()


def sign_in_with_totp(page, live_server, demo, clock) -> None:
    page.goto(f"{live_server.url}/login")
    sign_in_with_password(page, demo)
    page.wait_for_url("**/login/totp")
    page.fill("input[name='code']", totp_now(demo["totp_secret"], clock))
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.wait_for_url("**/account")


def add_key(page, live_server, name: str) -> None:
    page.goto(f"{live_server.url}/account")
    page.locator("a[href='/account/webauthn/add']").click()
    page.fill("input[name='name']", name)
    page.click("#webauthn-register")
    page.wait_for_url("**/account?done=added")
    assert page.locator("#webauthn-credentials .credential-name").all_text_contents() == [name]


def sign_out(page, live_server) -> None:
    page.goto(f"{live_server.url}/logout")
    page.locator("form[action='/logout'] button").click()
    page.wait_for_load_state()


def client_for(live_server, client) -> RelyingParty:
    return RelyingParty(
        live_server.url, client["client_id"], client["client_secret"], client["redirect_uri"]
    )


def finish_at_client(page, rp: RelyingParty, client) -> dict:
    page.wait_for_url(client["url"] + "/**")
    token = rp.exchange(page.url)
    return rp.verify_id_token(token["id_token"], client["client_id"])["claims"]


def stored_credentials(live_server) -> list[WebAuthnCredential]:
    with live_server.app.app_context():
        db = get_db()
        found = list(db.execute(select(WebAuthnCredential)).scalars())
        db.expunge_all()
        return found


def test_security_key_enrolled_then_used_after_the_password(page, live_server, demo, client, clock):
    cdp, authenticator = add_virtual_authenticator(page, transport="usb", resident_key=False)
    sign_in_with_totp(page, live_server, demo, clock)
    add_key(page, live_server, "Clé USB")
    [stored] = stored_credentials(live_server)
    assert stored.transports == "usb" and stored.name == "Clé USB"
    assert [c["credentialId"] for c in get_credentials(cdp, authenticator)]
    sign_out(page, live_server)

    rp = client_for(live_server, client)
    page.goto(rp.authorization_url())
    sign_in_with_password(page, demo)
    page.wait_for_url("**/login/webauthn")
    assert page.locator("#try-another-method").is_visible()  # another factor is at hand
    page.click("#webauthn-start")
    claims = finish_at_client(page, rp, client)
    assert claims["amr"] == ["pwd", "swk", "user", "mfa"]
    assert claims["acr"] == "phr"
    assert stored_credentials(live_server)[0].last_used_at is not None


def test_passkey_button_signs_in_without_password(page, live_server, demo, client, clock):
    add_virtual_authenticator(page, transport="internal", resident_key=True)
    sign_in_with_totp(page, live_server, demo, clock)
    add_key(page, live_server, "Ordinateur du cabinet")
    sign_out(page, live_server)

    page.add_init_script(NO_AUTOFILL)  # the button path, not the autofill one
    rp = client_for(live_server, client)
    page.goto(rp.authorization_url())
    page.click("#passkey-login")
    claims = finish_at_client(page, rp, client)
    assert claims["amr"] == ["swk", "user", "mfa"]
    assert claims["acr"] == "phr"


def test_passkey_autofill_signs_in_from_the_login_page(page, live_server, demo, client, clock):
    add_virtual_authenticator(page, transport="internal", resident_key=True)
    sign_in_with_totp(page, live_server, demo, clock)
    add_key(page, live_server, "Téléphone")
    sign_out(page, live_server)

    rp = client_for(live_server, client)
    page.goto(rp.authorization_url())
    # Conditional mediation starts on load; the virtual authenticator picks the passkey.
    claims = finish_at_client(page, rp, client)
    assert claims["amr"] == ["swk", "user", "mfa"] and claims["acr"] == "phr"


def test_client_asking_for_phr_steps_up_a_totp_session(page, live_server, demo, client, clock):
    """Signed in with a code, asked for phr: one short page says why and offers the key,
    no password; the practitioner touches it and the application gets phr."""
    add_virtual_authenticator(page, transport="usb", resident_key=False)
    sign_in_with_totp(page, live_server, demo, clock)
    add_key(page, live_server, "Clé USB")

    plain = client_for(live_server, client)
    page.goto(plain.authorization_url())
    assert finish_at_client(page, plain, client)["acr"] == "substantial"  # the TOTP session

    strict = client_for(live_server, client)
    page.goto(strict.authorization_url(acr_values="phr"))
    page.wait_for_url("**/login/reauthenticate")  # stepped up, not silently accepted
    assert "requires a phishing-resistant sign-in" in page.inner_text("#reauthenticate")
    assert page.locator("input[name='password']").count() == 0
    assert page.locator("#confirm-totp").count() == 0  # only factors that reach phr
    page.click("#confirm-webauthn")
    claims = finish_at_client(page, strict, client)
    assert claims["acr"] == "phr" and claims["amr"] == ["pwd", "swk", "user", "mfa"]


def test_step_up_given_up_keeps_the_session(page, live_server, demo, client, clock):
    add_virtual_authenticator(page, transport="usb", resident_key=False)
    sign_in_with_totp(page, live_server, demo, clock)
    strict = client_for(live_server, client)
    page.goto(strict.authorization_url(acr_values="phr"))
    page.wait_for_url("**/login/reauthenticate")
    assert page.locator("#confirm-none").is_visible()  # the code does not reach phr
    page.click("#confirm-cancel")
    page.wait_for_url(client["url"] + "/**")
    assert "error=unmet_authentication_requirements" in page.url
    page.goto(f"{live_server.url}/account")
    assert page.url.endswith("/account")  # still signed in, as before


def test_a_stale_session_confirms_a_new_key_with_a_passkey(page, live_server, demo, clock):
    """A factor change after 5 minutes: the short page, the passkey, back to the change."""
    add_virtual_authenticator(page, transport="internal", resident_key=True)
    sign_in_with_totp(page, live_server, demo, clock)
    add_key(page, live_server, "Téléphone")
    clock.advance(6 * 60)
    page.goto(f"{live_server.url}/account")
    page.locator("a[href='/account/webauthn/add']").click()
    page.wait_for_url("**/login/reauthenticate")
    assert "To add a security key or passkey" in page.inner_text("#reauthenticate")
    assert page.locator("input[name='password']").count() == 0
    assert page.locator(".signing-in-name").inner_text() == "Camille Martin"
    page.click("#confirm-webauthn")
    page.wait_for_url("**/account/webauthn/add")  # back to the change, now allowed
    assert page.locator("#webauthn-register").is_enabled()


def test_the_login_page_explains_a_step_up_before_the_password(page, live_server, demo, client):
    """Anonymous, asked for phr: the reason and the passkey first, the password after."""
    add_virtual_authenticator(page, transport="internal", resident_key=True)
    page.add_init_script(NO_AUTOFILL)
    strict = client_for(live_server, client)
    page.goto(strict.authorization_url(acr_values="phr"))
    page.wait_for_url("**/login")
    why = page.locator("#requires-level-why")
    assert "requires a phishing-resistant sign-in" in why.inner_text()
    passkey = page.locator("#passkey-login").bounding_box()
    password = page.locator("input[name='password']").bounding_box()
    assert passkey["y"] < password["y"]  # the method that reaches the level comes first
    assert "secondary" not in (page.locator("#passkey-login").get_attribute("class") or "")


def test_removed_passkey_no_longer_signs_in(page, live_server, demo, clock):
    add_virtual_authenticator(page, transport="internal", resident_key=True)
    sign_in_with_totp(page, live_server, demo, clock)
    add_key(page, live_server, "Ancien portable")
    page.locator("#webauthn-credentials li details.confirm summary").click()  # asks first
    page.locator("#webauthn-credentials li form[action$='/remove'] button").click()
    page.wait_for_url("**/account?done=removed")
    assert page.locator("#webauthn-credentials").count() == 0
    [stored] = stored_credentials(live_server)
    assert stored.removed_at is not None  # kept, dated (NIST-12)
    with live_server.app.app_context():
        removed = get_db().execute(
            select(AuditEvent).where(AuditEvent.event == "account:two_factor:method_removed")
        )
        assert removed.scalar_one().details["method"] == "webauthn"
    sign_out(page, live_server)

    page.add_init_script(NO_AUTOFILL)
    page.goto(f"{live_server.url}/login")
    page.click("#passkey-login")
    page.wait_for_selector("p.alert[role='alert']")
    assert page.url.endswith("/login/passkey")
    assert page.locator("input[name='password']").is_visible()  # the password path remains


def test_refused_verification_says_so_and_offers_the_app_code(page, live_server, demo, clock):
    cdp, authenticator = add_virtual_authenticator(page, transport="usb", resident_key=False)
    sign_in_with_totp(page, live_server, demo, clock)
    add_key(page, live_server, "Clé USB")
    sign_out(page, live_server)

    page.goto(f"{live_server.url}/login")
    sign_in_with_password(page, demo)
    page.wait_for_url("**/login/webauthn")
    set_user_verified(cdp, authenticator, verified=False)
    page.click("#webauthn-start")
    message = page.locator("[data-webauthn-message]")
    message.wait_for(state="visible")
    assert message.get_attribute("data-webauthn-state") == "cancelled"
    assert page.locator("#webauthn-start").is_enabled()
    page.click("#try-another-method")
    page.wait_for_url("**/login/methods")
    choices = page.locator("#method-list a.method")
    assert [choices.nth(i).get_attribute("id") for i in range(choices.count())] == [
        "method-webauthn",
        "method-totp",
    ]
    page.click("#method-totp")
    page.wait_for_url("**/login/totp")
    clock.advance(30)  # the next time step: the enrolment code cannot be replayed
    page.fill("input[name='code']", totp_now(demo["totp_secret"], clock))
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.wait_for_url("**/account")
