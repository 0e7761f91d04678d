"""The whole password + TOTP journey in a real Chromium, from the demo app and back."""

from __future__ import annotations

import re
import socket
import threading

import pyotp
import pytest
from werkzeug.serving import make_server

from tests.support.browser import (  # noqa: F401  (fixtures are found by name)
    browser_page_fixture,
    chromium_browser_fixture,
    scan_origin,
)

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo_rp(live_server, monkeypatch):
    from idp.demo import seed
    from idp.demo_rp import create_rp_app

    port = free_port()
    rp_url = f"http://localhost:{port}"
    with live_server.app.app_context():
        demo = seed(rp_url=rp_url)
    for name, value in {
        "IDP_ISSUER": live_server.url,
        "DEMO_RP_URL": rp_url,
        "DEMO_RP_CLIENT_ID": demo["client_id"],
        "DEMO_RP_CLIENT_SECRET": demo["client_secret"],
    }.items():
        monkeypatch.setenv(name, value)
    server = make_server("127.0.0.1", port, create_rp_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    unscan = scan_origin(rp_url)  # the demo application's pages are scanned too
    yield rp_url, demo
    unscan()
    server.shutdown()


def test_login_with_totp_in_a_browser(browser_page, demo_rp, clock):
    rp_url, demo = demo_rp
    page = browser_page
    page.goto(rp_url)
    page.get_by_role("link", name="Se connecter", exact=True).click()
    page.wait_for_selector("input[autocomplete~='username']")
    assert page.locator("input[name='password']").get_attribute("autocomplete") == (
        "current-password"
    )
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.locator("form[action='/login'] button[type='submit']").click()
    code_input = page.locator("input[name='code']")
    code_input.wait_for()
    assert code_input.get_attribute("autocomplete") == "one-time-code"
    assert code_input.get_attribute("inputmode") == "numeric"
    code_input.fill(pyotp.TOTP(demo["totp_secret"]).at(clock.now()))
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.wait_for_url(f"{rp_url}/")
    body = page.inner_text("body")
    assert "Camille Martin" in body and "substantial" in body and demo["username"] in body


def test_pages_are_french_by_default_and_switch_to_english(browser_page, live_server):
    page = browser_page
    page.context.set_extra_http_headers({"Accept-Language": "fr-FR,fr;q=0.9"})
    page.goto(f"{live_server.url}/login")
    assert page.locator("h1").inner_text() == "Connexion"
    page.get_by_text("English").click()
    assert page.locator("h1").inner_text() == "Sign in"
    page.goto(f"{live_server.url}/login")  # the choice is remembered
    assert page.locator("h1").inner_text() == "Sign in"


def test_not_you_starts_over_and_returns_to_the_application(browser_page, demo_rp, clock):
    rp_url, demo = demo_rp
    page = browser_page
    page.goto(rp_url)
    page.get_by_role("link", name="Se connecter", exact=True).click()
    page.wait_for_selector("input[autocomplete~='username']")
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.locator("form[action='/login'] button[type='submit']").click()
    page.locator("input[name='code']").wait_for()
    who = page.locator("section.signing-in")
    assert "Camille Martin" in who.inner_text() and "100•••••009" in who.inner_text()
    assert demo["username"] not in page.inner_text("body")
    page.get_by_role("button", name=re.compile("^(Not you|Pas vous)")).click()
    page.wait_for_url(re.compile(r"/login$"))
    assert page.locator("section.signing-in").count() == 0
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.locator("form[action='/login'] button[type='submit']").click()
    code_input = page.locator("input[name='code']")
    code_input.wait_for()
    code_input.fill(pyotp.TOTP(demo["totp_secret"]).at(clock.now()))
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.wait_for_url(f"{rp_url}/")
    assert "Camille Martin" in page.inner_text("body")


def test_switching_language_on_the_second_step_keeps_the_login(browser_page, demo_rp, clock):
    rp_url, demo = demo_rp
    page = browser_page
    page.context.set_extra_http_headers({"Accept-Language": "fr-FR,fr;q=0.9"})
    page.goto(rp_url)
    page.get_by_role("link", name="Se connecter", exact=True).click()
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.locator("form[action='/login'] button[type='submit']").click()
    page.locator("input[name='code']").wait_for()
    second_step = page.url
    assert page.locator("html").get_attribute("lang") == "fr"
    page.get_by_text("English").click()
    page.wait_for_load_state()
    assert page.url == second_step
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_text("Français").is_visible()
    page.locator("input[name='code']").fill(pyotp.TOTP(demo["totp_secret"]).at(clock.now()))
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.wait_for_url(f"{rp_url}/")
    assert demo["username"] in page.inner_text("body")
