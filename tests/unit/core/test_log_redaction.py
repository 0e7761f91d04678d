"""One-time secrets and personal data never reach the logs: the redaction function, the gunicorn
logger built on it, Flask's exception log and the database's error messages."""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from idp.clock import FrozenClock
from idp.db import make_engine
from idp.redaction import (
    SECRET_PARAMETERS,
    redact_path,
    redact_query,
    redact_text,
    redact_uri,
)
from idp.wsgi_server import RedactingLogger
from tests.support.idp_server import build_app

TOKEN = "q8V1c2xLZl9-Yk3Tn0pWmRt5sHu7eJ4aGdBfCiKoE6w"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"/enrol/{TOKEN}", "/enrol/[redacted]"),
        (f"/enrol/{TOKEN}?lang=fr", "/enrol/[redacted]?lang=fr"),
        (f"/enrol/{TOKEN}/anything/after", "/enrol/[redacted]"),
        (f"//enrol//{TOKEN}", "//enrol//[redacted]"),
        (f"/enrol%2F{TOKEN}", "/enrol%2F[redacted]"),
        (f"/%65nrol/{TOKEN}", "/%65nrol/[redacted]"),
        (f"/Enrol/{TOKEN}", "/Enrol/[redacted]"),
        (
            f"/language/en?next=%2Fenrol%2F{TOKEN}%3Flang%3Dfr",
            "/language/en?next=[redacted]",
        ),
        ("/language/fr?next=/login", "/language/fr?next=[redacted]"),
        ("/login?next=/account", "/login?next=/account"),
        ("/enrol/totp", "/enrol/totp"),
        ("/enrol/webauthn", "/enrol/webauthn"),
        ("/enrol/webauthn/options", "/enrol/webauthn/options"),
        ("/enrol/", "/enrol/"),
        ("/smartcard/code/ABCD-EFGH", "/smartcard/code/[redacted]"),
        ("/smartcard/code/ABCD-EFGH/more", "/smartcard/code/[redacted]"),
        ("/smartcard/code/", "/smartcard/code/"),
        ("/code/ABCD-EFGH", "/code/ABCD-EFGH"),
        ("/password/reset/Tok3n_x", "/password/reset/[redacted]"),
        ("/Password/Reset/Tok3n_x/more", "/Password/Reset/[redacted]"),
        ("/reset/Tok3n_x", "/reset/Tok3n_x"),
        ("/password/new", "/password/new"),
        ("/login/card", "/login/card"),
        ("/account/webauthn/3/rename", "/account/webauthn/3/rename"),
        (
            "/authorize?client_id=demo-rp&code=SECRET&access_token=SECRET2&state=xyz"
            "&login_hint=10000000009&scope=openid+rpps",
            "/authorize?client_id=demo-rp&code=[redacted]&access_token=[redacted]&state=xyz"
            "&login_hint=[redacted]&scope=openid+rpps",
        ),
        (
            "/authorize?redirect_uri=https%3A%2F%2Fapp.example%2Fcb&Code=x&id%5Ftoken%5Fhint=y",
            "/authorize?redirect_uri=https%3A%2F%2Fapp.example%2Fcb&Code=[redacted]"
            "&id%5Ftoken%5Fhint=[redacted]",
        ),
        ("/token?code", "/token?code"),
        ("/login/card/tls?t=TRANSACTION", "/login/card/tls?t=[redacted]"),
        ("/login/card/tls/return?r=RESULT&x=1", "/login/card/tls/return?r=[redacted]&x=1"),
        ("/authorize?t=1&r=2", "/authorize?t=1&r=2"),
        (
            f"https://idp.example/enrol/{TOKEN}?x=1#access_token=T&state=s",
            "https://idp.example/enrol/[redacted]?x=1#access_token=[redacted]&state=s",
        ),
        ("https://app.example/cb?code=abc&iss=x", "https://app.example/cb?code=[redacted]&iss=x"),
        ("https://idp.example", "https://idp.example"),
        ("-", "-"),
        ("", ""),
        ("/", "/"),
    ],
)
def test_redact_uri(uri, expected):
    assert redact_uri(uri) == expected


def test_every_secret_parameter_is_redacted_and_state_is_kept():
    query = "&".join(f"{name}=v{index}" for index, name in enumerate(sorted(SECRET_PARAMETERS)))
    redacted = redact_query(query + "&state=kept&nonce=kept")
    assert not re.search(r"=v\d", redacted)
    assert redacted.endswith("&state=kept&nonce=kept")
    assert {"code", "access_token", "refresh_token", "id_token_hint", "client_secret"} <= (
        SECRET_PARAMETERS
    )
    assert {"token", "code_verifier", "login_hint"} <= SECRET_PARAMETERS
    assert "state" not in SECRET_PARAMETERS


