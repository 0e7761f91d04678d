"""The demo relying party's pages and the banner ``idp demo`` prints once both servers answer."""

from __future__ import annotations

import html
import subprocess
import sys
import threading
from html.parser import HTMLParser

import pytest
from werkzeug.serving import make_server

VOID = {"meta", "link", "br", "img", "input", "hr", "source", "wbr"}


class Structure(HTMLParser):
    """Checks that every element is closed in order, and collects the links and buttons."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.links: dict[str, str] = {}  # text -> href
        self.buttons: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._text: list[str] | None = None
        self._href = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag in ("a", "button"):
            self._text, self._href = [], dict(attrs).get("href", "")

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag in ("a", "button") and self._text is not None:
            text = " ".join("".join(self._text).split())
            if tag == "a":
                self.links[text] = self._href
            else:
                self.buttons.append(text)
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def parsed(html: str) -> Structure:
    structure = Structure()
    structure.feed(html)
    structure.close()
    assert not structure.errors and not structure.stack, (structure.errors, structure.stack)
    assert html.startswith("<!doctype html>")
    assert ("html", {"lang": "fr"}) in structure.tags
    assert any(t == "meta" and a.get("name") == "viewport" for t, a in structure.tags)
    assert sum(1 for t, _ in structure.tags if t == "main") == 1
    for text in [*structure.links, *structure.buttons]:
        assert text, "every link and button has a label"
    return structure


@pytest.fixture
def rp(monkeypatch):
    from idp.demo_rp import create_rp_app

    monkeypatch.setenv("IDP_ISSUER", "http://127.0.0.1:9")  # nothing answers there
    monkeypatch.setenv("DEMO_RP_CLIENT_ID", "demo-rp")
    monkeypatch.setenv("DEMO_RP_CLIENT_SECRET", "s" * 40)
    monkeypatch.setenv("DEMO_RP_URL", "http://localhost:5001")
    return create_rp_app().test_client()


def test_home_offers_the_three_logins_and_the_account_page(rp):
    response = rp.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = parsed(response.text)
    assert page.links["Se connecter"] == "/login"
    assert page.links["Se connecter avec une méthode résistante à l'hameçonnage"] == (
        "/login?acr_values=phr"
    )
    assert page.links["Se connecter avec la carte CPS"] == "/login?acr_values=phrh"
    assert page.links["Mon compte"] == "http://127.0.0.1:9/account"


def test_signed_in_page_shows_the_claims_readably_and_a_logout_button(rp):
    with rp.session_transaction() as session:
        session["claims"] = {
            "sub": "abc",
            "name": "Camille <Martin>",
            "rpps": "10000000009",
            "acr": "phrh",
            "amr": ["sc", "pin"],
            "auth_time": 1_700_000_000,  # 14/11/2023 23:13:20 in Paris
        }
    response = rp.get("/")
    page = parsed(response.text)
    assert "Camille &lt;Martin&gt;" in response.text and "<Martin>" not in response.text
    assert "10000000009" in response.text
    assert "carte à puce" in response.text and "code PIN" in response.text
    assert "14/11/2023 à 23:13:20 (heure de Paris)" in response.text
    assert "Se déconnecter" in page.buttons
    assert page.links["Se reconnecter avec la carte CPS"] == "/login?acr_values=phrh"
    assert page.links["Mon compte"] == "http://127.0.0.1:9/account"
    assert rp.post("/logout").status_code == 302
    assert "Se connecter avec la carte CPS" in parsed(rp.get("/").text).links
    assert rp.get("/logout").status_code == 405  # a link elsewhere cannot sign the user out


def test_refused_consent_is_a_readable_french_page_with_a_retry(rp):
    with rp.session_transaction() as session:
        session["acr_values"] = "phr"
        session["_state_idp_st4te"] = {"data": {"nonce": "n"}, "exp": 9e9}
    response = rp.get("/callback?error=access_denied&error_description=<b>refus</b>&state=st4te")
    assert response.status_code == 200
    page = parsed(response.text)
    text = html.unescape(response.text)
    assert "La connexion n'a pas abouti" in text and "L'accès a été refusé" in text
    assert "&lt;b&gt;refus&lt;/b&gt;" in response.text and "<b>refus" not in response.text
    assert page.links["Réessayer"] == "/login?acr_values=phr"  # the same level again
    with rp.session_transaction() as session:
        assert "_state_idp_st4te" not in session  # that login is over


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("error=unmet_authentication_requirements&state=x", "niveau de sécurité demandé"),
        ("error=whatever&state=x", "La connexion n'a pas abouti."),
        ("code=abc&state=unknown", "ne correspond à aucune connexion en cours"),
    ],
)
def test_other_callback_errors_are_pages_too(rp, query, expected):
    response = rp.get(f"/callback?{query}")
    assert response.status_code == 200
    parsed(response.text)
    assert expected in " ".join(html.unescape(response.text).split())
    assert parsed(response.text).links["Réessayer"] == "/login"


def test_an_unknown_level_is_refused_without_leaving_the_app(rp):
    response = rp.get("/login?acr_values=loa4")
    assert response.status_code == 200 and "invalid_request" in response.text


DEMO = {
    "issuer": "http://localhost:5000",
    "username": "10000000009",
    "email": "camille.martin@demo.sante.fr",
    "password": "Demo-0123456789abcdef",
    "totp_secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
}


def test_banner_names_both_urls_the_account_the_credentials_and_how_to_stop():
    from idp.demo import banner

    text = banner(DEMO, "http://localhost:5001")
    for line in (
        "Application de démonstration / demo app : http://localhost:5001",
        "IdP : http://localhost:5000",
        "Mon compte / my account : http://localhost:5000/account",
        "Identifiant / username (RPPS) : 10000000009",
        "Mot de passe / password       : Demo-0123456789abcdef",
        "Clé TOTP / TOTP key           : JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        "Ctrl-C pour arrêter / to stop",
    ):
        assert text.count(line) == 1, line
    assert "█" in text or "▀" in text  # the QR code, drawn with block characters
    assert text.index("TOTP key") < text.index("▀") < text.index("Ctrl-C")


def test_the_banner_waits_until_both_servers_answer():
    from flask import Flask

    from idp.demo import wait_until_up

    app = Flask(__name__)
    app.get("/healthz")(lambda: "ok")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert wait_until_up([f"{url}/healthz", f"{url}/missing"], timeout=10)
    finally:
        server.shutdown()
    assert not wait_until_up([url], timeout=0.5)  # nobody answers any more
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603
    dead.wait()
    assert not wait_until_up([url], timeout=30, processes=[dead])  # at once: a server died
