"""TLS client-certificate login behind a proxy: who may forward, and full re-verification."""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from idp.factors.smartcard import verify as v
from idp.factors.smartcard.forwarded import (
    ClientCertificateMissingError,
    UntrustedProxyError,
    decode_forwarded_certificate,
    identity_from_forwarded_certificate,
    is_trusted_proxy,
)
from idp.factors.smartcard.trust import CrlCache
from tests.support import pki
from tests.unit.cardtrust.conftest import make_trust

PROXIES = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1/128"))


def escaped(*certificates) -> str:
    """As nginx's ``$ssl_client_escaped_cert``: the PEM, URL-escaped."""
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in certificates)
    return urllib.parse.quote(pem.decode(), safe="")


def login(trust, certificate, *, remote_addr="10.0.0.5", verify="SUCCESS", crls=None, **kw):
    return identity_from_forwarded_certificate(
        header_value=kw.pop("header_value", None) or escaped(certificate),
        verify_value=verify,
        remote_addr=remote_addr,
        trusted_proxies=kw.pop("trusted_proxies", PROXIES),
        trust=trust,
        crls=crls if crls is not None else [kw.pop("crl")],
        now=pki.NOW,
        **kw,
    )


@pytest.fixture
def good_crl(card_pki):
    return card_pki.crl()


def test_identity_from_a_trusted_proxy(trust, practitioner, good_crl):
    identity = login(trust, practitioner.certificate, crl=good_crl)

    assert (identity.surname, identity.given_name) == ("LEROY", "ANNE")
    assert identity.id_nat == "8" + identity.rpps


def test_feature_off_without_trusted_proxies(trust, practitioner, good_crl):
    with pytest.raises(UntrustedProxyError, match="off"):
        login(trust, practitioner.certificate, crl=good_crl, trusted_proxies=())


@pytest.mark.parametrize("remote_addr", ["10.0.1.5", "127.0.0.1", "not-an-ip", ""])
def test_refused_from_anywhere_else(trust, practitioner, good_crl, remote_addr):
    with pytest.raises(UntrustedProxyError):
        login(trust, practitioner.certificate, crl=good_crl, remote_addr=remote_addr)


def test_ipv4_mapped_and_ipv6_proxies():
    assert is_trusted_proxy(remote_addr="::ffff:10.0.0.9", trusted_proxies=PROXIES)
    assert is_trusted_proxy(remote_addr="::1", trusted_proxies=PROXIES)
    assert not is_trusted_proxy(remote_addr="::2", trusted_proxies=PROXIES)


@pytest.mark.parametrize("verify", [None, "", "NONE"])
def test_no_certificate_presented(trust, practitioner, good_crl, verify):
    with pytest.raises(ClientCertificateMissingError):
        login(trust, practitioner.certificate, crl=good_crl, verify=verify)


def test_proxy_verification_failure_refused_when_the_proxy_verifies(trust, practitioner, good_crl):
    failed = "FAILED:unable to get local issuer certificate"
    with pytest.raises(ClientCertificateMissingError, match="refused"):
        login(trust, practitioner.certificate, crl=good_crl, verify=failed)

    no_ca = dataclasses.replace(trust.forwarding, proxy_verifies=False)
    identity = login(
        dataclasses.replace(trust, forwarding=no_ca),
        practitioner.certificate,
        crl=good_crl,
        verify=failed,
    )
    assert identity.surname == "LEROY"


def test_proxy_success_does_not_replace_our_own_checks(card_pki, trust, good_crl):
    """nginx said SUCCESS, but the IdP does not know this CA: refused."""
    stranger = pki.make_pki(test=True).issue(id_nat="8" + pki.make_rpps())
    with pytest.raises(v.UntrustedCertificateError):
        login(trust, stranger.certificate, crl=good_crl)


def test_revoked_card_refused_with_crls_from_the_cache(card_pki, crl_server, sqlite_store, clock):
    revoked = card_pki.issue(id_nat="8" + pki.make_rpps())
    crl_server.serve(
        card_pki.crl_url(card_pki.intermediate),
        card_pki.crl(revoked_serials=(revoked.certificate.serial_number,)),
    )
    trust = make_trust(card_pki)
    cache = CrlCache(store=sqlite_store, trust=trust, clock=clock)

    with pytest.raises(v.CertificateRevokedError):
        login(trust, revoked.certificate, crls=cache)


def test_missing_crl_fails_closed(trust, practitioner):
    with pytest.raises(v.CrlMissingError):
        login(trust, practitioner.certificate, crls=[])


def test_production_refuses_test_cards(card_pki, practitioner, good_crl):
    production = make_trust(card_pki, policy=v.CardPolicy())
    with pytest.raises(v.TestCardRefusedError):
        login(production, practitioner.certificate, crl=good_crl)


@pytest.mark.parametrize(
    "header_value",
    [
        "garbage",
        urllib.parse.quote("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        "%" * (70 * 1024),
    ],
)
def test_malformed_header(trust, good_crl, header_value):
    with pytest.raises(v.MalformedSubmissionError):
        login(trust, None, crl=good_crl, header_value=header_value)


def test_exactly_one_certificate(card_pki, practitioner):
    with pytest.raises(v.MalformedSubmissionError, match="exactly one"):
        decode_forwarded_certificate(
            escaped(practitioner.certificate, card_pki.intermediate.certificate)
        )


def test_missing_header_after_a_successful_handshake(trust, good_crl):
    with pytest.raises(ClientCertificateMissingError):
        identity_from_forwarded_certificate(
            header_value=None,
            verify_value="SUCCESS",
            remote_addr="10.0.0.5",
            trusted_proxies=PROXIES,
            trust=trust,
            crls=[good_crl],
            now=pki.NOW,
        )
