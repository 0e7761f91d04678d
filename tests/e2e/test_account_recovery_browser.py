"""Every factor lost, in a real Chromium: the request from the help page, two operators'
approvals, the cooling-off, then the link, a new password and a new authenticator app."""

from __future__ import annotations

import re

import pyotp
import pytest

from idp.accounts import recovery
from idp.db import get_db
from idp.services import cipher, settings
from tests.support import factories
from tests.support.browser import (  # noqa: F401  (fixtures are found by name)
    browser_page_fixture,
    chromium_browser_fixture,
)

pytestmark = pytest.mark.browser


def test_recovery_from_the_help_page_to_a_new_authenticator(browser_page, live_server, clock):
    app = live_server.app
    with app.app_context():
        db = get_db()
        owner = factories.practitioner(db, clock, email="ines.morel@example.fr", given_name="Inès")
        factories.totp_device(db, clock, owner, cipher=cipher())  # the phone that was lost
        db.commit()
        rpps = owner.rpps
    page = browser_page
    page.goto(f"{live_server.url}/login")
    page.locator("a[href='/login/help']").first.click()
    page.locator("#request-recovery").click()
    page.fill("input[name='rpps']", rpps)
    page.fill("input[name='email']", "ines.morel@example.fr")
    page.fill("textarea[name='message']", "My phone was stolen")
    page.locator("form:has(input[name='rpps']) button[type='submit']").click()
    reference = page.locator("#recovery-filed").get_attribute("data-reference")
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", reference)
    assert reference in page.locator("#recovery-filed").inner_text()

    with app.app_context():  # two operators, after checking who she is
        rules = recovery.Rules.of(settings())
        recovery.approve(get_db(), reference, operator="alice", rules=rules, now=clock.now())
        link = recovery.approve(
            get_db(), reference, operator="bob", rules=rules, now=clock.now()
        ).link
    page.goto(link)
    assert page.locator("#recovery-waiting").is_visible()
    assert page.url.endswith("/recover")  # the token is in no later URL
    clock.advance(hours=24)

    page.goto(link)
    page.locator("#start-recovery").click()
    page.wait_for_url(re.compile(r"/enrol$"))
    password = "a completely new long password"
    page.fill("input[name='password']", password)
    page.fill("input[name='confirm']", password)
    page.locator("form:has(input[name='confirm']) button[type='submit']").click()
    secret = page.locator("code.secret").inner_text().replace(" ", "")
    page.fill("input[name='code']", pyotp.TOTP(secret).at(clock.now()))
    page.locator("form:has(input[name='code']) button[type='submit']").click()
    page.wait_for_url(re.compile(r"/account/recovery/codes/new$"))  # a new set of codes
    page.locator("#recovery-saved").click()
    page.wait_for_url(re.compile(r"/account$"))
    assert "Inès" in page.inner_text("body")
    assert page.locator("#recovery-banner").count() == 0


def test_recovery_cancelled_from_a_remaining_factor(browser_page, live_server, clock):
    """Someone else asked for the recovery; the practitioner still has her phone, signs in with
    it during the cooling-off and cancels it from her account page: the link is dead."""
    app = live_server.app
    with app.app_context():
        db = get_db()
        owner = factories.practitioner(db, clock, email="ines.morel@example.fr", given_name="Inès")
        _device, secret = factories.totp_device(db, clock, owner, cipher=cipher())
        db.commit()
        rpps = owner.rpps
    page = browser_page
    page.goto(f"{live_server.url}/login/recovery-request")
    page.fill("input[name='rpps']", rpps)
    page.fill("input[name='email']", "ines.morel@example.fr")
    page.locator("form:has(input[name='rpps']) button[type='submit']").click()
    reference = page.locator("#recovery-filed").get_attribute("data-reference")
    with app.app_context():
        rules = recovery.Rules.of(settings())
        recovery.approve(get_db(), reference, operator="alice", rules=rules, now=clock.now())
        link = recovery.approve(
            get_db(), reference, operator="bob", rules=rules, now=clock.now()
        ).link
    clock.advance(hours=2)  # within the cooling-off

    page.goto(f"{live_server.url}/login")
    page.fill("input[name='identifier']", rpps)
    page.fill("input[name='password']", factories.PASSWORD)
    page.locator("form[action='/login'] button[type='submit']").click()
    page.wait_for_url(re.compile(r"/login/totp$"))
    page.fill("input[name='code']", pyotp.TOTP(secret).at(clock.now()))
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.wait_for_url(re.compile(r"/account$"))
    banner = page.locator("#recovery-banner")
    assert reference in banner.inner_text()
    page.locator("#cancel-recovery").click()
    page.wait_for_load_state()
    page.goto(f"{live_server.url}/account")
    assert page.locator("#recovery-banner").count() == 0

    clock.advance(hours=24)  # after the delay, the link of a cancelled request stays dead
    assert page.goto(link).status == 404
