"""TLS client certificates behind the reverse proxy: who may forward one, and its re-verification.

The card host's proxy (nginx) asks the browser for the card's certificate and forwards it in a
header; the IdP believes that header only from a configured proxy and verifies the certificate
again in full (``identity_from_forwarded_certificate``). Environment, read by
``load_forwarding_config`` as part of ``idp.factors.smartcard.trust.load_card_trust``:

``IDP_TRUSTED_PROXIES``
    Reverse proxies allowed to forward a TLS client certificate: addresses or CIDR networks,
    comma-separated. Empty (default): TLS client-certificate login is off.
``IDP_SMARTCARD_CERT_HEADER`` / ``IDP_SMARTCARD_VERIFY_HEADER``
    Headers carrying nginx's ``$ssl_client_escaped_cert`` and ``$ssl_client_verify``
    (defaults ``X-SSL-Client-Cert`` and ``X-SSL-Client-Verify``).
``IDP_SMARTCARD_PROXY_VERIFIES``
    ``true`` (default): the proxy checks the chain too (``ssl_verify_client optional`` with the
    IGC-Santé CAs) so the verify header must say ``SUCCESS``. ``false`` for
    ``optional_no_ca``: the header must only show that a certificate was presented. The IdP
    verifies the chain, validity, usage and revocation itself in both cases.

This module sits below ``trust`` (a ``CardTrust`` holds its ``ForwardingConfig``), so it names
the trust and CRL types for annotations only.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from idp.config import ConfigError
from idp.factors.smartcard.verify import (
    CardIdentity,
    MalformedSubmissionError,
    SmartcardVerificationError,
    verify_certificate,
)
from idp.forwarded import (
    IPNetwork,
    TrustedProxyConfigError,
    is_trusted_proxy,
    parse_trusted_proxies,
)

if TYPE_CHECKING:
    from idp.factors.smartcard.trust import CardTrust, CrlSource

DEFAULT_CERT_HEADER = "X-SSL-Client-Cert"
DEFAULT_VERIFY_HEADER = "X-SSL-Client-Verify"
PROXY_VERIFY_SUCCESS = "SUCCESS"
PROXY_VERIFY_NONE = "NONE"
MAX_FORWARDED_HEADER_BYTES = 64 * 1024
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class ForwardingConfigError(ConfigError):
    """The proxy settings are unreadable; the message names the variable (``load_card_trust``
    reports it as a ``CardTrustConfigError``)."""


class UntrustedProxyError(SmartcardVerificationError):
    """A forwarded certificate from an address that is not a configured proxy (or feature off)."""

    code = "untrusted_proxy"


class ClientCertificateMissingError(SmartcardVerificationError):
    """The proxy says no certificate was presented, or did not verify it when it should have."""

    code = "client_certificate_missing"


@dataclass(frozen=True, slots=True)
class ForwardingConfig:
    """How the reverse proxy hands over a TLS client certificate."""

    trusted_proxies: tuple[IPNetwork, ...] = ()
    cert_header: str = DEFAULT_CERT_HEADER
    verify_header: str = DEFAULT_VERIFY_HEADER
    proxy_verifies: bool = True

    @property
    def is_enabled(self) -> bool:
        return bool(self.trusted_proxies)


def load_forwarding_config(environ: Mapping[str, str]) -> ForwardingConfig:
    """``IDP_TRUSTED_PROXIES`` and the header names; header names never hold underscores
    (proxies and WSGI servers would drop or conflate them)."""
    try:
        proxies = parse_trusted_proxies(environ.get("IDP_TRUSTED_PROXIES", ""))
    except TrustedProxyConfigError as exc:
        raise ForwardingConfigError(str(exc)) from exc
    headers = {}
    for variable, default in (
        ("IDP_SMARTCARD_CERT_HEADER", DEFAULT_CERT_HEADER),
        ("IDP_SMARTCARD_VERIFY_HEADER", DEFAULT_VERIFY_HEADER),
    ):
        value = environ.get(variable, "").strip() or default
        if not HEADER_NAME.fullmatch(value):
            raise ForwardingConfigError(f"{variable}: {value!r} is not a header name (A-Z, 0-9, -)")
        headers[variable] = value
    return ForwardingConfig(
        trusted_proxies=proxies,
        cert_header=headers["IDP_SMARTCARD_CERT_HEADER"],
        verify_header=headers["IDP_SMARTCARD_VERIFY_HEADER"],
        proxy_verifies=parse_flag(environ, "IDP_SMARTCARD_PROXY_VERIFIES", default=True),
    )


def parse_flag(environ: Mapping[str, str], variable: str, *, default: bool, error=None) -> bool:
    """``true``/``false`` (and their usual spellings); ``error`` is the exception to raise."""
    value = environ.get(variable, "").strip().lower()
    if not value:
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise (error or ForwardingConfigError)(f"{variable}: expected true or false, got {value!r}")


def decode_forwarded_certificate(header_value: str | None) -> bytes:
    """nginx's ``$ssl_client_escaped_cert`` (URL-escaped PEM, exactly one) to DER."""
    if not header_value:
        raise ClientCertificateMissingError("no client certificate forwarded")
    if len(header_value) > MAX_FORWARDED_HEADER_BYTES:
        raise MalformedSubmissionError("forwarded certificate too large")
    pem = urllib.parse.unquote(header_value.strip()).encode("ascii", "replace")
    if not pem.startswith(b"-----BEGIN CERTIFICATE-----"):
        raise MalformedSubmissionError("forwarded certificate is not URL-escaped PEM")
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise MalformedSubmissionError("forwarded certificate does not parse") from exc
    if len(certificates) != 1:
        raise MalformedSubmissionError("expected exactly one forwarded certificate")
    return certificates[0].public_bytes(Encoding.DER)


