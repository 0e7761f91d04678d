"""A test PKI shaped like IGC-Santé: roots, PERSONNES intermediates, practitioner cards, CRLs.

Real CPS certificates are RSA 2048 with a multi-valued RDN subject; the fixtures reproduce that
so parsing and chain building meet the same shapes as in production.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from smartcard.certinfo import is_luhn_valid

NOW = dt.datetime(2026, 1, 15, 9, 0, tzinfo=dt.UTC)
VALID_FROM = NOW - dt.timedelta(days=365)
VALID_UNTIL = NOW + dt.timedelta(days=3 * 365)
CA_VALID_UNTIL = NOW + dt.timedelta(days=15 * 365)
CRL_URL = "http://igc-sante.test/crl/{name}.crl"
ASIP_OU = "0002 187512751"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate and private key."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def name(self) -> x509.Name:
        return self.certificate.subject


@dataclass(frozen=True)
class CardCertificate:
    """A practitioner certificate; ``key`` is None when the key lives on a token."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey | None

    @property
    def der(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.certificate.public_bytes(Encoding.DER)


@dataclass(frozen=True)
class Pki:
    """A root and its PERSONNES intermediate, as the verifier is configured with."""

    root: Authority
    intermediate: Authority
    crl_url_template: str = CRL_URL

    def issue(self, **kwargs) -> CardCertificate:
        kwargs.setdefault("crl_url_template", self.crl_url_template)
        return issue_card_certificate(issuer=self.intermediate, **kwargs)

    def crl_url(self, authority: Authority) -> str:
        """Where certificates issued by ``authority`` say its CRL lives."""
        return crl_url_for(authority, template=self.crl_url_template)

    def crl(self, **kwargs) -> x509.CertificateRevocationList:
        return make_crl(issuer=self.intermediate, **kwargs)


def make_pki(*, level: str = "STANDARD", test: bool = True, crl_url_template: str = CRL_URL) -> Pki:
    """Root + intermediate; ``test=False`` looks like production (no TEST markers).

    ``crl_url_template`` (``{name}`` = the issuer's CN, slugged) points the CRL distribution
    points at a test server.
    """
    root = make_root(level=level, test=test)
    intermediate = make_intermediate(
        parent=root, level=level, test=test, crl_url_template=crl_url_template
    )
    return Pki(root=root, intermediate=intermediate, crl_url_template=crl_url_template)


def ca_name(*, common_name: str, test: bool) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ASIP-SANTE"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ASIP_OU),
            x509.NameAttribute(
                NameOID.ORGANIZATIONAL_UNIT_NAME, "IGC-SANTE TEST" if test else "IGC-SANTE"
            ),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def practitioner_name(*, surname: str, id_nat: str, given_name: str, title: str) -> x509.Name:
    """``C=FR, title=...`` then ONE multi-valued RDN ``SN + CN + GN``, as on CPS cards."""
    return x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.TITLE, title)]),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.SURNAME, surname),
                    x509.NameAttribute(NameOID.COMMON_NAME, id_nat),
                    x509.NameAttribute(NameOID.GIVEN_NAME, given_name),
                ]
            ),
        ]
    )


