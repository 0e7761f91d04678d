"""Terminal mode against a small stand-in IdP that implements the documented contract."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from idp.factors.smartcard import verify as verifier
from smartcard import errors
from smartcard.cli import main
from smartcard.protocol import signing_payload
from smartcard.terminal import code_url, terminal_login

pytestmark = pytest.mark.pkcs11

CODE = "K7QM-2XPA"


class StandInIdp:
    """Serves GET/POST /smartcard/code/{code} and verifies what the agent posts."""

    def __init__(self, *, card_pki, now, claimed_origin=None):
        self.card_pki = card_pki
        self.now = now
        self.claimed_origin = claimed_origin
        self.identities = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"

    def challenge(self):
        origin = self.claimed_origin or self.issuer
        return {"origin": origin, "transaction": "tx-terminal", "challenge": "bm9uY2Vub25jZQ"}

    def _handler(self):
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != f"/smartcard/code/{CODE}":
                    return self._reply(404, {"error": "unknown_code", "message": "unknown"})
                self._reply(200, idp.challenge())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert body.pop("code") == CODE
                identity = verifier.verify_submission(
                    submission=body,
                    payload=signing_payload(**idp.challenge()),
                    trust_anchors=[idp.card_pki.root.certificate],
                    intermediates=[idp.card_pki.intermediate.certificate],
                    crls=[idp.card_pki.crl()],
                    now=idp.now(),
                    policy=verifier.CardPolicy(production=False),
                )
                idp.identities.append(identity)
                self._reply(200, {"status": "ok"})

        return Handler

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_terminal_login_round_trip(softhsm, card, card_pki, clock, rpps):
    with StandInIdp(card_pki=card_pki, now=clock.now) as idp:
        reply = terminal_login(
            issuer=idp.issuer,
            code=CODE,
            lib=softhsm.lib,
            pin=card.pin,
            token_label=card.label,
            now=clock.now,
        )

    assert reply == {"status": "ok"}
    assert [identity.rpps for identity in idp.identities] == [rpps]


def test_terminal_login_refuses_a_challenge_for_another_origin(softhsm, card, card_pki, clock):
    with StandInIdp(card_pki=card_pki, now=clock.now, claimed_origin="https://bank.test") as idp:
        with pytest.raises(errors.OriginMismatchError):
            terminal_login(
                issuer=idp.issuer,
                code=CODE,
                lib=softhsm.lib,
                pin=card.pin,
                token_label=card.label,
                now=clock.now,
            )

    assert idp.identities == []


def test_unknown_code_is_a_server_error(softhsm, card, card_pki, clock):
    with StandInIdp(card_pki=card_pki, now=clock.now) as idp:
        with pytest.raises(errors.ServerError):
            terminal_login(
                issuer=idp.issuer, code="ZZZZ", lib=softhsm.lib, pin=card.pin, now=clock.now
            )


@pytest.mark.parametrize(
    ("issuer", "code"),
    [("http://idp.example", CODE), ("https://idp.example", "../../admin"), ("ftp://x", CODE)],
)
def test_code_url_refuses_plain_http_and_path_tricks(issuer, code):
    with pytest.raises(errors.ServerError):
        code_url(issuer=issuer, code=code)


def test_code_url():
    assert code_url(issuer="https://idp.example/", code=CODE) == (
        f"https://idp.example/smartcard/code/{CODE}"
    )


def test_cli_list_shows_the_card(softhsm, card, rpps, capsys):
    assert main(["list", "--module", softhsm.module_path]) == 0

    out = capsys.readouterr().out
    assert card.label in out
    assert "JEANNE MARTIN" in out
    assert rpps in out
    assert "Médecin" in out


def test_cli_reports_a_missing_module(capsys):
    assert main(["list", "--module", "/nonexistent/pkcs11.so"]) == 1

    assert "PKCS#11" in capsys.readouterr().err


def test_cli_login_reads_the_pin_with_getpass(softhsm, card, card_pki, clock, monkeypatch):
    prompts = []
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or card.pin)

    with StandInIdp(card_pki=card_pki, now=clock.now) as idp:
        status = main(
            ["login", "--issuer", idp.issuer, "--code", CODE]
            + ["--module", softhsm.module_path, "--token", card.label]
        )

    assert status == 0
    assert len(prompts) == 1 and len(idp.identities) == 1


def test_cli_has_no_pin_option(softhsm):
    assert main(["login", "--issuer", "https://idp.example", "--code", CODE, "--pin", "1234"]) == 2
