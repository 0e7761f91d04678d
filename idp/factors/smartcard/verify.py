"""Pure verifier for CPS smart-card logins (STANDARDS.md SC-01..SC-03).

No Flask, no database, no network: the caller hands in the trust anchors, intermediates and
already-fetched CRLs, the expected payload (``smartcard.protocol.signing_payload`` over the
server-side challenge) and ``now``. Each check is one step raising one precise error, so the
audit trail says exactly why a card was refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from smartcard.protocol import (
    MAX_MESSAGE_BYTES,
    MECHANISM_PKCS1,
    MECHANISM_PSS,
    SUPPORTED_MECHANISMS,
    ProtocolError,
    parse_card_answer,
)

TEST_CA_UNIT = "IGC-SANTE TEST"
TEST_CA_PREFIX = "TEST "
TEST_RPPS_PREFIX = "997"
RPPS_LENGTH = 11
MAX_CHAIN_DEPTH = 4


class SmartcardVerificationError(Exception):
    """Base of every refusal; ``code`` is stable for audit details."""

    code = "smartcard_refused"


class MalformedSubmissionError(SmartcardVerificationError):
    code = "malformed_submission"


class UntrustedCertificateError(SmartcardVerificationError):
    code = "untrusted_certificate"


class CertificateExpiredError(SmartcardVerificationError):
    code = "certificate_expired"


class CertificateNotYetValidError(SmartcardVerificationError):
    code = "certificate_not_yet_valid"


class KeyUsageError(SmartcardVerificationError):
    code = "key_usage"


class CertificateRevokedError(SmartcardVerificationError):
    code = "certificate_revoked"


class CrlStaleError(SmartcardVerificationError):
    """Revocation status unknown: CRL past nextUpdate (or missing) while failing closed."""

    code = "crl_stale"


class CrlMissingError(CrlStaleError):
    code = "crl_missing"


class BadSignatureError(SmartcardVerificationError):
    code = "bad_signature"


class UnsupportedIdentifierError(SmartcardVerificationError):
    code = "unsupported_identifier"


class MechanismRefusedError(SmartcardVerificationError):
    """A known mechanism this deployment does not accept (``CardPolicy.mechanisms``)."""

    code = "mechanism_refused"


class TestCardRefusedError(SmartcardVerificationError):
    __test__ = False  # not a pytest test class, despite the name
    code = "test_card_refused"


@dataclass(frozen=True, slots=True)
class CardPolicy:
    """What this deployment accepts; production refuses test CAs and test RPPS numbers."""

    id_attribute_oid: x509.ObjectIdentifier = NameOID.COMMON_NAME
    id_prefix: str = "8"
    production: bool = True
    require_digital_signature: bool = True
    require_client_auth_eku: bool = True
    crl_fail_closed: bool = True
    require_ca_crls: bool = False
    mechanisms: frozenset[str] = SUPPORTED_MECHANISMS


@dataclass(frozen=True, slots=True)
class CardIdentity:
    rpps: str
    id_nat: str
    given_name: str
    surname: str
    profession_label: str | None
    certificate_fingerprint_sha256: str
    not_after: dt.datetime


@dataclass(frozen=True, slots=True)
class CardSubmission:
    certificate_der: bytes
    signature: bytes
    mechanism: str


def decode_submission(data: Any) -> CardSubmission:
    """The agent's JSON answer (``smartcard.protocol``), decoded or MalformedSubmissionError."""
    try:
        answer = parse_card_answer(data)
    except ProtocolError as exc:
        raise MalformedSubmissionError(str(exc)) from exc
    return CardSubmission(
        certificate_der=answer.certificate_der,
        signature=answer.signature,
        mechanism=answer.mechanism,
    )


def verify_card_login(
    *,
    certificate_der: bytes,
    signature: bytes,
    payload: bytes,
    mechanism: str,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
    now: dt.datetime,
    policy: CardPolicy = CardPolicy(),
) -> CardIdentity:
    """Certificate checks of ``verify_certificate``, then the signature over ``payload``."""
    if len(signature) > MAX_MESSAGE_BYTES or len(payload) > MAX_MESSAGE_BYTES:
        raise MalformedSubmissionError("input too large")
    if mechanism not in SUPPORTED_MECHANISMS:
        raise MalformedSubmissionError(f"unsupported mechanism {mechanism!r}")
    if mechanism not in policy.mechanisms:
        raise MechanismRefusedError(f"mechanism {mechanism} not accepted here")
    identity, certificate = _verify_certificate(
        certificate_der=certificate_der,
        trust_anchors=trust_anchors,
        intermediates=intermediates,
        crls=crls,
        now=now,
        policy=policy,
    )
    verify_signature(
        certificate=certificate, signature=signature, payload=payload, mechanism=mechanism
    )
    return identity


