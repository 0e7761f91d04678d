"""Smoke test of the browser harness and idp/static/js/webauthn.js in real Chromium.

A throwaway Flask app (state in a module dict, one CSRF token) serves the real script under a
strict CSP and drives idp.factors.webauthn.verify; the virtual authenticator plays the user.
"""

from __future__ import annotations

import html
import secrets
from pathlib import Path

import pytest
from flask import Flask, Response, abort, redirect, request, send_file

from idp.factors.webauthn import verify as wa
from tests.support.browser import (
    add_credential,
    add_virtual_authenticator,
    get_credentials,
    require_chromium,
    serve_wsgi_app,
    set_user_verified,
)
from tests.support.webauthn_crafting import cose_ec2_public_key

pytestmark = pytest.mark.browser

SCRIPT = Path(__file__).resolve().parents[2] / "idp" / "static" / "js" / "webauthn.js"
CSRF = secrets.token_urlsafe(16)
CSP = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"
MESSAGES = {
    "cancelled": "Opération annulée.",
    "timeout": "Délai dépassé.",
    "unsupported": "Navigateur non pris en charge.",
    "failed": "Échec de la vérification.",
    "already-registered": "Authentificateur déjà enregistré.",
}
STATE: dict = {}


def _page(*, mode: str, options_url: str, finish_url: str, with_autofill: bool = False) -> str:
    msgs = " ".join(f'data-msg-{k}="{html.escape(v)}"' for k, v in MESSAGES.items())
    autofill = (
        '<input name="username" autocomplete="username webauthn" aria-label="Identifiant">'
        if with_autofill
        else ""
    )
    return f"""<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>{mode}</title>
<script src="/static/js/webauthn.js" defer></script></head>
<body>
<form method="post" action="{finish_url}" data-webauthn="{mode}"
      data-options-url="{options_url}" data-finish-url="{finish_url}" {msgs}>
  <input type="hidden" name="csrf_token" value="{CSRF}">
  <input type="hidden" name="credential">
  {autofill}
  <button type="submit" id="go">Continuer</button>
  <p data-webauthn-message role="alert" hidden></p>
</form>
</body></html>"""


