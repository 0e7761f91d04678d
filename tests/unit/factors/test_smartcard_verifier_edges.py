"""The CPS verifier at its edges: validity and CRL dates to the second, the identifier's exact
shape, the subject's required attributes, either test-CA marker alone, size limits."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

from idp.factors.smartcard import verify as v
from smartcard.protocol import MAX_MESSAGE_BYTES, signing_payload
from tests.support import pki

NOW = pki.NOW
SECOND = dt.timedelta(seconds=1)
TEST_POLICY = v.CardPolicy(production=False)
PAYLOAD = signing_payload(origin="https://idp.example", transaction="tx-1", challenge="Y2hhbA")


@pytest.fixture(scope="module")
def test_pki():
    return pki.make_pki(test=True)


@pytest.fixture(scope="module")
def prod_pki():
    return pki.make_pki(test=False)


def sign(key, data=PAYLOAD):
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def verify(issued, the_pki, *, now=NOW, crls=None, policy=TEST_POLICY, intermediate=None):
    return v.verify_card_login(
        certificate_der=issued.der,
        signature=sign(issued.key),
        payload=PAYLOAD,
        mechanism="SHA256_RSA_PKCS",
        trust_anchors=[the_pki.root.certificate],
        intermediates=[(intermediate or the_pki.intermediate).certificate],
        crls=[the_pki.crl()] if crls is None else crls,
        now=now,
        policy=policy,
    )


def leaf(the_pki, attributes: list[x509.NameAttribute]) -> pki.CardCertificate:
    """A card certificate like the real ones, with the subject RDN given attribute by attribute."""
    key = pki.new_key()
    subject = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]),
            x509.RelativeDistinguishedName(attributes),
        ]
    )
    issuer = the_pki.intermediate
    builder = (
        pki._base_builder(
            subject=subject,
            issuer=issuer.name,
            public_key=key.public_key(),
            not_valid_after=pki.VALID_UNTIL,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(pki._key_usage(digital_signature=True), critical=True)
        .add_extension(pki._aki(issuer), critical=False)
    )
    return pki.CardCertificate(certificate=builder.sign(issuer.key, hashes.SHA256()), key=key)


def rpps_attributes(id_nat: str | None = None, **names: str | None) -> list[x509.NameAttribute]:
    values = {
        NameOID.SURNAME: names.get("surname", "DURAND"),
        NameOID.COMMON_NAME: id_nat or "8" + pki.make_rpps(),
        NameOID.GIVEN_NAME: names.get("given_name", "PAUL"),
    }
    return [x509.NameAttribute(oid, value) for oid, value in values.items() if value is not None]


# --------------------------------------------------------------------------- validity (to the s)


def test_certificate_valid_from_its_first_second_to_its_last(test_pki):
    issued = test_pki.issue(id_nat="8" + pki.make_rpps())
    first, last = pki.VALID_FROM, pki.VALID_UNTIL
    crl_at_start = test_pki.crl(last_update=first - dt.timedelta(hours=1))
    crl_at_end = test_pki.crl(last_update=last - dt.timedelta(hours=1))

    assert verify(issued, test_pki, now=first, crls=[crl_at_start]).surname == "DUPONT"
    with pytest.raises(v.CertificateNotYetValidError):
        verify(issued, test_pki, now=first - SECOND, crls=[crl_at_start])
    assert verify(issued, test_pki, now=last, crls=[crl_at_end]).surname == "DUPONT"
    with pytest.raises(v.CertificateExpiredError):
        verify(issued, test_pki, now=last + SECOND, crls=[crl_at_end])


# --------------------------------------------------------------------------- CRL freshness


@pytest.fixture(scope="module")
def card(test_pki):
    return test_pki.issue(id_nat="8" + pki.make_rpps())


def test_crl_is_fresh_from_its_last_update(test_pki, card):
    assert verify(card, test_pki, crls=[test_pki.crl(last_update=NOW)]).surname == "DUPONT"
    with pytest.raises(v.CrlStaleError):  # a CRL dated in the future is not trusted yet
        verify(card, test_pki, crls=[test_pki.crl(last_update=NOW + SECOND)])


def test_crl_is_fresh_until_its_next_update_included(test_pki, card):
    last = NOW - dt.timedelta(days=7)
    on_time = test_pki.crl(last_update=last, next_update=NOW)
    late = test_pki.crl(last_update=last, next_update=NOW - SECOND)
    assert verify(card, test_pki, crls=[on_time]).surname == "DUPONT"
    with pytest.raises(v.CrlStaleError):
        verify(card, test_pki, crls=[late])


def test_a_missing_ca_crl_is_refused_only_when_required(test_pki, card):
    """The intermediate's own CRL (from the root) is absent: fine by default, not when required."""
    assert verify(card, test_pki).surname == "DUPONT"
    strict = dataclasses.replace(TEST_POLICY, require_ca_crls=True)
    with pytest.raises(v.CrlMissingError):
        verify(card, test_pki, policy=strict)


def test_a_link_without_crl_does_not_end_the_walk(test_pki, card):
    """Failing open on the leaf's missing CRL still checks the intermediate against the root's."""
    fail_open = dataclasses.replace(TEST_POLICY, crl_fail_closed=False)
    assert verify(card, test_pki, crls=[], policy=fail_open).surname == "DUPONT"
    root_revokes = pki.make_crl(
        issuer=test_pki.root, revoked_serials=(test_pki.intermediate.certificate.serial_number,)
    )
    with pytest.raises(v.CertificateRevokedError):
        verify(card, test_pki, crls=[root_revokes], policy=fail_open)


# --------------------------------------------------------------------------- identifier shape


