"""A real nginx terminates TLS, asks for the card certificate and forwards it to the IdP code.

The backend is a tiny WSGI app calling ``identity_from_forwarded_certificate`` exactly as the
IdP view will. Clients connect with ``requests`` (certificate and key files), ``urllib3`` (to
pick the SNI host of the shipped two-host configuration) and, when available, ``curl`` with
the private key on a SoftHSM2 token through the OpenSSL pkcs11 engine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import threading
import urllib.parse

import pytest
import requests
import urllib3
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID
from werkzeug.serving import make_server

from idp.factors.smartcard.forwarded import identity_from_forwarded_certificate
from idp.factors.smartcard.verify import SmartcardVerificationError
from tests.support import nginx as harness
from tests.support import pki
from tests.support.softhsm import SoftHsmUnavailableError, provision_card, softhsm_environment
from tests.unit.cardtrust.conftest import ci_or_skip, make_trust

LOCALHOST = (ipaddress.ip_network("127.0.0.1/32"),)
ENGINE_PATHS = (
    "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so",
    "/usr/lib/engines-3/pkcs11.so",
)


class Backend:
    """The IdP's side of the proxy: card path → identity or refusal; elsewhere → echo headers."""

    def __init__(self, *, trust, crls, proxy_verifies: bool) -> None:
        self.trust = trust
        self.crls = crls
        self.proxy_verifies = proxy_verifies
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.address = f"127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def app(self, environ, start_response):
        seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        status, body = "200 OK", {"headers": seen}
        if environ["PATH_INFO"] == harness.CARD_PATH:
            try:
                identity = identity_from_forwarded_certificate(
                    header_value=environ.get("HTTP_X_SSL_CLIENT_CERT"),
                    verify_value=environ.get("HTTP_X_SSL_CLIENT_VERIFY"),
                    remote_addr=environ["REMOTE_ADDR"],
                    trusted_proxies=LOCALHOST,
                    trust=self.trust,
                    crls=self.crls,
                    now=pki.NOW,
                    proxy_verifies=self.proxy_verifies,
                )
                body |= {"rpps": identity.rpps, "surname": identity.surname}
            except SmartcardVerificationError as exc:
                status, body = "403 Forbidden", body | {"error": exc.code}
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json")])
        return [data]

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def nginx_binary():
    binary = harness.find_nginx()
    if binary is None:
        ci_or_skip("nginx (apt-get install -y nginx)")
    return binary