def _make_app() -> Flask:
    app = Flask(__name__)

    @app.after_request
    def _csp(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        return response

    def _check_csrf(token: str | None) -> None:
        if token != CSRF:
            abort(403)

    def _options(json_text: str) -> Response:
        return Response(json_text, mimetype="application/json")

    def _fail(error: Exception) -> Response:
        STATE.setdefault("errors", []).append(type(error).__name__)
        return Response(f"<p id='outcome'>refused {type(error).__name__}</p>", status=400)

    @app.get("/favicon.ico")
    def _favicon():
        return Response(status=204)

    @app.get("/static/js/webauthn.js")
    def _script():
        return send_file(SCRIPT, mimetype="text/javascript")

    @app.get("/register")
    def _register_page():
        return _page(mode="register", options_url="/register/options", finish_url="/register/fin")

    @app.post("/register/options")
    def _register_options():
        _check_csrf(request.headers.get("X-CSRFToken"))
        options, STATE["challenge"] = wa.begin_registration(
            rp_id="localhost",
            rp_name="IdP test",
            user_handle=STATE["user_handle"],
            user_name="dr.martin",
            user_display_name="Dr Claire Martin",
            exclude_credential_ids=list(STATE["credentials"]),
            resident_key="required",
        )
        return _options(options)

    @app.post("/register/fin")
    def _register_finish():
        _check_csrf(request.form.get("csrf_token"))
        challenge = STATE.pop("challenge")  # single use, consumed before verifying
        try:
            cred = wa.finish_registration(
                credential_json=request.form["credential"],
                expected_challenge=challenge,
                expected_rp_id="localhost",
                expected_origins=[STATE["origin"]],
            )
        except wa.WebAuthnError as error:
            return _fail(error)
        STATE["credentials"][cred.credential_id] = {
            "public_key": cred.public_key,
            "sign_count": cred.sign_count,
            "user_handle": STATE["user_handle"],
            "backup_eligible": cred.backup_eligible,
        }
        return redirect("/result?outcome=registered", code=303)

    @app.get("/login")
    def _login_page():
        return _page(mode="authenticate", options_url="/login/options", finish_url="/login/fin")

    @app.get("/passkey")
    def _passkey_page():
        return _page(
            mode="passkey",
            options_url="/passkey/options",
            finish_url="/login/fin",
            with_autofill=request.args.get("autofill") != "0",
        )

    @app.post("/login/options")
    def _login_options():
        _check_csrf(request.headers.get("X-CSRFToken"))
        options, STATE["challenge"] = wa.begin_authentication(
            rp_id="localhost", allow_credential_ids=list(STATE["credentials"])
        )
        return _options(options)

    @app.post("/passkey/options")
    def _passkey_options():
        _check_csrf(request.headers.get("X-CSRFToken"))
        options, STATE["challenge"] = wa.begin_authentication(
            rp_id="localhost", allow_credential_ids=[]
        )
        return _options(options)

    @app.post("/login/fin")
    def _login_finish():
        _check_csrf(request.form.get("csrf_token"))
        challenge = STATE.pop("challenge")
        try:
            credential_id = wa.parse_credential_id(request.form["credential"])
            stored = STATE["credentials"].get(credential_id)
            if stored is None:
                abort(400)
            result = wa.finish_authentication(
                credential_json=request.form["credential"],
                expected_challenge=challenge,
                expected_rp_id="localhost",
                expected_origins=[STATE["origin"]],
                credential_public_key=stored["public_key"],
                credential_current_sign_count=stored["sign_count"],
                credential_backup_eligible=stored["backup_eligible"],
            )
        except wa.WebAuthnError as error:
            return _fail(error)
        if result.user_handle is not None and result.user_handle != stored["user_handle"]:
            abort(400)
        stored["sign_count"] = result.new_sign_count
        STATE["last_login"] = result
        return redirect("/result?outcome=authenticated", code=303)

    @app.get("/result")
    def _result():
        outcome = html.escape(request.args.get("outcome", ""))
        return f"<!doctype html><title>ok</title><p id='outcome'>{outcome}</p>"

    return app


@pytest.fixture(scope="module")
def base_url():
    url, stop = serve_wsgi_app(_make_app())
    STATE["origin"] = url
    yield url
    stop()


@pytest.fixture(autouse=True)
def _fresh_state(base_url):
    STATE.clear()
    STATE.update(origin=base_url, credentials={}, user_handle=secrets.token_bytes(32))


@pytest.fixture
def page(browser_page):
    errors: list[str] = []
    browser_page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    browser_page.on("pageerror", lambda exc: errors.append(str(exc)))
    browser_page.console_errors = errors
    return browser_page


def _run(page, url: str) -> None:
    page.goto(url)
    page.click("#go")


def _register(page, base_url: str) -> None:
    _run(page, f"{base_url}/register")
    page.wait_for_url("**/result?outcome=registered")


def _plant(cdp, authenticator_id, *, sign_count: int, server_sign_count: int) -> bytes:
    """A credential put straight into the virtual authenticator (at *sign_count*) and known to
    the server (as last seen at *server_sign_count*); returns its id."""
    credential_id = secrets.token_bytes(16)
    key = add_credential(
        cdp,
        authenticator_id,
        credential_id=credential_id,
        rp_id="localhost",
        user_handle=STATE["user_handle"],
        sign_count=sign_count,
    )
    STATE["credentials"][credential_id] = {
        "public_key": cose_ec2_public_key(key.public_key()),
        "sign_count": server_sign_count,
        "user_handle": STATE["user_handle"],
        "backup_eligible": False,
    }
    return credential_id


def _message(page):
    alert = page.locator("[data-webauthn-message]")
    alert.wait_for(state="visible")
    return alert


def test_register_then_authenticate(page, base_url):
    cdp, authenticator_id = add_virtual_authenticator(page)
    _register(page, base_url)
    assert len(STATE["credentials"]) == 1
    held = get_credentials(cdp, authenticator_id)
    assert len(held) == 1 and held[0]["rpId"] == "localhost" and held[0]["isResidentCredential"]

    _run(page, f"{base_url}/login")
    page.wait_for_url("**/result?outcome=authenticated")
    assert STATE["last_login"].uv is True
    assert STATE["last_login"].user_handle == STATE["user_handle"]
    assert not page.console_errors, page.console_errors


def test_passkey_button_without_username(page, base_url):
    add_virtual_authenticator(page)
    _register(page, base_url)
    _run(page, f"{base_url}/passkey?autofill=0")
    page.wait_for_url("**/result?outcome=authenticated")
    assert STATE["last_login"].user_handle == STATE["user_handle"]


def test_conditional_mediation_starts_on_load(page, base_url):
    """With autocomplete="username webauthn" the virtual authenticator answers the autofill."""
    add_virtual_authenticator(page)
    _register(page, base_url)
    page.goto(f"{base_url}/passkey")
    page.wait_for_url("**/result?outcome=authenticated")
    assert STATE["last_login"].user_handle == STATE["user_handle"]


def test_planted_credential_and_refused_user_verification(page, base_url):
    cdp, authenticator_id = add_virtual_authenticator(page)
    credential_id = _plant(cdp, authenticator_id, sign_count=41, server_sign_count=41)

    set_user_verified(cdp, authenticator_id, verified=False)
    _run(page, f"{base_url}/login")
    alert = _message(page)
    assert alert.text_content() == MESSAGES["cancelled"]
    assert alert.get_attribute("role") == "alert"
    assert page.locator("#go").is_enabled()

    set_user_verified(cdp, authenticator_id, verified=True)
    page.click("#go")
    page.wait_for_url("**/result?outcome=authenticated")
    assert STATE["credentials"][credential_id]["sign_count"] == 42


def test_stale_sign_count_is_refused_as_possible_clone(page, base_url):
    cdp, authenticator_id = add_virtual_authenticator(page)
    # The server already saw 6: the authenticator will answer 6.
    _plant(cdp, authenticator_id, sign_count=5, server_sign_count=6)
    _run(page, f"{base_url}/login")
    page.wait_for_selector("#outcome")
    assert STATE["errors"] == ["SignCountRegressionError"]


def test_registering_twice_says_already_registered(page, base_url):
    add_virtual_authenticator(page)
    _register(page, base_url)
    _run(page, f"{base_url}/register")
    assert _message(page).text_content() == MESSAGES["already-registered"]


def test_unsupported_browser_hides_the_button(page, base_url):
    page.add_init_script("delete window.PublicKeyCredential;")
    page.goto(f"{base_url}/login")
    assert _message(page).text_content() == MESSAGES["unsupported"]
    assert page.locator("#go").is_hidden()


def test_fallbacks_without_json_helpers(page, base_url):
    """The manual base64url conversions work where toJSON/parse*FromJSON are missing."""
    page.add_init_script(
        "delete PublicKeyCredential.parseCreationOptionsFromJSON;"
        "delete PublicKeyCredential.parseRequestOptionsFromJSON;"
        "delete PublicKeyCredential.prototype.toJSON;"
    )
    add_virtual_authenticator(page)
    _register(page, base_url)
    _run(page, f"{base_url}/login")
    page.wait_for_url("**/result?outcome=authenticated")
    assert STATE["last_login"].user_handle == STATE["user_handle"]
    assert page.evaluate("typeof PublicKeyCredential.prototype.toJSON") == "undefined"


def test_missing_chromium_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="refusing to skip"):
        require_chromium(chromium_path="/nonexistent/chromium")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_chromium(chromium_path="/nonexistent/chromium")
