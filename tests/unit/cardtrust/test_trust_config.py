"""Operator configuration of card trust: files, directories, booleans, refusals."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from idp.config import ConfigError
from idp.factors.smartcard.trust import (
    CardTrustConfigError,
    load_card_trust,
    load_certificates,
)
from smartcard.protocol import MECHANISM_PKCS1, SUPPORTED_MECHANISMS
from tests.support import pki


@pytest.fixture(scope="module")
def test_pki():
    return pki.make_pki(test=True)


@pytest.fixture(scope="module")
def prod_pki():
    return pki.make_pki(test=False)


def write_pem(path, *certificates):
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certificates))
    return path


def env_for(tmp_path, the_pki, **extra):
    anchors = write_pem(tmp_path / "roots.pem", the_pki.root.certificate)
    intermediates = write_pem(tmp_path / "intermediates.pem", the_pki.intermediate.certificate)
    return {
        "IDP_SMARTCARD_TRUST_ANCHORS": str(anchors),
        "IDP_SMARTCARD_INTERMEDIATES": str(intermediates),
        **extra,
    }


def test_unset_anchors_turn_card_login_off():
    assert load_card_trust({}) is None


def test_intermediates_without_anchors_is_an_error(tmp_path):
    with pytest.raises(CardTrustConfigError, match="without IDP_SMARTCARD_TRUST_ANCHORS"):
        load_card_trust({"IDP_SMARTCARD_INTERMEDIATES": str(tmp_path)})


def test_production_defaults(tmp_path, prod_pki):
    trust = load_card_trust(env_for(tmp_path, prod_pki))

    assert trust.anchors == (prod_pki.root.certificate,)
    assert trust.intermediates == (prod_pki.intermediate.certificate,)
    assert trust.policy.production and trust.policy.crl_fail_closed
    assert trust.policy.mechanisms == SUPPORTED_MECHANISMS
    assert trust.crl_urls == ()
    assert trust.crl_max_age == dt.timedelta(hours=6)
    assert trust.crl_max_bytes == 10 * 1024 * 1024
    assert not trust.forwarding.is_enabled
    assert trust.forwarding.cert_header == "X-SSL-Client-Cert"
    assert trust.forwarding.verify_header == "X-SSL-Client-Verify"
    assert trust.forwarding.proxy_verifies


def test_every_setting_read(tmp_path, test_pki):
    trust = load_card_trust(
        env_for(
            tmp_path,
            test_pki,
            IDP_SMARTCARD_ALLOW_TEST_CARDS="true",
            IDP_SMARTCARD_CRL_FAIL_CLOSED="no",
            IDP_SMARTCARD_CRL_URLS="http://crl.test/a.crl, file:///srv/crl/b.crl",
            IDP_SMARTCARD_CRL_MAX_AGE="3600",
            IDP_SMARTCARD_CRL_MAX_BYTES="2048",
            IDP_SMARTCARD_CRL_TIMEOUT="2.5",
            IDP_SMARTCARD_MECHANISMS=MECHANISM_PKCS1,
            IDP_TRUSTED_PROXIES="10.0.0.7, 192.168.1.0/24 ::1",
            IDP_SMARTCARD_CERT_HEADER="X-Client-Cert",
            IDP_SMARTCARD_VERIFY_HEADER="X-Client-Verify",
            IDP_SMARTCARD_PROXY_VERIFIES="off",
        )
    )

    assert not trust.policy.production and not trust.policy.crl_fail_closed
    assert trust.crl_urls == ("http://crl.test/a.crl", "file:///srv/crl/b.crl")
    assert trust.crl_max_age == dt.timedelta(hours=1)
    assert (trust.crl_max_bytes, trust.crl_timeout_seconds) == (2048, 2.5)
    assert trust.policy.mechanisms == {MECHANISM_PKCS1}
    assert trust.forwarding.trusted_proxies == (
        ipaddress.ip_network("10.0.0.7/32"),
        ipaddress.ip_network("192.168.1.0/24"),
        ipaddress.ip_network("::1/128"),
    )
    assert trust.forwarding.cert_header == "X-Client-Cert"
    assert not trust.forwarding.proxy_verifies


def test_directory_of_pem_and_der_files(tmp_path, test_pki, prod_pki):
    folder = tmp_path / "cas"
    folder.mkdir()
    write_pem(folder / "a.pem", test_pki.root.certificate, prod_pki.root.certificate)
    (folder / "b.der").write_bytes(test_pki.intermediate.certificate.public_bytes(Encoding.DER))
    write_pem(folder / "duplicate.crt", test_pki.root.certificate)
    (folder / "README.txt").write_text("ignored")

    certificates = load_certificates(folder, variable="X")

    assert certificates == (
        test_pki.root.certificate,
        prod_pki.root.certificate,
        test_pki.intermediate.certificate,
    )


def test_test_ca_refused_in_production(tmp_path, test_pki):
    with pytest.raises(CardTrustConfigError, match="IDP_SMARTCARD_ALLOW_TEST_CARDS"):
        load_card_trust(env_for(tmp_path, test_pki))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("IDP_SMARTCARD_CRL_FAIL_CLOSED", "maybe", "expected true or false"),
        ("IDP_SMARTCARD_MECHANISMS", "SHA1_RSA_PKCS", "unknown SHA1_RSA_PKCS"),
        ("IDP_SMARTCARD_CRL_URLS", "ldap://crl.test/x", "not http"),
        ("IDP_SMARTCARD_CRL_MAX_AGE", "soon", "expected a number"),
        ("IDP_SMARTCARD_CRL_MAX_BYTES", "-1", "must be positive"),
        ("IDP_TRUSTED_PROXIES", "proxy.internal", "not an address"),
        ("IDP_SMARTCARD_CERT_HEADER", "X_SSL_Client_Cert", "not a header name"),
    ],
)
def test_bad_values_name_the_variable(tmp_path, prod_pki, name, value, message):
    with pytest.raises(CardTrustConfigError, match=f"{name}.*{message}|{message}") as caught:
        load_card_trust(env_for(tmp_path, prod_pki, **{name: value}))
    assert name in str(caught.value)
    assert isinstance(caught.value, ConfigError)


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(CardTrustConfigError, match="IDP_SMARTCARD_TRUST_ANCHORS: cannot read"):
        load_card_trust({"IDP_SMARTCARD_TRUST_ANCHORS": str(tmp_path / "missing.pem")})


def test_garbage_file_is_a_config_error(tmp_path):
    (tmp_path / "roots.pem").write_text("not a certificate")
    with pytest.raises(CardTrustConfigError, match="not a PEM or DER certificate"):
        load_card_trust({"IDP_SMARTCARD_TRUST_ANCHORS": str(tmp_path / "roots.pem")})


def test_empty_directory_is_a_config_error(tmp_path):
    with pytest.raises(CardTrustConfigError, match="no certificate found"):
        load_certificates(tmp_path, variable="IDP_SMARTCARD_TRUST_ANCHORS")


def test_a_card_certificate_is_not_a_trust_anchor(tmp_path, prod_pki):
    card = prod_pki.issue(id_nat="8" + pki.make_rpps())
    path = write_pem(tmp_path / "card.pem", card.certificate)

    with pytest.raises(CardTrustConfigError, match="is not a CA certificate"):
        load_card_trust({"IDP_SMARTCARD_TRUST_ANCHORS": str(path)})
