"""Recovery codes in a real Chromium: the codes shown at enrolment (Download, Print), and a
recovery-code login that adds a new authenticator app, then signs out."""

from __future__ import annotations

import re

import pyotp
import pytest
from sqlalchemy import select

from idp.db import get_db
from idp.models import Practitioner
from idp.services import clock as app_clock
from idp.services import methods
from tests.support import factories
from tests.support.browser import (  # noqa: F401  (fixtures are found by name)
    browser_page_fixture,
    chromium_browser_fixture,
)

pytestmark = pytest.mark.browser


def test_the_codes_are_shown_at_enrolment_with_download_and_print(browser_page, live_server, clock):
    with live_server.app.app_context():
        db = get_db()
        _invitee, token = factories.invited(db, app_clock(), given_name="Léa")
        db.commit()
    page = browser_page
    page.context.set_extra_http_headers({"Accept-Language": "en"})
    page.goto(f"{live_server.url}/enrol/{token}")
    page.fill("input[name='password']", "un mot de passe assez long")
    page.fill("input[name='confirm']", "un mot de passe assez long")
    page.get_by_role("button", name="Continue").click()
    secret = page.locator("code.secret").inner_text().replace(" ", "")
    page.fill("input[name='code']", pyotp.TOTP(secret).at(clock.now()))
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(re.compile(r"/account/recovery/codes/new$"))
    codes = page.locator("#recovery-codes li code").all_inner_texts()
    assert len(codes) == 10 and all(re.fullmatch(r"([A-Z2-9]{4}-){3}[A-Z2-9]{4}", c) for c in codes)
    download = page.locator("#recovery-download")
    assert download.get_attribute("download") == "recovery-codes.txt"
    assert download.get_attribute("href").startswith("data:text/plain")
    with page.expect_download() as saved:
        download.click()
    assert all(code in open(saved.value.path(), encoding="utf-8").read() for code in codes)
    printer = page.locator("#recovery-print")
    assert printer.is_visible()  # wired by its script: the page has no inline script
    page.evaluate("() => { window.printed = 0; window.print = () => { window.printed += 1; }; }")
    printer.click()
    assert page.evaluate("window.printed") == 1
    page.emulate_media(media="print")
    assert not page.locator("#recovery-saved").is_visible()  # paper holds only the codes
    assert page.locator("#recovery-codes").is_visible()
    page.emulate_media(media="screen")
    page.get_by_role("button", name="I have saved my codes").click()
    page.wait_for_url(re.compile(r"/account$"))
    assert "10 recovery codes left" in page.inner_text("body")


def test_a_recovery_code_login_adds_an_app_then_signs_out(browser_page, live_server, demo, clock):
    with live_server.app.app_context():
        db = get_db()
        pid = db.execute(
            select(Practitioner.id).where(Practitioner.rpps == demo["username"])
        ).scalar()
        codes = methods()["recovery"].issue(db, pid, now=app_clock().now(), reason="test")
        db.commit()
    page = browser_page
    page.context.set_extra_http_headers({"Accept-Language": "en"})
    page.goto(f"{live_server.url}/login")
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.locator("form[action='/login'] button[type='submit']").click()
    page.get_by_role("link", name="Use a recovery code").click()
    page.fill("input[name='code']", codes[0].lower())
    page.locator("#recovery-submit").click()
    page.wait_for_url(re.compile(r"/account/recovery$"))
    assert "You signed in with a recovery code" in page.inner_text("body")
    assert "9 recovery codes left" in page.inner_text("body")
    clock.advance(5)
    page.locator("#recovery-add-totp").click()
    page.locator("#totp-start").click()
    secret = page.locator("code.secret").inner_text().replace(" ", "")
    page.fill("input[name='code']", pyotp.TOTP(secret).at(clock.now()))
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(re.compile(r"/account/recovery$"))
    assert page.locator("#recovery-added").is_visible()
    page.locator("#recovery-sign-out").click()
    page.goto(f"{live_server.url}/account")
    page.wait_for_url(re.compile(r"/login"))
