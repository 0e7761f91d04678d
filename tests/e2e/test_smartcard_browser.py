"""CPS card login in real Chromium: the IdP page calls the real agent bridge (a thread on
127.0.0.1, the card a SoftHSM2 token) across origins (CORS preflight for the JSON POST), and the
PIN never reaches the IdP. Terminal mode: the page polls and finishes once the real agent
(``terminal_login``) confirmed its code. Tokens are checked by a real OIDC client."""

from __future__ import annotations

import datetime as dt
import io
import urllib.parse

import pytest
import requests

from idp.clock import FrozenClock
from idp.db import dispose as dispose_app
from smartcard.protocol import signing_payload
from smartcard.terminal import terminal_login
from tests.support.browser import serve_wsgi_app
from tests.support.cardlogin import (
    add_practitioner,
    card_answer,
    events,
    make_card_trust,
    running_bridge,
    serve_fresh_crls,
)
from tests.support.idp_server import build_app, real_now_clock
from tests.support.nginx import free_port
from tests.support.oidc import RelyingParty

pytestmark = [pytest.mark.browser, pytest.mark.pkcs11]

AMR = ["sc", "pin", "hwk", "mfa"]


@pytest.fixture
def clock():
    """A minute behind real time: ID tokens must not look issued in the future to the client."""
    return FrozenClock(real_now_clock().now() - dt.timedelta(seconds=60))


@pytest.fixture
def app(database_url, tmp_path, clock, card_pki, crl_server):
    serve_fresh_crls(crl_server, card_pki, now=clock.now())
    application = build_app(database_url, tmp_path, clock, smartcard=make_card_trust(card_pki))
    yield application
    dispose_app(application)


class BodyRecorder:
    """WSGI middleware keeping every request the IdP receives: query, headers and body."""

    def __init__(self, app) -> None:
        self.app = app
        self.seen: list[bytes] = []

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        headers = "".join(f"{k}={v}\n" for k, v in environ.items() if k.startswith("HTTP_"))
        self.seen.append(environ.get("QUERY_STRING", "").encode() + headers.encode() + body)
        return self.app(environ, start_response)


@pytest.fixture
def recorder(live_server):
    recorder = BodyRecorder(live_server.app.wsgi_app)
    live_server.app.wsgi_app = recorder
    return recorder


@pytest.fixture
def bridge(live_server, softhsm, card):
    """The agent's bridge for this IdP origin; the login page is told its port."""
    with running_bridge(softhsm, card, origin=live_server.url) as url:
        live_server.app.extensions["idp.settings"].smartcard_bridge_port = int(
            url.rsplit(":", 1)[1]
        )
        yield url


