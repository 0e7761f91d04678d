"""Onboarding in a real Chromium: the operator invites, the invitation arrives by email on a
real SMTP server (aiosmtpd), the practitioner opens its link, chooses a password, binds a
passkey, keeps the ten recovery codes shown once, and signs in again with the passkey alone."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from idp import mail
from idp.accounts import service
from idp.db import dispose as dispose_app
from idp.db import get_db
from idp.models import Practitioner, PractitionerStatus
from tests.support.browser import (  # noqa: F401  (fixtures are found by name)
    add_virtual_authenticator,
    browser_page_fixture,
    chromium_browser_fixture,
)
from tests.support.smtp import app_mailing_to, text_of

pytestmark = pytest.mark.browser

LINK = re.compile(r"https?://[^\s<>\"']+/enrol/[^\s<>\"']+")


@pytest.fixture
def app(database_url, tmp_path, clock, smtp_server):
    """The IdP, sending its mail to the local SMTP server."""
    application = app_mailing_to(smtp_server, database_url, tmp_path, clock)
    yield application
    dispose_app(application)


def invite(live_server, smtp_server) -> str:
    """What ``idp practitioner invite`` does, then one pass of the mail sender: the link as
    the practitioner reads it in their mailbox."""
    with live_server.app.app_context():
        db = get_db()
        clock = live_server.app.extensions["idp.clock"]
        invited = service.create_practitioner(
            db,
            rpps="10003456786",
            given_name="Camille",
            family_name="Durand",
            profession_code="10",
            email="camille.durand@example.test",
            clock=clock,
        )
        service.create_invitation(db, practitioner=invited, clock=clock)
        db.commit()
    assert mail.deliver_app(live_server.app).sent == 1
    [message] = smtp_server.wait_for(1)
    assert message["To"] == "camille.durand@example.test"
    [link] = LINK.findall(text_of(message))
    return link


def test_invitation_email_to_a_passkey_sign_in(browser_page, live_server, smtp_server):
    page = browser_page
    add_virtual_authenticator(page, transport="internal", resident_key=True)
    page.add_init_script(
        "delete PublicKeyCredential.isConditionalMediationAvailable;"
    )  # the button
    link = invite(live_server, smtp_server)
    assert link.startswith(live_server.url)

    page.goto(link)
    page.wait_for_url(re.compile(r"/enrol$"))  # the token is in no later URL
    password = "the lighthouse keeper's long sentence"
    page.fill("input[name='password']", password)
    page.fill("input[name='confirm']", password)
    page.locator("form:has(input[name='confirm']) button[type='submit']").click()

    # The phishing-resistant factor is offered first.
    page.wait_for_url(re.compile(r"/enrol/totp$"))
    headings = page.locator("main h2").all_inner_texts()
    assert headings[0].startswith("A security key or passkey")
    page.click("#enrol-webauthn")

    # Ten recovery codes, shown once, before anything else.
    page.wait_for_url(re.compile(r"/account/recovery/codes/new$"))
    codes = page.locator("#recovery-codes code").all_inner_texts()
    assert len(codes) == 10 and all(re.fullmatch(r"(\w{4}-){3}\w{4}", c) for c in codes)
    page.locator("#recovery-saved").click()
    page.wait_for_url(re.compile(r"/account$"))
    assert "Camille" in page.inner_text("body")

    with live_server.app.app_context():
        found = get_db().execute(select(Practitioner)).scalar_one()
        assert found.status == PractitionerStatus.ACTIVE

    # The invitation was used: its link leads nowhere now.
    page.goto(f"{live_server.url}/logout")
    page.locator("form[action='/logout'] button").click()
    page.wait_for_load_state()
    reopened = page.goto(link)
    assert reopened.status == 404

    # Back with the passkey alone.
    page.goto(f"{live_server.url}/login")
    page.click("#passkey-login")
    page.wait_for_url(re.compile(r"/account$"))
    assert "Camille" in page.inner_text("body")
