"""The account page's sessions in a real Chromium: two browsers signed in to one account, one
signs the other out from the page (both pages are scanned by axe-core)."""

from __future__ import annotations

import pyotp
import pytest

from tests.support.browser import (  # noqa: F401  (fixtures are found by name)
    browser_page_fixture,
    chromium_browser_fixture,
    scanned_page,
)

pytestmark = pytest.mark.browser


def sign_in(page, base: str, demo, clock) -> None:
    clock.advance(30)  # a new TOTP step: each one is single-use
    page.goto(base + "/account")
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.locator("form[action='/login'] button[type='submit']").click()
    page.locator("input[name='code']").fill(pyotp.TOTP(demo["totp_secret"]).at(clock.now()))
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.wait_for_url(base + "/account")


def test_a_practitioner_signs_out_their_other_browser_from_the_account_page(
    browser_page, chromium_browser, live_server, demo, clock
):
    base = live_server.url
    sign_in(browser_page, base, demo, clock)
    with scanned_page(chromium_browser) as other:
        sign_in(other, base, demo, clock)
        browser_page.reload()
        sessions = browser_page.locator("#session-list > li")
        assert sessions.count() == 2
        assert browser_page.locator("#session-list > li[data-current]").count() == 1
        elsewhere = browser_page.locator("#session-list > li:not([data-current])")
        elsewhere.get_by_text("Sign out this session").click()
        elsewhere.get_by_role("button", name="Confirm sign-out").click()
        browser_page.wait_for_url(base + "/account?done=session_ended#sessions")
        assert browser_page.get_by_role("status").inner_text() == "That session is signed out."
        assert browser_page.locator("#session-list > li").count() == 1
        other.goto(base + "/account")
        assert other.url.startswith(base + "/login")
        browser_page.goto(base + "/account")
        assert browser_page.url == base + "/account"
        browser_page.get_by_role("link", name="See your security history").click()
        assert browser_page.locator("#activity > li").count() >= 3
        browser_page.goto(base + "/account/password")
        assert browser_page.get_by_label("Current password").is_visible()