def client_landing(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/html")])
    return [b"<!doctype html><title>client</title><p>client</p>"]


@pytest.fixture
def client(live_server, demo):
    """The demo client, with a redirect URI served locally (Chromium must land somewhere)."""
    from idp.demo import seed

    url, stop = serve_wsgi_app(client_landing)
    with live_server.app.app_context():
        seed(rp_url=url)
    yield {**demo, "redirect_uri": f"{url}/callback"}
    stop()


@pytest.fixture
def page(browser_page):
    browser_page.on("pageerror", lambda exc: pytest.fail(f"page error: {exc}"))
    return browser_page


@pytest.fixture
def doctor(live_server, rpps):
    return add_practitioner(live_server.app, rpps=rpps, with_totp=True)


def open_card_page_from_client(page, live_server, client, **extra) -> RelyingParty:
    rp = RelyingParty(
        live_server.url, client["client_id"], client["client_secret"], client["redirect_uri"]
    )
    page.context.add_cookies([{"name": "idp_lang", "value": "fr", "url": live_server.url}])
    page.goto(rp.authorization_url(**extra))
    page.locator("#card-login-link").click()
    page.wait_for_url("**/login/card")
    return rp


def claims_at_the_client(page, rp: RelyingParty, client) -> dict:
    page.wait_for_url(client["redirect_uri"] + "*")
    token = rp.exchange(page.url)
    return rp.verify_id_token(token["id_token"], client["client_id"])["claims"]


def test_card_login_through_the_bridge_and_the_pin_stays_local(
    page, live_server, client, doctor, bridge, card, recorder, rpps
):
    sent = []
    page.on("request", lambda request: sent.append(request))
    rp = open_card_page_from_client(page, live_server, client, acr_values="phrh")
    holder = page.locator("[data-smartcard-holder]")
    holder.wait_for(state="visible")  # GET /status across origins answered the IdP page
    assert f"RPPS {rpps}" in holder.text_content()

    page.fill("#card-pin", card.pin)
    page.click("#card-sign")

    claims = claims_at_the_client(page, rp, client)
    assert (claims["acr"], claims["amr"], claims["rpps"]) == ("phrh", AMR, rpps)
    to_bridge = [r for r in sent if r.url.startswith(bridge)]
    assert any(r.method == "OPTIONS" or r.url.endswith("/sign") for r in to_bridge)
    signs = [r for r in to_bridge if r.url.endswith("/sign") and r.method == "POST"]
    assert len(signs) == 1 and card.pin in signs[0].post_data  # the PIN went to the agent…
    to_idp = [r for r in sent if r.url.startswith(live_server.url)]
    assert to_idp and all(card.pin not in (r.post_data or "") + r.url for r in to_idp)
    assert recorder.seen and all(card.pin.encode() not in seen for seen in recorder.seen)
    finish = [s for s in recorder.seen if b"mechanism=SHA256_RSA_PKCS" in s]
    assert len(finish) == 1
    fields = urllib.parse.parse_qs(finish[0].rsplit(b"\n", 1)[-1].decode())
    assert set(fields) == {"csrf_token", "certificate", "signature", "mechanism"}


def test_wrong_pin_is_explained_then_the_right_one_works(
    page, live_server, client, doctor, bridge, card
):
    rp = open_card_page_from_client(page, live_server, client)
    wrong = "000000" if card.pin != "000000" else "111111"

    page.fill("#card-pin", wrong)
    page.click("#card-sign")
    message = page.locator("[data-smartcard-message]")
    message.wait_for(state="visible")

    assert message.get_attribute("data-smartcard-state") == "pinCountLow"
    assert "PIN incorrect" in message.text_content()
    assert page.input_value("#card-pin") == ""  # the page keeps no PIN
    assert events(live_server.app, "auth:smartcard:failed") == []
    page.fill("#card-pin", card.pin)
    page.click("#card-sign")
    assert claims_at_the_client(page, rp, client)["acr"] == "phrh"


def test_agent_not_running_is_explained(page, live_server, client, doctor):
    live_server.app.extensions["idp.settings"].smartcard_bridge_port = free_port()
    open_card_page_from_client(page, live_server, client)
    page.locator("[data-smartcard-agent-hint]").wait_for(state="visible")

    page.fill("#card-pin", "123456")
    page.click("#card-sign")
    message = page.locator("[data-smartcard-message]")
    message.wait_for(state="visible")

    assert message.get_attribute("data-smartcard-state") == "agentMissing"
    assert "ne répond pas" in message.text_content()
    assert page.url.endswith("/login/card")


def test_terminal_mode_page_finishes_by_itself(
    page, live_server, client, doctor, softhsm, card, rpps
):
    rp = open_card_page_from_client(page, live_server, client, acr_values="phrh")
    code = page.text_content("#card-code")
    assert code in page.text_content("#card-command")

    reply = terminal_login(
        issuer=live_server.url, code=code, lib=softhsm.lib, pin=card.pin, token_label=card.label
    )

    assert reply == {"status": "ok"}
    claims = claims_at_the_client(page, rp, client)  # the page polled, then completed
    assert (claims["acr"], claims["amr"], claims["rpps"]) == ("phrh", AMR, rpps)
    assert [e.details["method"] for e in events(live_server.app, "auth:smartcard:completed")] == [
        "code"
    ]


def test_terminal_mode_failure_is_shown_on_the_page(
    page, live_server, client, doctor, softhsm, card
):
    """An answer the IdP refuses (signed for another site) shows up on the polling page."""
    open_card_page_from_client(page, live_server, client)
    code = page.text_content("#card-code")
    root = page.locator("[data-smartcard]")
    payload = signing_payload(
        origin="https://idp.evil.example",
        transaction=root.get_attribute("data-transaction"),
        challenge=root.get_attribute("data-challenge"),
    )
    answer = card_answer(softhsm, card, payload)

    refused = requests.post(
        f"{live_server.url}/smartcard/code/{code}", json=answer | {"code": code}
    )

    assert refused.status_code == 401
    message = page.locator("[data-smartcard-message]")
    message.wait_for(state="visible")
    assert message.get_attribute("data-smartcard-state") == "failed"
    assert "signature" in message.text_content()
    assert page.url.endswith("/login/card")


def test_local_network_access_block_is_explained(
    chromium_browser, live_server, client, doctor, bridge
):
    """With the IdP on a public address, Chromium's Local Network Access guards the loopback
    agent behind a permission; refused (headless cannot be asked), the page says what to do."""
    from tests.support.browser import CHROMIUM_ARGS, CHROMIUM_PATH

    port = live_server.url.rsplit(":", 1)[1]
    public = chromium_browser.browser_type.launch(
        executable_path=CHROMIUM_PATH,
        headless=True,
        args=[*CHROMIUM_ARGS, f"--ip-address-space-overrides=127.0.0.1:{port}=public"],
    )
    try:
        page = public.new_context().new_page()
        page.set_default_timeout(10_000)
        open_card_page_from_client(page, live_server, client)
        page.fill("#card-pin", "123456")
        page.click("#card-sign")
        message = page.locator("[data-smartcard-message]")
        message.wait_for(state="visible")

        assert message.get_attribute("data-smartcard-state") == "agentMissing"
        assert "réseau local" in message.text_content()
    finally:
        public.close()