def identity_from_forwarded_certificate(
    *,
    header_value: str | None,
    verify_value: str | None,
    remote_addr: str,
    trusted_proxies: Sequence[IPNetwork],
    trust: CardTrust,
    crls: CrlSource | Sequence[x509.CertificateRevocationList],
    now: dt.datetime,
    proxy_verifies: bool | None = None,
) -> CardIdentity:
    """A TLS client-certificate login: only from a trusted proxy, then verified HERE in full.

    ``remote_addr`` is the TCP peer (WSGI ``REMOTE_ADDR`` as the server set it, before any
    ProxyFix rewrites it from X-Forwarded-For, which a client controls). The proxy's own
    verification is a second opinion, never the decision: chain, validity, usage, revocation
    and identity are checked as for the agent's signed logins. ``crls`` is a CrlCache (CRLs
    fetched for this certificate once its chain verifies) or a ready list.
    ``proxy_verifies`` defaults to ``trust.forwarding.proxy_verifies``.
    """
    if not trusted_proxies:
        raise UntrustedProxyError("TLS client-certificate login is off (IDP_TRUSTED_PROXIES)")
    if not is_trusted_proxy(remote_addr=remote_addr, trusted_proxies=trusted_proxies):
        raise UntrustedProxyError(f"{remote_addr} is not a trusted proxy")
    if proxy_verifies is None:
        proxy_verifies = trust.forwarding.proxy_verifies
    verify = (verify_value or "").strip()
    if not verify or verify == PROXY_VERIFY_NONE:
        raise ClientCertificateMissingError("the proxy received no client certificate")
    if proxy_verifies and verify != PROXY_VERIFY_SUCCESS:
        raise ClientCertificateMissingError(f"the proxy refused the certificate: {verify[:80]}")
    certificate_der = decode_forwarded_certificate(header_value)
    if hasattr(crls, "crls_for_certificate"):  # a CrlSource (runtime-checkable: the same test)
        crl_list = crls.crls_for_certificate(certificate_der=certificate_der)
    else:
        crl_list = list(crls)
    return verify_certificate(
        certificate_der=certificate_der,
        trust_anchors=trust.anchors,
        intermediates=trust.intermediates,
        crls=crl_list,
        now=now,
        policy=trust.policy,
    )