@pytest.mark.parametrize(
    "id_nat",
    [
        "8" + "1" * 10,  # one digit short
        "8" + "1" * 12,  # one digit long
        "8" + "1" * 10 + "A",  # right length, not all digits
        "9" + "1" * 11,  # right length, another identifier type
    ],
)
def test_only_8_followed_by_11_digits_is_an_rpps_identifier(test_pki, id_nat):
    with pytest.raises(v.UnsupportedIdentifierError):
        verify(test_pki.issue(id_nat=id_nat), test_pki)


def test_8_followed_by_11_digits_is_accepted(test_pki):
    assert verify(test_pki.issue(id_nat="8" + "1" * 11), test_pki).rpps == "1" * 11


# --------------------------------------------------------------------------- subject attributes


@pytest.mark.parametrize("missing", ["surname", "given_name"])
def test_a_subject_without_surname_or_given_name_is_refused(test_pki, missing):
    with pytest.raises(v.UnsupportedIdentifierError):
        verify(leaf(test_pki, rpps_attributes(**{missing: None})), test_pki)


def test_a_subject_with_two_identifiers_is_refused(test_pki):
    attributes = rpps_attributes() + [
        x509.NameAttribute(NameOID.COMMON_NAME, "8" + pki.make_rpps())
    ]
    with pytest.raises(v.UnsupportedIdentifierError):
        verify(leaf(test_pki, attributes), test_pki)


def test_a_subject_with_two_surnames_is_refused(test_pki):
    attributes = rpps_attributes() + [x509.NameAttribute(NameOID.SURNAME, "MARTIN")]
    with pytest.raises(v.UnsupportedIdentifierError):
        verify(leaf(test_pki, attributes), test_pki)


def test_a_subject_without_title_has_no_profession_label(test_pki):
    identity = verify(leaf(test_pki, rpps_attributes()), test_pki)
    assert identity.profession_label is None
    assert (identity.surname, identity.given_name) == ("DURAND", "PAUL")


# --------------------------------------------------------------------------- test CA markers


def intermediate_named(parent: pki.Authority, *, common_name: str, unit: str) -> pki.Authority:
    key = pki.new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ASIP-SANTE"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    builder = (
        pki._base_builder(
            subject=name,
            issuer=parent.name,
            public_key=key.public_key(),
            not_valid_after=pki.CA_VALID_UNTIL - dt.timedelta(days=1),
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(pki._ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(pki._aki(parent), critical=False)
    )
    return pki.Authority(certificate=builder.sign(parent.key, hashes.SHA256()), key=key)


@pytest.mark.parametrize(
    ("common_name", "unit"),
    [
        ("AC IGC-SANTE STANDARD PERSONNES", "IGC-SANTE TEST"),  # the unit alone
        ("TEST AC IGC-SANTE STANDARD PERSONNES", "IGC-SANTE"),  # the name prefix alone
    ],
    ids=["test-unit", "test-prefix"],
)
def test_either_test_marker_alone_is_refused_in_production(prod_pki, common_name, unit):
    ca = intermediate_named(prod_pki.root, common_name=common_name, unit=unit)
    issued = pki.issue_card_certificate(issuer=ca, id_nat="8" + pki.make_rpps())
    production = v.CardPolicy()
    with pytest.raises(v.TestCardRefusedError):
        verify(issued, prod_pki, crls=[pki.make_crl(issuer=ca)], policy=production, intermediate=ca)


def test_a_production_chain_is_accepted_in_production(prod_pki):
    ca = intermediate_named(
        prod_pki.root, common_name="AC IGC-SANTE STANDARD PERSONNES", unit="IGC-SANTE"
    )
    issued = pki.issue_card_certificate(issuer=ca, id_nat="8" + pki.make_rpps())
    crls = [pki.make_crl(issuer=ca)]
    assert verify(issued, prod_pki, crls=crls, policy=v.CardPolicy(), intermediate=ca).rpps


# --------------------------------------------------------------------------- sizes


def test_signature_and_payload_up_to_16_kib(test_pki, card):
    def call(*, signature: bytes, payload: bytes):
        return v.verify_card_login(
            certificate_der=card.der,
            signature=signature,
            payload=payload,
            mechanism="SHA256_RSA_PKCS",
            trust_anchors=[test_pki.root.certificate],
            intermediates=[test_pki.intermediate.certificate],
            crls=[test_pki.crl()],
            now=NOW,
            policy=TEST_POLICY,
        )

    assert MAX_MESSAGE_BYTES == 16 * 1024
    # At the limit the input is read (and the signature found wrong); one byte over, refused.
    with pytest.raises(v.BadSignatureError):
        call(signature=b"\x01" * 16384, payload=PAYLOAD)
    with pytest.raises(v.MalformedSubmissionError):
        call(signature=b"\x01" * 16385, payload=PAYLOAD)
    with pytest.raises(v.BadSignatureError):
        call(signature=sign(card.key), payload=b"p" * 16384)
    with pytest.raises(v.MalformedSubmissionError):
        call(signature=sign(card.key), payload=b"p" * 16385)


def test_certificate_bytes_that_are_not_bytes_are_malformed(test_pki):
    for der in ("a text certificate", b""):
        with pytest.raises(v.MalformedSubmissionError):
            v.verify_certificate(
                certificate_der=der, trust_anchors=[test_pki.root.certificate], now=NOW
            )


def test_a_16_kib_certificate_is_parsed_one_byte_more_is_refused(test_pki):
    with pytest.raises(v.MalformedSubmissionError, match="not a DER"):
        v.verify_certificate(
            certificate_der=b"\x30" * 16384, trust_anchors=[test_pki.root.certificate], now=NOW
        )
    with pytest.raises(v.MalformedSubmissionError, match="too large"):
        v.verify_certificate(
            certificate_der=b"\x30" * 16385, trust_anchors=[test_pki.root.certificate], now=NOW
        )