def make_root(
    *, level: str = "STANDARD", test: bool = True, key: rsa.RSAPrivateKey | None = None
) -> Authority:
    """``AC RACINE IGC-SANTE <level>`` (``TEST AC ...`` when ``test``)."""
    key = key or new_key()
    prefix = "TEST " if test else ""
    name = ca_name(common_name=f"{prefix}AC RACINE IGC-SANTE {level}", test=test)
    builder = (
        _base_builder(subject=name, issuer=name, public_key=key.public_key())
        .not_valid_after(CA_VALID_UNTIL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    return Authority(certificate=builder.sign(key, hashes.SHA256()), key=key)


def make_intermediate(
    *,
    parent: Authority,
    level: str = "STANDARD",
    test: bool = True,
    crl_url_template: str = CRL_URL,
    **validity: dt.datetime,
) -> Authority:
    """``AC IGC-SANTE <level> PERSONNES`` signed by ``parent``."""
    key = new_key()
    prefix = "TEST " if test else ""
    name = ca_name(common_name=f"{prefix}AC IGC-SANTE {level} PERSONNES", test=test)
    builder = (
        _base_builder(subject=name, issuer=parent.name, public_key=key.public_key(), **validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(_aki(parent), critical=False)
        .add_extension(_crl_distribution(parent, template=crl_url_template), critical=False)
    )
    if "not_valid_after" not in validity:
        builder = builder.not_valid_after(CA_VALID_UNTIL - dt.timedelta(days=1))
    return Authority(certificate=builder.sign(parent.key, hashes.SHA256()), key=key)


def issue_card_certificate(
    *,
    issuer: Authority,
    id_nat: str,
    surname: str = "DUPONT",
    given_name: str = "MARIE",
    title: str = "Médecin",
    public_key: rsa.RSAPublicKey | None = None,
    not_valid_before: dt.datetime = VALID_FROM,
    not_valid_after: dt.datetime = VALID_UNTIL,
    signature_usage: bool = False,
    serial_number: int | None = None,
    extended_key_usage: tuple[x509.ObjectIdentifier, ...] = (
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    ),
    crl_url_template: str = CRL_URL,
) -> CardCertificate:
    """A practitioner auth certificate (or, with ``signature_usage``, the signature one)."""
    key = None
    if public_key is None:
        key = new_key()
        public_key = key.public_key()
    name = practitioner_name(surname=surname, id_nat=id_nat, given_name=given_name, title=title)
    usage = _key_usage(digital_signature=not signature_usage, content_commitment=signature_usage)
    builder = (
        _base_builder(
            subject=name,
            issuer=issuer.name,
            public_key=public_key,
            not_valid_before=not_valid_before,
            not_valid_after=not_valid_after,
            serial_number=serial_number,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False)
        .add_extension(_aki(issuer), critical=False)
        .add_extension(_crl_distribution(issuer, template=crl_url_template), critical=False)
    )
    return CardCertificate(certificate=builder.sign(issuer.key, hashes.SHA256()), key=key)


def make_crl(
    *,
    issuer: Authority,
    revoked_serials: tuple[int, ...] = (),
    last_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
    signing_key: rsa.RSAPrivateKey | None = None,
) -> x509.CertificateRevocationList:
    """A CRL from ``issuer``; ``signing_key`` forges one signed by somebody else."""
    last_update = last_update or NOW - dt.timedelta(hours=1)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.name)
        .last_update(last_update)
        .next_update(next_update or last_update + dt.timedelta(days=7))
    )
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(last_update - dt.timedelta(days=1))
            .build()
        )
    return builder.sign(signing_key or issuer.key, hashes.SHA256())


def make_rpps(*, prefix: str = "10", rng: random.Random | None = None) -> str:
    """An 11-digit RPPS number passing Luhn (test cards use the ``997`` prefix)."""
    rng = rng or random.Random()
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(10 - len(prefix)))
    for check in range(10):
        if is_luhn_valid(body + str(check)):
            return body + str(check)
    raise AssertionError("unreachable: one check digit always fits")


def _base_builder(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey,
    not_valid_before: dt.datetime = VALID_FROM,
    not_valid_after: dt.datetime | None = None,
    serial_number: int | None = None,
) -> x509.CertificateBuilder:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial_number or x509.random_serial_number())
        .not_valid_before(not_valid_before)
    )
    return builder.not_valid_after(not_valid_after) if not_valid_after else builder


def _aki(issuer: Authority) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())


def crl_url_for(issuer: Authority, *, template: str = CRL_URL) -> str:
    common_name = issuer.name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return template.format(name=str(common_name).replace(" ", "-").lower())


def issue_server_certificate(
    *, issuer: Authority, hostnames: tuple[str, ...] = ("localhost",), addresses=("127.0.0.1",)
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A TLS server certificate (for the reverse proxy in front of the IdP under test)."""
    import ipaddress

    key = new_key()
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    builder = (
        _base_builder(
            subject=subject,
            issuer=issuer.name,
            public_key=key.public_key(),
            not_valid_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
            not_valid_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(_aki(issuer), critical=False)
    )
    return builder.sign(issuer.key, hashes.SHA256()), key


def _crl_distribution(issuer: Authority, *, template: str = CRL_URL) -> x509.CRLDistributionPoints:
    url = crl_url_for(issuer, template=template)
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def _ca_key_usage() -> x509.KeyUsage:
    return _key_usage(key_cert_sign=True, crl_sign=True)


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