def verify_submission(
    *, submission: Mapping[str, Any], payload: bytes, **checks: Any
) -> CardIdentity:
    """Decode the agent's JSON answer and verify it (``checks`` as for verify_card_login)."""
    decoded = decode_submission(submission)
    return verify_card_login(
        certificate_der=decoded.certificate_der,
        signature=decoded.signature,
        mechanism=decoded.mechanism,
        payload=payload,
        **checks,
    )


def verify_certificate(
    *,
    certificate_der: bytes,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
    now: dt.datetime,
    policy: CardPolicy = CardPolicy(),
) -> CardIdentity:
    """Chain, validity, usage, revocation and identity: for TLS client certificates too."""
    identity, _ = _verify_certificate(
        certificate_der=certificate_der,
        trust_anchors=trust_anchors,
        intermediates=intermediates,
        crls=crls,
        now=now,
        policy=policy,
    )
    return identity


def verify_signature(
    *, certificate: x509.Certificate, signature: bytes, payload: bytes, mechanism: str
) -> None:
    """The card's RSA key signed exactly ``payload`` (PKCS#1 v1.5 or PSS, SHA-256)."""
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise BadSignatureError("card keys are RSA")
    if mechanism == MECHANISM_PKCS1:
        scheme: padding.AsymmetricPadding = padding.PKCS1v15()
    elif mechanism == MECHANISM_PSS:
        scheme = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
    else:
        raise MalformedSubmissionError(f"unsupported mechanism {mechanism!r}")
    try:
        public_key.verify(signature, payload, scheme, hashes.SHA256())
    except InvalidSignature as exc:
        raise BadSignatureError("signature does not match the payload and certificate") from exc


def _verify_certificate(
    *,
    certificate_der: bytes,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    now: dt.datetime,
    policy: CardPolicy,
) -> tuple[CardIdentity, x509.Certificate]:
    chain = verified_chain(
        certificate_der=certificate_der,
        trust_anchors=trust_anchors,
        intermediates=intermediates,
        now=now,
    )
    certificate = chain[0]
    if policy.production:
        _refuse_test_chain(chain)
    if policy.require_digital_signature:
        _check_key_usage(certificate)
    if policy.require_client_auth_eku:
        _check_extended_key_usage(certificate)
    _check_revocation(chain=chain, crls=crls, now=now, policy=policy)
    identity = _read_identity(certificate=certificate, policy=policy)
    if policy.production and identity.rpps.startswith(TEST_RPPS_PREFIX):
        raise TestCardRefusedError(f"test RPPS number {identity.rpps}")
    return identity, certificate


def verified_chain(
    *,
    certificate_der: bytes,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    now: dt.datetime,
) -> list[x509.Certificate]:
    """Leaf first, anchor last, validity checked: only then may its CRL URLs be fetched."""
    certificate = _load_certificate(certificate_der)
    _check_validity(certificate=certificate, now=now)
    return _build_chain(
        certificate=certificate,
        trust_anchors=trust_anchors,
        intermediates=intermediates,
        now=now,
    )


