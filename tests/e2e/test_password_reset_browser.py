"""'Forgot your password?' in a real Chromium: the link from the login page, the emailed link
(its token taken from the service, the email itself is tested elsewhere), the authenticator
code, the new password, then a sign-in with it."""

from __future__ import annotations

import pyotp
import pytest

from idp.accounts import password_reset
from idp.db import get_db
from idp.services import methods, settings, throttle
from tests.support.browser import (  # noqa: F401  (fixtures are found by name)
    browser_page_fixture,
    chromium_browser_fixture,
)

pytestmark = pytest.mark.browser

NEW_PASSWORD = "cheval agrafe batterie"


def test_forgotten_password_link_then_code_then_new_password(
    browser_page, live_server, demo, clock
):
    page = browser_page
    page.goto(f"{live_server.url}/login")
    page.locator("#forgot-password").click()
    page.wait_for_url(f"{live_server.url}/login/forgot")
    page.fill("input[name='identifier']", demo["username"])
    page.locator("#send-reset-link").click()
    page.locator("#reset-link-sent").wait_for()
    with live_server.app.app_context():
        db = get_db()
        token = password_reset.request_reset(
            db,
            demo["username"],
            ip="192.0.2.10",
            throttle=throttle(),
            methods=methods(),
            now=clock.now(),
            issuer=settings().issuer,
        )
        db.commit()
    page.goto(f"{live_server.url}/password/reset/{token}")
    page.wait_for_url(f"{live_server.url}/login/totp")  # the token left the address bar
    page.fill("input[name='code']", pyotp.TOTP(demo["totp_secret"]).at(clock.now()))
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.wait_for_url(f"{live_server.url}/password/new")
    page.fill("input[name='password']", NEW_PASSWORD)
    page.fill("input[name='confirm']", NEW_PASSWORD)
    page.locator("#save-new-password").click()
    page.wait_for_url(f"{live_server.url}/password/changed")
    page.locator("#sign-in-again").click()
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", NEW_PASSWORD)
    page.locator("form[action='/login'] button[type='submit']").click()
    page.locator("input[name='code']").wait_for()  # the new password opened the second step