@pytest.fixture(scope="module")
def files(tmp_path_factory, card_pki, practitioner):
    """Client certificate and key files, the IGC-Santé CA file for nginx, the proxy's TLS."""
    directory = tmp_path_factory.mktemp("nginx-files")
    stranger = pki.make_pki(test=True).issue(id_nat="8" + pki.make_rpps())
    paths = {}
    for name, card in (("card", practitioner), ("stranger", stranger)):
        paths[f"{name}.crt"] = directory / f"{name}.crt"
        paths[f"{name}.crt"].write_bytes(card.certificate.public_bytes(Encoding.PEM))
        paths[f"{name}.key"] = directory / f"{name}.key"
        paths[f"{name}.key"].write_bytes(
            card.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
    paths["igc-sante-ca.pem"] = directory / "igc-sante-ca.pem"
    paths["igc-sante-ca.pem"].write_bytes(
        card_pki.root.certificate.public_bytes(Encoding.PEM)
        + card_pki.intermediate.certificate.public_bytes(Encoding.PEM)
    )
    paths["stranger"] = stranger
    paths["tls"] = harness.write_server_tls(
        directory, hostnames=("localhost", "idp.example", "card.idp.example")
    )
    paths["dir"] = directory
    return paths


@pytest.fixture(scope="module")
def crls(card_pki):
    return [card_pki.crl(), pki.make_crl(issuer=card_pki.root)]


def start_proxy(tmp_path_factory, *, backend, tls, client_ca_file=None):
    port = harness.free_port()
    site = harness.card_site(
        port=port, backend=backend.address, tls=tls, client_ca_file=client_ca_file
    )
    return harness.start_nginx(
        prefix=tmp_path_factory.mktemp("nginx"), site=site, ports=(port,)
    ), f"https://localhost:{port}"


@pytest.fixture(scope="module")
def no_ca(nginx_binary, tmp_path_factory, card_pki, files, crls):
    """``ssl_verify_client optional_no_ca``: nginx forwards any certificate, the IdP decides."""
    backend = Backend(trust=make_trust(card_pki), crls=crls, proxy_verifies=False)
    proxy, url = start_proxy(tmp_path_factory, backend=backend, tls=files["tls"])
    yield url
    proxy.stop()
    backend.stop()


@pytest.fixture(scope="module")
def with_ca(nginx_binary, tmp_path_factory, card_pki, files, crls):
    """``ssl_verify_client optional`` with the IGC-Santé CAs: nginx checks the chain too."""
    backend = Backend(trust=make_trust(card_pki), crls=crls, proxy_verifies=True)
    proxy, url = start_proxy(
        tmp_path_factory,
        backend=backend,
        tls=files["tls"],
        client_ca_file=files["igc-sante-ca.pem"],
    )
    yield url
    proxy.stop()
    backend.stop()


def get(url, files, *, client=None, headers=None):
    cert = (str(files[f"{client}.crt"]), str(files[f"{client}.key"])) if client else None
    return requests.get(url, cert=cert, verify=str(files["tls"].ca_file), headers=headers)


def forged_headers(card_pki, practitioner):
    pem = practitioner.certificate.public_bytes(Encoding.PEM).decode()
    return {
        "X-SSL-Client-Cert": urllib.parse.quote(pem, safe=""),
        "X-SSL-Client-Verify": "SUCCESS",
        "X_SSL_Client_Cert": urllib.parse.quote(pem, safe=""),
    }


def test_client_certificate_file_logs_in(no_ca, files, practitioner):
    response = get(no_ca + harness.CARD_PATH, files, client="card")

    assert response.status_code == 200, response.text
    assert response.json()["surname"] == "LEROY"
    expected = practitioner.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert "8" + response.json()["rpps"] == expected[0].value


def test_no_client_certificate_is_refused(no_ca, files):
    response = get(no_ca + harness.CARD_PATH, files)

    assert response.status_code == 403
    assert response.json()["error"] == "client_certificate_missing"


def test_untrusted_ca_passes_nginx_but_not_the_idp(no_ca, files):
    response = get(no_ca + harness.CARD_PATH, files, client="stranger")

    assert response.status_code == 403
    assert response.json()["error"] == "untrusted_certificate"


def test_injected_headers_are_cleared_on_other_paths(no_ca, files, card_pki, practitioner):
    response = get(
        no_ca + "/authorize", files, client="card", headers=forged_headers(card_pki, practitioner)
    )

    seen = response.json()["headers"]
    assert "HTTP_X_SSL_CLIENT_CERT" not in seen
    assert "HTTP_X_SSL_CLIENT_VERIFY" not in seen
    assert "HTTP_X_FORWARDED_FOR" in seen  # the proxy did forward the request


def test_injected_header_on_the_card_path_is_replaced(no_ca, files, card_pki, practitioner):
    """No certificate in the handshake: the forged header must not log anybody in."""
    response = get(no_ca + harness.CARD_PATH, files, headers=forged_headers(card_pki, practitioner))

    assert response.status_code == 403
    assert response.json()["error"] == "client_certificate_missing"


def test_injected_header_cannot_replace_the_presented_certificate(
    no_ca, files, card_pki, practitioner
):
    response = get(
        no_ca + harness.CARD_PATH,
        files,
        client="stranger",
        headers=forged_headers(card_pki, practitioner),
    )

    assert response.json()["error"] == "untrusted_certificate"


def test_nginx_verifying_with_the_igc_sante_cas(with_ca, files):
    response = get(with_ca + harness.CARD_PATH, files, client="card")

    assert response.status_code == 200, response.text
    assert response.json()["headers"]["HTTP_X_SSL_CLIENT_VERIFY"] == "SUCCESS"


def test_nginx_refuses_an_unknown_ca_itself_when_verifying(with_ca, files):
    response = get(with_ca + harness.CARD_PATH, files, client="stranger")

    assert response.status_code == 400
    assert "SSL certificate error" in response.text  # nginx's page: the IdP never saw it


# --- the shipped configuration ----------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(nginx_binary, tmp_path_factory, card_pki, files, crls):
    """deploy/nginx/idp-client-cert.conf, run as shipped: two hosts on one port."""
    backend = Backend(trust=make_trust(card_pki), crls=crls, proxy_verifies=True)
    https_port, http_port = harness.free_port(), harness.free_port()
    site = harness.render_deploy_site(
        https_port=https_port,
        http_port=http_port,
        backend=backend.address,
        files_directory=files["dir"],
    )
    proxy = harness.start_nginx(
        prefix=tmp_path_factory.mktemp("nginx-deploy"), site=site, ports=(https_port, http_port)
    )
    yield https_port
    proxy.stop()
    backend.stop()


def request_host(port, files, *, host, path, client=None, headers=None):
    """HTTPS to 127.0.0.1 with SNI and Host set to ``host``."""
    extra = {}
    if client:
        extra = {"cert_file": str(files[f"{client}.crt"]), "key_file": str(files[f"{client}.key"])}
    pool = urllib3.HTTPSConnectionPool(
        "127.0.0.1",
        port,
        server_hostname=host,
        assert_hostname=host,
        cert_reqs="CERT_REQUIRED",
        ca_certs=str(files["tls"].ca_file),
        retries=False,
        **extra,
    )
    try:
        return pool.request("GET", path, headers={"Host": host, **(headers or {})})
    finally:
        pool.close()


def test_deployed_card_host_logs_in_with_a_card(deployed, files):
    response = request_host(
        deployed, files, host="card.idp.example", path=harness.CARD_PATH, client="card"
    )

    assert response.status == 200, response.data
    body = response.json()
    assert body["surname"] == "LEROY"
    assert body["headers"]["HTTP_X_SSL_CLIENT_VERIFY"] == "SUCCESS"


def test_deployed_card_host_serves_nothing_else(deployed, files):
    response = request_host(
        deployed, files, host="card.idp.example", path="/authorize", client="card"
    )

    assert response.status == 404


def test_deployed_card_host_without_a_card(deployed, files):
    response = request_host(deployed, files, host="card.idp.example", path=harness.CARD_PATH)

    assert response.status == 403
    assert response.json()["error"] == "client_certificate_missing"


def test_deployed_main_host_never_forwards_a_certificate(deployed, files, card_pki, practitioner):
    response = request_host(
        deployed,
        files,
        host="idp.example",
        path=harness.CARD_PATH,
        client="card",
        headers=forged_headers(card_pki, practitioner),
    )

    assert response.status == 403
    body = response.json()
    assert body["error"] == "client_certificate_missing"
    assert "HTTP_X_SSL_CLIENT_CERT" not in body["headers"]


def test_deployed_config_passes_nginx_t(nginx_binary, tmp_path_factory, files):
    site = harness.render_deploy_site(
        https_port=harness.free_port(),
        http_port=harness.free_port(),
        backend="127.0.0.1:9",
        files_directory=files["dir"],
    )
    harness.check_config(prefix=tmp_path_factory.mktemp("nginx-t"), site=site)


# --- bonus: the private key stays on a PKCS#11 token -----------------------------------------


@pytest.fixture(scope="module")
def pkcs11_engine():
    engine = next((path for path in ENGINE_PATHS if os.path.exists(path)), None)
    if engine is None or shutil.which("curl") is None:
        ci_or_skip(
            "curl and the OpenSSL pkcs11 engine (apt-get install -y libengine-pkcs11-openssl)"
        )
    return engine


@pytest.fixture(scope="module")
def token_card(card_pki):
    try:
        softhsm = softhsm_environment()
    except SoftHsmUnavailableError as exc:
        ci_or_skip(f"SoftHSM2: {exc}")
    card = provision_card(
        softhsm=softhsm,
        issuer=card_pki.intermediate,
        id_nat="8" + pki.make_rpps(),
        surname="MOREAU",
        given_name="LUC",
    )
    return softhsm, card


def test_key_on_a_pkcs11_token_through_curl(no_ca, files, pkcs11_engine, token_card, tmp_path):
    """curl + libp11 sign the TLS handshake on the token: the key never leaves it."""
    softhsm, card = token_card
    client_key = harness.token_client_key(
        tmp_path, engine=pkcs11_engine, module_path=softhsm.module_path, card=card
    )
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
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
            no_ca + harness.CARD_PATH,
        ],
        env=client_key.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body.get("surname") == "MOREAU", body
