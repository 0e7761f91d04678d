"""TLS client-certificate login end to end: the shipped nginx configuration (two host names on
one port) in front of the live IdP. The main host ``idp.example`` never asks for a certificate;
``card.idp.example`` does and forwards it on ``/login/card/tls`` only. The IdP trusts the
header from nginx's address only, re-verifies the card, and binds the login to the browser that
started it. The card's key sits in a file for ``requests`` and on a SoftHSM2 token for curl
(OpenSSL pkcs11 engine)."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import urllib.parse
from http.cookiejar import DefaultCookiePolicy

import pytest
import requests
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from requests.cookies import RequestsCookieJar
from werkzeug.middleware.proxy_fix import ProxyFix

from idp.db import dispose as dispose_app
from tests.support import nginx as harness
from tests.support import pki
from tests.support.cardlogin import add_practitioner, events, make_card_trust, serve_fresh_crls
from tests.support.idp_server import LiveServer, build_app, real_now_clock
from tests.support.oidc import RelyingParty, UserAgent
from tests.support.softhsm import provision_card, softhsm_or_skip

MAIN_HOST = "idp.example"
CARD_HOST = "card.idp.example"
REDIRECT = "http://localhost:9999/callback"
AMR = ["sc", "pin", "hwk", "mfa"]


@pytest.fixture(scope="module")
def nginx_binary():
    return harness.nginx_or_skip()


@pytest.fixture(scope="module")
def files(tmp_path_factory, card_pki, rpps):
    """The proxy's TLS identity for both names, the IGC-Santé CA file, a card in files."""
    directory = tmp_path_factory.mktemp("nginx-idp")
    holder = card_pki.issue(id_nat="8" + rpps, surname="MARTIN", given_name="JEANNE")
    (directory / "card.crt").write_bytes(holder.certificate.public_bytes(Encoding.PEM))
    (directory / "card.key").write_bytes(
        holder.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    (directory / "igc-sante-ca.pem").write_bytes(
        card_pki.root.certificate.public_bytes(Encoding.PEM)
        + card_pki.intermediate.certificate.public_bytes(Encoding.PEM)
    )
    tls = harness.write_server_tls(directory, hostnames=(MAIN_HOST, CARD_HOST))
    return {
        "dir": directory,
        "tls": tls,
        "card": (str(directory / "card.crt"), str(directory / "card.key")),
    }


@pytest.fixture
def ports():
    return {"https": harness.free_port(), "http": harness.free_port()}


@pytest.fixture
def clock():
    return real_now_clock()


@pytest.fixture
def app(database_url, tmp_path, clock, card_pki, crl_server, ports):
    serve_fresh_crls(crl_server, card_pki, now=clock.now())
    application = build_app(
        database_url,
        tmp_path,
        clock,
        smartcard=make_card_trust(card_pki),
        smartcard_tls_url=f"https://{CARD_HOST}:{ports['https']}/login/card/tls",
    )
    yield application
    dispose_app(application)


@pytest.fixture
def resolver(monkeypatch):
    """Both host names resolve to 127.0.0.1, where nginx listens (no DNS in tests)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real("127.0.0.1" if host in (MAIN_HOST, CARD_HOST) else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def issuer(nginx_binary, app, files, ports, tmp_path_factory, resolver, monkeypatch):
    """The live IdP behind the shipped nginx configuration; returns the public issuer URL."""
    # gunicorn's part in production (forwarded_allow_ips + X-Forwarded-Proto): the scheme
    # only. REMOTE_ADDR stays the TCP peer, the only address the IdP trusts for the headers.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=0, x_proto=1, x_host=0, x_port=0, x_prefix=0)
    server = LiveServer(app)
    issuer = f"https://{MAIN_HOST}:{ports['https']}"
    app.extensions["idp.settings"].issuer = issuer
    site = harness.render_deploy_site(
        https_port=ports["https"],
        http_port=ports["http"],
        backend=f"127.0.0.1:{server.port}",
        files_directory=files["dir"],
    )
    proxy = harness.start_nginx(
        prefix=tmp_path_factory.mktemp("nginx"),
        site=site,
        ports=(ports["https"], ports["http"]),
    )
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(files["tls"].ca_file))
    yield issuer
    proxy.stop()
    server.stop()


@pytest.fixture
def client(app, issuer):
    from idp.demo import seed

    with app.app_context():
        return seed(rp_url="http://localhost:9999")


@pytest.fixture
def doctor(app, rpps):
    return add_practitioner(app, rpps=rpps)


def claims_of(rp: RelyingParty, client, response) -> dict:
    location = response.headers.get("Location", "")
    assert location.startswith(REDIRECT), (response.status_code, response.text[-500:])
    token = rp.exchange(location)
    return rp.verify_id_token(token["id_token"], client["client_id"])["claims"]


class BrowserSession(requests.Session):
    """Keeps host-only cookies on their host, as browsers do: Python's liberal cookie policy
    would send idp.example's session cookie to card.idp.example too."""

    POLICY = DefaultCookiePolicy(strict_ns_domain=DefaultCookiePolicy.DomainStrictNonDomain)

    def prepare_request(self, request):
        prepared = super().prepare_request(request)
        jar = RequestsCookieJar(policy=self.POLICY)
        for cookie in self.cookies:
            jar.set_cookie(cookie)
        prepared.headers.pop("Cookie", None)
        prepared.prepare_cookies(jar)
        return prepared


def browser(issuer: str, *, card: tuple[str, str] | None = None) -> UserAgent:
    agent = UserAgent(issuer)
    agent.http = BrowserSession()
    agent.http.cert = card
    return agent


def card_host_url(agent: UserAgent) -> str:
    """Where the main host sends the browser: the card host, with the transaction."""
    response = agent.http.get(agent.base + "/login/card/tls/start", allow_redirects=False)
    assert response.status_code == 303
    return response.headers["Location"]


def test_card_certificate_login_through_nginx(issuer, app, client, doctor, files, ports, rpps):
    rp = RelyingParty(issuer, client["client_id"], client["client_secret"], REDIRECT)
    agent = browser(issuer, card=files["card"])  # offered when the card host asks
    agent.get(rp.authorization_url(acr_values="phrh"))
    page = agent.get("/login/card")
    assert 'id="card-tls"' in page.text

    target = card_host_url(agent)
    assert target.startswith(f"https://{CARD_HOST}:{ports['https']}/login/card/tls?t=")
    callback = agent.get(target)  # card host → main host → /authorize → the client

    claims = claims_of(rp, client, callback)
    assert (claims["acr"], claims["amr"], claims["rpps"]) == ("phrh", AMR, rpps)
    assert events(app, "auth:smartcard:completed")[-1].details["method"] == "tls"
    assert [(c.name, c.domain) for c in agent.http.cookies if c.domain == CARD_HOST] == []


def test_a_victim_completing_an_attackers_transaction_logs_nobody_in(issuer, client, doctor, files):
    attacker = browser(issuer)
    attacker.get("/login/card")
    lure = card_host_url(attacker)  # the link the attacker sends to a practitioner

    victim = browser(issuer, card=files["card"])
    landed = victim.get(lure)

    assert landed.status_code == 400 and landed.url.startswith(f"{issuer}/login/card/tls/return")
    assert victim.http.get(f"{issuer}/account", allow_redirects=False).status_code == 302
    assert attacker.get("/login/card/tls/return").status_code == 400
    assert attacker.http.get(f"{issuer}/account", allow_redirects=False).status_code == 302


def test_main_host_never_forwards_a_certificate(issuer, doctor, files):
    agent = browser(issuer, card=files["card"])
    agent.get("/login/card")
    transaction = urllib.parse.parse_qs(urllib.parse.urlsplit(card_host_url(agent)).query)["t"]
    pem = open(files["card"][0]).read()
    forged = {
        "X-SSL-Client-Cert": urllib.parse.quote(pem, safe=""),
        "X-SSL-Client-Verify": "SUCCESS",
    }

    response = agent.http.get(
        f"{issuer}/login/card/tls",
        params={"t": transaction[0]},
        headers=forged,
        allow_redirects=False,
    )

    assert response.headers["Location"].endswith("?error=client_certificate_missing")
    assert agent.get(response.headers["Location"]).status_code == 401


def test_card_key_on_a_pkcs11_token_through_curl(
    issuer, client, card_pki, files, ports, tmp_path, app, crl_server, clock
):
    """curl + libp11 sign the TLS handshake on the token: the key never leaves it."""
    engine = harness.pkcs11_engine_or_skip()
    softhsm = softhsm_or_skip()
    token_rpps = pki.make_rpps(prefix="997")
    card = provision_card(
        softhsm=softhsm,
        issuer=card_pki.intermediate,
        id_nat="8" + token_rpps,
        crl_url_template=card_pki.crl_url_template,
        not_valid_before=clock.now() - dt.timedelta(days=30),
    )
    add_practitioner(app, rpps=token_rpps)
    rp = RelyingParty(issuer, client["client_id"], client["client_secret"], REDIRECT)
    agent = browser(issuer)
    agent.get(rp.authorization_url())
    agent.get("/login/card")
    target = card_host_url(agent)
    client_key = harness.token_client_key(
        tmp_path, engine=engine, module_path=softhsm.module_path, card=card
    )

    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code} %{redirect_url}",
            "--resolve",
            f"{CARD_HOST}:{ports['https']}:127.0.0.1",
            "--cacert",
            str(files["tls"].ca_file),
            "--cert",
            str(client_key.certificate),
            "--engine",
            "pkcs11",
            "--key-type",
            "ENG",
            "--key",
            client_key.key_uri,
            target,
        ],
        env=client_key.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    status, back = result.stdout.split(" ", 1)
    assert status == "303" and "?r=" in back, result.stdout
    claims = claims_of(rp, client, agent.get(back))
    assert (claims["acr"], claims["amr"], claims["rpps"]) == ("phrh", AMR, token_rpps)
