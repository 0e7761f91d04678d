"""Pages a practitioner meets when things do not go straight, in a real Chromium: an error page
(French, a reference that support finds in the log, a way back that works), the demo app's
page for an error sent back by the IdP (readable, with a retry), and the language switch in
the middle of a consent (the same request, approved in English, gives the client its code)."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
from sqlalchemy import select

from idp.auth.error_pages import ALPHABET, REFERENCE_LENGTH
from idp.db import get_db
from idp.models import OAuthClient
from tests.support.browser import (  # noqa: F401  (fixtures are found by name)
    browser_page_fixture,
    chromium_browser_fixture,
)
from tests.support.oidc import RelyingParty

pytestmark = pytest.mark.browser

FRENCH = {"Accept-Language": "fr-FR,fr;q=0.9"}
REFERENCE = re.compile(rf"^[{ALPHABET}]{{{REFERENCE_LENGTH}}}$")


def authorize_url(live_server, demo, *, redirect_uri: str | None = None, **overrides) -> str:
    """A request as the demo client would send it (PKCE, state, nonce), with ``overrides``."""
    rp = RelyingParty(
        live_server.url,
        demo["client_id"],
        demo["client_secret"],
        redirect_uri or demo["redirect_uri"],
    )
    params = {k: v[0] for k, v in parse_qs(urlsplit(rp.authorization_url()).query).items()}
    params.update(overrides)
    return f"{live_server.url}/authorize?{urlencode(params)}"


def shown_reference(page) -> str:
    """The reference printed on the error page, checked for its shape."""
    reference = page.locator(".error-reference code").inner_text().strip()
    assert REFERENCE.match(reference), reference
    return reference


def logged_lines(caplog, reference: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if reference in r.getMessage()]


def require_consent(live_server, client_id: str) -> None:
    """The demo client is seeded without consent; these journeys need the consent page."""
    with live_server.app.app_context():
        db = get_db()
        client = db.execute(
            select(OAuthClient).where(OAuthClient.client_id == client_id)
        ).scalar_one()
        client.require_consent = True
        db.commit()


def sign_in_from_the_demo_app(page, rp_url: str, demo, clock) -> None:
    """Demo app → IdP login → password → TOTP code: stops wherever the IdP goes next."""
    page.goto(rp_url)
    page.get_by_role("link", name="Se connecter", exact=True).click()
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.locator("form[action='/login'] button[type='submit']").click()
    page.locator("input[name='code']").fill(pyotp.TOTP(demo["totp_secret"]).at(clock.now()))
    page.locator("form[action='/login/totp'] button[type='submit']").click()


def consent_fields(page) -> dict[str, str]:
    """The authorization request the consent form carries (without its CSRF token)."""
    form = page.locator("form[action='/authorize']")
    fields = {}
    for hidden in form.locator("input[type='hidden']").all():
        name = hidden.get_attribute("name")
        if name != "csrf_token":
            fields[name] = hidden.get_attribute("value")
    return fields


# --------------------------------------------------------------------------- error pages


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"client_id": "nobody"}, "unknown_client"),
        ({"redirect_uri": "https://evil.example/cb"}, "unregistered_redirect_uri"),
    ],
    ids=["unknown-client", "unregistered-redirect-uri"],
)
def test_an_error_page_is_french_with_a_logged_reference_and_leads_to_the_login(
    browser_page, live_server, demo, caplog, overrides, code
):
    caplog.set_level(logging.INFO)
    page = browser_page
    page.context.set_extra_http_headers(FRENCH)
    response = page.goto(authorize_url(live_server, demo, **overrides))
    assert response.status == 400
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.locator("h1").inner_text() == "Un problème est survenu"
    assert page.get_by_role("alert").is_visible()
    assert "Référence à donner au support" in page.locator(".error-reference").inner_text()
    reference = shown_reference(page)
    logged = logged_lines(caplog, reference)
    assert len(logged) == 1 and f"code={code}" in logged[0] and "status=400" in logged[0]
    links = [a.get_attribute("href") for a in page.locator("main a").all()]
    assert links == ["/account"]  # never a link to the unregistered address
    # The address is not registered for a known client: the way back is the account page,
    # which sends a visitor who is not signed in to a working login.
    back = page.locator("main").get_by_role("link", name="Aller à mon compte")
    assert back.get_attribute("href") == "/account"
    back.click()
    page.wait_for_url(re.compile(r"/login$"))
    assert page.locator("h1").inner_text() == "Connexion"
    assert page.locator("input[name='identifier']").is_visible()


def test_an_error_page_leads_back_to_the_application_when_its_address_is_registered(
    browser_page, live_server, demo_rp, caplog
):
    """A repeated parameter is refused before anything else: the request names the demo
    client and its registered address, so the way back is the demo app itself."""
    caplog.set_level(logging.INFO)
    rp_url, demo = demo_rp
    page = browser_page
    page.context.set_extra_http_headers(FRENCH)
    response = page.goto(authorize_url(live_server, demo) + "&scope=openid")
    assert response.status == 400
    assert page.locator("html").get_attribute("lang") == "fr"
    reference = shown_reference(page)
    assert any("code=repeated_parameter" in line for line in logged_lines(caplog, reference))
    back = page.locator("main").get_by_role("link", name="Retour à Appli de démonstration")
    assert back.get_attribute("href") == f"{rp_url}/"
    back.click()
    page.wait_for_url(f"{rp_url}/")
    assert page.get_by_role("link", name="Se connecter", exact=True).is_visible()


# --------------------------------------------------------------------------- demo app


def test_a_refused_consent_is_a_readable_french_page_in_the_demo_app_with_a_retry(
    browser_page, demo_rp, live_server, clock
):
    rp_url, demo = demo_rp
    require_consent(live_server, demo["client_id"])
    page = browser_page
    page.context.set_extra_http_headers(FRENCH)
    sign_in_from_the_demo_app(page, rp_url, demo, clock)
    page.get_by_role("button", name="Refuser").click()
    page.wait_for_url(re.compile(re.escape(f"{rp_url}/callback?")))
    callback = parse_qs(urlsplit(page.url).query)
    assert callback["error"] == ["access_denied"] and callback["state"]
    assert callback["iss"] == [live_server.url]
    assert page.locator("html").get_attribute("lang") == "fr"
    alert = page.get_by_role("alert")
    assert alert.locator("h2").inner_text() == "La connexion n'a pas abouti"
    assert "L'accès a été refusé" in alert.inner_text()
    assert "access_denied" in alert.inner_text()
    assert "Traceback" not in page.content()
    # Retry: the IdP session is still there, so only the consent is asked again.
    page.get_by_role("link", name="Réessayer").click()
    page.get_by_role("button", name="Autoriser").click()
    page.wait_for_url(f"{rp_url}/")
    assert "Bonjour Camille Martin" in page.locator("h2").inner_text()


# --------------------------------------------------------------------------- language switch


def test_switching_language_on_the_consent_page_keeps_the_request_and_gives_the_code(
    browser_page, demo_rp, live_server, clock
):
    rp_url, demo = demo_rp
    require_consent(live_server, demo["client_id"])
    page = browser_page
    page.context.set_extra_http_headers(FRENCH)
    callbacks: list[str] = []
    page.on(
        "request",
        lambda request: (
            callbacks.append(request.url) if request.url.startswith(f"{rp_url}/callback") else None
        ),
    )
    sign_in_from_the_demo_app(page, rp_url, demo, clock)
    approve = page.get_by_role("button", name="Autoriser")
    approve.wait_for()
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.locator("h1").inner_text() == (
        "Autoriser Appli de démonstration à accéder à vos informations ?"
    )
    consent_url, request_before = page.url, consent_fields(page)
    assert "/authorize?" in consent_url and request_before["state"]

    page.locator("nav.lang").get_by_role("link", name="English").click()
    page.wait_for_load_state()
    assert page.url == consent_url
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").inner_text() == (
        "Allow Appli de démonstration to access your information?"
    )
    assert consent_fields(page) == request_before
    assert page.locator("nav.lang").get_by_role("link", name="Français").is_visible()

    page.get_by_role("button", name="Allow", exact=True).click()
    page.wait_for_url(f"{rp_url}/")
    assert len(callbacks) == 1
    answer = parse_qs(urlsplit(callbacks[0]).query)
    assert answer["code"] and answer["state"] == [request_before["state"]]
    assert "error" not in answer
    assert "Camille Martin" in page.inner_text("body")
    assert demo["username"] in page.inner_text("body")