def test_redact_path_and_text():
    assert redact_path(f"/enrol/{TOKEN}") == "/enrol/[redacted]"
    assert redact_text(f"Error handling request GET /enrol/{TOKEN}?code=1") == (
        "Error handling request GET /enrol/[redacted]?code=[redacted]"
    )
    assert redact_text("Worker (pid:42) exited") == "Worker (pid:42) exited"


def sample_path(rule: str) -> str:
    return re.sub(
        r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: "7" if "id" in m[1] else "S3cr3tValue", rule
    )


@pytest.fixture
def app(tmp_path):
    application = build_app(
        f"sqlite:///{tmp_path / 'unused.sqlite3'}",
        tmp_path,
        FrozenClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    )
    yield application
    application.extensions["idp.engine"].dispose()


def test_exactly_the_secret_routes_are_redacted(app):
    """Against the real URL map: the token and card code routes lose their secret, no other
    route (``/enrol/totp``, ``/enrol/webauthn/options``…) loses anything."""
    secret_routes = {
        "/enrol/<token>",
        "/smartcard/code/<code>",
        "/recover/<token>",
        "/password/reset/<token>",
    }
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert secret_routes <= rules
    for rule in rules:
        path = sample_path(rule)
        if rule in secret_routes:
            assert redact_path(path) == rule.rsplit("/", 1)[0] + "/[redacted]"
        else:
            assert redact_path(path) == path, rule


def test_gunicorn_atoms_are_redacted():
    logger = RedactingLogger(Config())
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/enrol/{TOKEN}?code=C0DE&state=s",
        "PATH_INFO": f"/enrol/{TOKEN}",
        "QUERY_STRING": "code=C0DE&state=s",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_REFERER": "https://app.example/cb?code=REFCODE",
        "HTTP_AUTHORIZATION": "Bearer AT0KEN",
        "REMOTE_ADDR": "127.0.0.1",
    }
    request = SimpleNamespace(
        headers=[
            ("REFERER", "https://app.example/cb?code=REFCODE"),
            ("AUTHORIZATION", "Bearer AT0KEN"),
            ("COOKIE", "idp_session=C00KIE"),
        ]
    )
    response = SimpleNamespace(
        status="302 FOUND",
        headers=[("Location", "https://app.example/cb?code=L0CATION&state=s")],
        sent=0,
    )
    atoms = logger.atoms(response, request, environ, dt.timedelta(milliseconds=5))
    assert atoms["r"] == "GET /enrol/[redacted]?code=[redacted]&state=s HTTP/1.1"
    assert atoms["U"] == "/enrol/[redacted]"
    assert atoms["q"] == "code=[redacted]&state=s"
    assert atoms["f"] == atoms["{referer}i"] == "https://app.example/cb?code=[redacted]"
    assert atoms["{location}o"] == "https://app.example/cb?code=[redacted]&state=s"
    assert atoms["{authorization}i"] == atoms["{cookie}i"] == "[redacted]"
    everything = repr(atoms)
    for secret in (TOKEN, "C0DE", "REFCODE", "AT0KEN", "C00KIE", "L0CATION"):
        assert secret not in everything


def test_gunicorn_error_log_is_redacted(caplog):
    logger = RedactingLogger(Config())
    logger.error_log.propagate = True
    with caplog.at_level(logging.ERROR, logger="gunicorn.error"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("Error handling request %s %s", "GET", f"/enrol/{TOKEN}")
    assert TOKEN not in caplog.text
    assert "Error handling request GET /enrol/[redacted]" in caplog.text


def test_flask_exception_log_redacts_the_path(app, caplog):
    with caplog.at_level(logging.ERROR, logger=app.logger.name):
        with app.test_request_context(f"/enrol/{TOKEN}"):
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                app.log_exception(sys.exc_info())
    assert TOKEN not in caplog.text
    assert "Exception on /enrol/[redacted] [GET]" in caplog.text


def test_database_errors_do_not_carry_statement_parameters(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'errors.sqlite3'}")
    try:
        with pytest.raises(DBAPIError) as raised:
            with engine.connect() as connection:
                connection.execute(text("SELECT :value FROM no_such_table"), {"value": TOKEN})
        assert TOKEN not in str(raised.value)
    finally:
        engine.dispose()