def is_crl_signed_by(*, crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    """Same issuer name AND a valid signature: a CRL nobody can vouch for is no CRL."""
    if crl.issuer != issuer.subject:
        return False
    public_key = issuer.public_key()
    return crl.is_signature_valid(public_key)  # type: ignore[arg-type]


def is_test_authority(certificate: x509.Certificate) -> bool:
    """Subject or issuer carries the IGC-Santé test markers (``OU=IGC-SANTE TEST``, ``TEST AC``)."""
    return any(_is_test_name(name) for name in (certificate.subject, certificate.issuer))


def _load_certificate(certificate_der: bytes) -> x509.Certificate:
    if not isinstance(certificate_der, bytes) or not certificate_der:
        raise MalformedSubmissionError("certificate missing")
    if len(certificate_der) > MAX_MESSAGE_BYTES:
        raise MalformedSubmissionError("certificate too large")
    try:
        return x509.load_der_x509_certificate(certificate_der)
    except ValueError as exc:
        raise MalformedSubmissionError("not a DER X.509 certificate") from exc


def _check_validity(*, certificate: x509.Certificate, now: dt.datetime) -> None:
    if now < certificate.not_valid_before_utc:
        raise CertificateNotYetValidError(certificate.not_valid_before_utc.isoformat())
    if now > certificate.not_valid_after_utc:
        raise CertificateExpiredError(certificate.not_valid_after_utc.isoformat())


def _build_chain(
    *,
    certificate: x509.Certificate,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    now: dt.datetime,
) -> list[x509.Certificate]:
    """Leaf first, anchor last; CA rules are WebPKI's, the leaf's are checked here instead."""
    if not trust_anchors:
        raise UntrustedCertificateError("no trust anchor configured")
    verifier = (
        PolicyBuilder()
        .store(Store(list(trust_anchors)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(certificate, list(intermediates))
    except VerificationError as exc:
        raise UntrustedCertificateError(str(exc)) from exc
    return list(verified.chain)


def _refuse_test_chain(chain: Sequence[x509.Certificate]) -> None:
    for link in chain:
        for name in (link.subject, link.issuer):
            if _is_test_name(name):
                raise TestCardRefusedError(f"test CA {name.rfc4514_string()}")


def _is_test_name(name: x509.Name) -> bool:
    units = [a.value for a in name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    names = [a.value for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return TEST_CA_UNIT in units or any(str(n).startswith(TEST_CA_PREFIX) for n in names)


def _check_key_usage(certificate: x509.Certificate) -> None:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise KeyUsageError("no keyUsage extension") from exc
    if not usage.digital_signature:
        raise KeyUsageError("keyUsage lacks digitalSignature")


def _check_extended_key_usage(certificate: x509.Certificate) -> None:
    """Absent EKU means any use; a present one must allow client authentication."""
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(
        usages
    ):
        raise KeyUsageError("extendedKeyUsage lacks clientAuth")


def _check_revocation(
    *,
    chain: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    now: dt.datetime,
    policy: CardPolicy,
) -> None:
    """Each certificate below the anchor against a CRL signed by its issuer.

    A listed serial is refused even from a stale CRL; an unknown status only passes when the
    policy fails open. Intermediates without a CRL pass unless ``require_ca_crls``.
    """
    for position, (subject, issuer) in enumerate(zip(chain, chain[1:], strict=False)):
        issued = [crl for crl in crls if is_crl_signed_by(crl=crl, issuer=issuer)]
        for crl in issued:
            if crl.get_revoked_certificate_by_serial_number(subject.serial_number) is not None:
                raise CertificateRevokedError(f"serial {subject.serial_number:x}")
        required = position == 0 or policy.require_ca_crls
        if not issued:
            if required and policy.crl_fail_closed:
                raise CrlMissingError(f"no CRL from {issuer.subject.rfc4514_string()}")
            continue
        if not any(_is_fresh(crl=crl, now=now) for crl in issued) and policy.crl_fail_closed:
            raise CrlStaleError(f"CRL from {issuer.subject.rfc4514_string()} is out of date")


def _is_fresh(*, crl: x509.CertificateRevocationList, now: dt.datetime) -> bool:
    next_update = crl.next_update_utc
    return crl.last_update_utc <= now and next_update is not None and now <= next_update


def _read_identity(*, certificate: x509.Certificate, policy: CardPolicy) -> CardIdentity:
    subject = certificate.subject
    id_nat = _single(subject, policy.id_attribute_oid, required=True)
    digits = len(policy.id_prefix) + RPPS_LENGTH
    if not (id_nat.startswith(policy.id_prefix) and len(id_nat) == digits and id_nat.isdigit()):
        raise UnsupportedIdentifierError(f"identifier type not accepted: {id_nat[:1]!r}")
    return CardIdentity(
        rpps=id_nat[len(policy.id_prefix) :],
        id_nat=id_nat,
        given_name=_single(subject, NameOID.GIVEN_NAME, required=True),
        surname=_single(subject, NameOID.SURNAME, required=True),
        profession_label=_single(subject, NameOID.TITLE, required=False) or None,
        certificate_fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        not_after=certificate.not_valid_after_utc,
    )


def _single(name: x509.Name, oid: x509.ObjectIdentifier, *, required: bool) -> str:
    """One attribute by type, wherever it sits (multi-valued RDNs included)."""
    values = [a.value for a in name.get_attributes_for_oid(oid) if isinstance(a.value, str)]
    if len(values) == 1 and values[0]:
        return values[0]
    if required:
        raise UnsupportedIdentifierError(f"subject must hold exactly one {oid.dotted_string}")
    return ""
