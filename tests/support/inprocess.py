"""In-process requests over WSGI with recorded server-side sessions, for the URL-map walks.

``login_states`` records real sessions (anonymous, after the password, during an invitation,
logged in with a pending authorization request); a ``Browser`` replays one of them before
every request, so each request starts from the same state whatever the previous one did.
"""

from __future__ import annotations

import json
import secrets

import pytest
from itsdangerous import URLSafeTimedSerializer
from werkzeug.test import EnvironBuilder

from idp.db import dispose as dispose_app
from idp.db import get_db
from tests.support import factories
from tests.support.cardlogin import make_card_trust, serve_fresh_crls
from tests.support.idp_server import build_app
from tests.support.oidc import csrf_token, totp_now
from tests.support.webauthn_crafting import SoftAuthenticator, b64url_decode

REDIRECT = "http://localhost:9999/callback"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636's S256 example


def valid_authorization(**overrides) -> dict:
    params = {
        "client_id": "demo-rp",
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": "openid profile",
        "state": "s",
        "nonce": "n",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return params


def app_with_every_feature(database_url, tmp_path, clock, crl_server, card_pki):
    """Card login and its TLS mode on, so that every view runs its own code rather than
    answering "not available here"."""
    serve_fresh_crls(crl_server, card_pki, now=clock.now())
    return build_app(database_url, tmp_path, clock, smartcard=make_card_trust(card_pki))


@pytest.fixture(name="app")
def every_feature_app(database_url, tmp_path, clock, crl_server, card_pki):
    """Imported by a test module, its ``app`` is ``app_with_every_feature``."""
    application = app_with_every_feature(database_url, tmp_path, clock, crl_server, card_pki)
    yield application
    dispose_app(application)


@pytest.fixture(name="demo")
def every_feature_demo(app):
    from idp.demo import seed

    with app.app_context():
        return seed(rp_url="http://localhost:9999")


class Browser:
    """Requests with a server-side session reset to a recorded state before each one.

    The session is written straight to the store under a fixed id and sent as a Cookie header;
    ``state`` None sends no cookie at all.
    """

    def __init__(self, app, state: dict | None) -> None:
        self.app = app
        self.state = state
        self.sid = "walk-session-" + secrets.token_urlsafe(16)
        raw_csrf = secrets.token_hex(20)
        self.session = {**(state or {}), "csrf_token": raw_csrf}
        serializer = URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token")
        self.csrf = serializer.dumps(raw_csrf)

    def reset(self) -> None:
        now = self.app.extensions["idp.clock"].now().timestamp()
        store = self.app.session_interface.store
        with self.app.app_context():
            if not store.save(self.sid, self.session, now, now, 3600, new=False):
                store.save(self.sid, self.session, now, now, 3600, new=True)

    def open(self, method: str, url: str, *, reset: bool = True, **kwargs) -> int:
        """The response status. Plain WSGI: the test client would re-parse every huge URL."""
        headers = {"X-CSRFToken": self.csrf, **kwargs.pop("headers", {})}
        if self.state is not None:
            if reset:
                self.reset()
            headers["Cookie"] = f"idp_session={self.sid}"
        overrides = kwargs.pop("environ_overrides", {})
        if "prepare" in kwargs:  # a first request in the same session (a challenge, say)
            self.call(
                EnvironBuilder(
                    path=kwargs.pop("prepare"),
                    method="POST",
                    headers={**headers, "Accept": "application/json"},
                )
            )
        return self.call(
            EnvironBuilder(path=url, method=method, headers=headers, **kwargs), overrides
        )

    def call(self, builder: EnvironBuilder, overrides: dict | None = None) -> int:
        try:
            environ = {**builder.get_environ(), **(overrides or {})}
        finally:
            builder.close()
        status = []
        body = self.app(environ, lambda line, _headers, _exc=None: status.append(line))
        try:
            b"".join(body)
        finally:
            getattr(body, "close", lambda: None)()
        return int(status[0].split()[0])


def recorded_session(client) -> dict:
    with client.session_transaction() as session:
        return {k: v for k, v in session.items() if k != "csrf_token"}


def post_form(client, path: str, page, data: dict):
    token = csrf_token(page.get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **data})


def login_states(app, demo, clock) -> dict[str, dict]:
    """Real journeys through the test client, their server-side sessions recorded. The demo
    practitioner also gets a security key, so that its TOTP login is below what binding
    another key needs (NIST-10)."""
    client = app.test_client()
    client.get("/authorize", query_string=valid_authorization())
    page = client.get("/login")
    post_form(
        client, "/login", page, {"identifier": demo["username"], "password": demo["password"]}
    )
    first_factor = recorded_session(client)
    assert first_factor.get("first_factor") and first_factor.get("authz"), first_factor
    page = client.get("/login/totp")
    post_form(client, "/login/totp", page, {"code": totp_now(demo["totp_secret"], clock)})
    add_security_key(app, client)
    # The first request got its code with the TOTP answer: a new one (its own nonce) waits.
    client.get("/authorize", query_string=valid_authorization(prompt="login", nonce="n2"))
    logged_in = recorded_session(client)
    assert logged_in.get("auth") and logged_in.get("authz"), logged_in

    with app.app_context():
        db = get_db()
        _, token = factories.invited(db, clock)
        db.commit()
    client = app.test_client()
    page = client.get(f"/enrol/{token}", follow_redirects=True)
    password = "un mot de passe assez long"
    post_form(client, "/enrol", page, {"password": password, "confirm": password})
    enrolling = recorded_session(client)
    assert enrolling.get("enrolment"), enrolling
    return {
        "anonymous": {},  # a visitor whose session holds nothing but its CSRF token
        "first-factor": first_factor,
        "enrolling": enrolling,
        "logged-in": logged_in,
    }


def add_security_key(app, client) -> None:
    page = client.get("/account/webauthn/add")
    token = csrf_token(page.get_data(as_text=True))
    options = client.post(
        "/account/webauthn/add/options",
        data={"csrf_token": token},
        headers={"X-CSRFToken": token, "Accept": "application/json"},
    ).get_json()
    authenticator = SoftAuthenticator(user_handle=b64url_decode(options["user"]["id"]))
    response = authenticator.registration_response(
        challenge=b64url_decode(options["challenge"]),
        origin=app.extensions["idp.settings"].issuer,
    )
    done = client.post(
        "/account/webauthn/add",
        data={"csrf_token": token, "name": "Clé", "credential": json.dumps(response)},
    )
    assert done.status_code == 303, done.get_data(as_text=True)
