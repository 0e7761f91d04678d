"""Server-side CPS verifier: every refusal has its own error (STANDARDS.md SC-01..SC-03)."""

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from idp.factors.smartcard import verify as v
from smartcard.protocol import CardAnswer, signing_payload
from tests.support import pki

NOW = pki.NOW
ORIGIN = "https://idp.example"
TEST_POLICY = v.CardPolicy(production=False)


@pytest.fixture(scope="module")
def test_pki():
    return pki.make_pki(test=True)


@pytest.fixture(scope="module")
def prod_pki():
    return pki.make_pki(test=False)


@pytest.fixture(scope="module")
def practitioner(test_pki):
    return test_pki.issue(id_nat="8" + pki.make_rpps(), surname="DURAND", given_name="PAUL")


def payload(origin=ORIGIN, transaction="tx-1", challenge="Y2hhbGxlbmdl"):
    return signing_payload(origin=origin, transaction=transaction, challenge=challenge)


def sign(key, data, mechanism="SHA256_RSA_PKCS"):
    if mechanism == "SHA256_RSA_PKCS":
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(
        data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
    )


def verify(issued, the_pki, *, signed=None, expected=None, crls=None, policy=TEST_POLICY, **kw):
    expected = expected or payload()
    return v.verify_card_login(
        certificate_der=issued.der,
        signature=kw.pop("signature", None) or sign(issued.key, signed or expected),
        payload=expected,
        mechanism=kw.pop("mechanism", "SHA256_RSA_PKCS"),
        trust_anchors=[the_pki.root.certificate],
        intermediates=[the_pki.intermediate.certificate],
        crls=[the_pki.crl()] if crls is None else crls,
        now=kw.pop("now", NOW),
        policy=policy,
    )


@pytest.mark.parametrize("mechanism", ["SHA256_RSA_PKCS", "SHA256_RSA_PKCS_PSS"])
def test_accepts_a_good_card(practitioner, test_pki, mechanism):
    identity = verify(
        practitioner,
        test_pki,
        mechanism=mechanism,
        signature=sign(practitioner.key, payload(), mechanism),
    )

    assert identity.id_nat.startswith("8") and identity.rpps == identity.id_nat[1:]
    assert (identity.given_name, identity.surname) == ("PAUL", "DURAND")
    assert identity.profession_label == "Médecin"
    assert identity.not_after == pki.VALID_UNTIL
    assert len(identity.certificate_fingerprint_sha256) == 64


def test_production_card_accepted_in_production(prod_pki):
    rpps = pki.make_rpps()
    issued = prod_pki.issue(id_nat="8" + rpps)

    identity = verify(issued, prod_pki, policy=v.CardPolicy())

    assert identity.rpps == rpps


def test_verify_certificate_alone_for_tls_client_certificates(practitioner, test_pki):
    identity = v.verify_certificate(
        certificate_der=practitioner.der,
        trust_anchors=[test_pki.root.certificate],
        intermediates=[test_pki.intermediate.certificate],
        crls=[test_pki.crl()],
        now=NOW,
        policy=TEST_POLICY,
    )

    assert identity.surname == "DURAND"


def test_expired_certificate(test_pki):
    issued = test_pki.issue(
        id_nat="8" + pki.make_rpps(),
        not_valid_before=NOW - dt.timedelta(days=1000),
        not_valid_after=NOW - dt.timedelta(seconds=1),
    )

    with pytest.raises(v.CertificateExpiredError):
        verify(issued, test_pki)


def test_not_yet_valid_certificate(practitioner, test_pki):
    with pytest.raises(v.CertificateNotYetValidError):
        verify(practitioner, test_pki, now=pki.VALID_FROM - dt.timedelta(seconds=1))


def test_revoked_certificate(practitioner, test_pki):
    crl = test_pki.crl(revoked_serials=(practitioner.certificate.serial_number,))

    with pytest.raises(v.CertificateRevokedError):
        verify(practitioner, test_pki, crls=[crl])


def test_revoked_even_when_the_crl_is_stale_and_policy_fails_open(practitioner, test_pki):
    crl = test_pki.crl(
        revoked_serials=(practitioner.certificate.serial_number,),
        last_update=NOW - dt.timedelta(days=30),
        next_update=NOW - dt.timedelta(days=23),
    )

    with pytest.raises(v.CertificateRevokedError):
        verify(
            practitioner,
            test_pki,
            crls=[crl],
            policy=v.CardPolicy(production=False, crl_fail_closed=False),
        )


def test_stale_crl_fails_closed(practitioner, test_pki):
    stale = test_pki.crl(
        last_update=NOW - dt.timedelta(days=10), next_update=NOW - dt.timedelta(days=3)
    )

    with pytest.raises(v.CrlStaleError):
        verify(practitioner, test_pki, crls=[stale])


def test_stale_crl_accepted_when_configured_to_fail_open(practitioner, test_pki):
    stale = test_pki.crl(
        last_update=NOW - dt.timedelta(days=10), next_update=NOW - dt.timedelta(days=3)
    )
    policy = v.CardPolicy(production=False, crl_fail_closed=False)

    assert verify(practitioner, test_pki, crls=[stale], policy=policy).surname == "DURAND"


def test_missing_crl_fails_closed(practitioner, test_pki):
    with pytest.raises(v.CrlMissingError):
        verify(practitioner, test_pki, crls=[])


def test_crl_forged_by_another_key_is_ignored(practitioner, test_pki):
    forged = test_pki.crl(signing_key=pki.new_key())

    with pytest.raises(v.CrlStaleError):
        verify(practitioner, test_pki, crls=[forged])


def test_forged_crl_cannot_revoke_either(practitioner, test_pki):
    forged = test_pki.crl(
        revoked_serials=(practitioner.certificate.serial_number,), signing_key=pki.new_key()
    )

    assert verify(practitioner, test_pki, crls=[forged, test_pki.crl()]).surname == "DURAND"


def test_untrusted_ca(test_pki):
    rogue = pki.make_pki(test=True)  # same names, other keys
    issued = rogue.issue(id_nat="8" + pki.make_rpps())

    with pytest.raises(v.UntrustedCertificateError):
        v.verify_card_login(
            certificate_der=issued.der,
            signature=sign(issued.key, payload()),
            payload=payload(),
            mechanism="SHA256_RSA_PKCS",
            trust_anchors=[test_pki.root.certificate],
            intermediates=[rogue.intermediate.certificate],
            crls=[rogue.crl()],
            now=NOW,
            policy=TEST_POLICY,
        )


def test_missing_intermediate_is_untrusted(practitioner, test_pki):
    with pytest.raises(v.UntrustedCertificateError):
        v.verify_certificate(
            certificate_der=practitioner.der,
            trust_anchors=[test_pki.root.certificate],
            crls=[test_pki.crl()],
            now=NOW,
            policy=TEST_POLICY,
        )


def test_test_ca_refused_in_production(practitioner, test_pki):
    with pytest.raises(v.TestCardRefusedError):
        verify(practitioner, test_pki, policy=v.CardPolicy(production=True))


def test_test_rpps_refused_in_production(prod_pki):
    issued = prod_pki.issue(id_nat="8" + pki.make_rpps(prefix="997"))

    with pytest.raises(v.TestCardRefusedError):
        verify(issued, prod_pki, policy=v.CardPolicy(production=True))


def test_test_rpps_accepted_outside_production(test_pki):
    issued = test_pki.issue(id_nat="8" + pki.make_rpps(prefix="997"))

    assert verify(issued, test_pki).rpps.startswith("997")


def test_signature_bound_to_another_origin(practitioner, test_pki):
    elsewhere = payload(origin="https://idp.example.evil.test")

    with pytest.raises(v.BadSignatureError):
        verify(practitioner, test_pki, signed=elsewhere)


def test_signature_for_another_transaction(practitioner, test_pki):
    with pytest.raises(v.BadSignatureError):
        verify(practitioner, test_pki, signed=payload(transaction="tx-2"))


def test_signature_by_a_key_that_is_not_the_certificates(practitioner, test_pki):
    with pytest.raises(v.BadSignatureError):
        verify(practitioner, test_pki, signature=sign(pki.new_key(), payload()))


def test_pkcs1_signature_presented_as_pss(practitioner, test_pki):
    with pytest.raises(v.BadSignatureError):
        verify(practitioner, test_pki, mechanism="SHA256_RSA_PKCS_PSS")


def test_mechanism_the_deployment_does_not_accept(practitioner, test_pki):
    pkcs1_only = v.CardPolicy(production=False, mechanisms=frozenset({"SHA256_RSA_PKCS"}))
    pss = "SHA256_RSA_PKCS_PSS"

    with pytest.raises(v.MechanismRefusedError):
        verify(
            practitioner,
            test_pki,
            mechanism=pss,
            signature=sign(practitioner.key, payload(), pss),
            policy=pkcs1_only,
        )


def test_unknown_identifier_type(test_pki):
    adeli = test_pki.issue(id_nat="0751234567")

    with pytest.raises(v.UnsupportedIdentifierError):
        verify(adeli, test_pki)


def test_signature_certificate_without_digital_signature_usage(test_pki):
    issued = test_pki.issue(id_nat="8" + pki.make_rpps(), signature_usage=True)

    with pytest.raises(v.KeyUsageError):
        verify(issued, test_pki)


def test_extended_key_usage_without_client_auth(test_pki):
    issued = test_pki.issue(
        id_nat="8" + pki.make_rpps(),
        extended_key_usage=(x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION,),
    )

    with pytest.raises(v.KeyUsageError):
        verify(issued, test_pki)


def submission(issued, **overrides):
    answer = CardAnswer(
        certificate_der=issued.der,
        signature=sign(issued.key, payload()),
        mechanism="SHA256_RSA_PKCS",
    )
    return answer.to_json() | overrides


def verify_json(body, the_pki):
    return v.verify_submission(
        submission=body,
        payload=payload(),
        trust_anchors=[the_pki.root.certificate],
        intermediates=[the_pki.intermediate.certificate],
        crls=[the_pki.crl()],
        now=NOW,
        policy=TEST_POLICY,
    )


def test_submission_round_trip(practitioner, test_pki):
    assert verify_json(submission(practitioner), test_pki).surname == "DURAND"


@pytest.mark.parametrize(
    "overrides",
    [
        {"certificate": "not base64 !"},
        {"signature": "***"},
        {"certificate": base64.b64encode(b"hello").decode()},
        {"certificate": base64.b64encode(b"\x30" * 20_000).decode()},
        {"mechanism": "MD5_RSA_PKCS"},
        {"signature": None},
    ],
    ids=["bad-base64", "bad-base64url", "not-a-certificate", "oversize", "mechanism", "missing"],
)
def test_malformed_submission(practitioner, test_pki, overrides):
    with pytest.raises(v.MalformedSubmissionError):
        verify_json(submission(practitioner, **overrides), test_pki)


def test_submission_that_is_not_an_object(test_pki):
    with pytest.raises(v.MalformedSubmissionError):
        verify_json(["certificate"], test_pki)


def test_oversize_der_passed_directly(test_pki):
    with pytest.raises(v.MalformedSubmissionError):
        v.verify_certificate(
            certificate_der=b"\x30" * (16 * 1024 + 1),
            trust_anchors=[test_pki.root.certificate],
            now=NOW,
        )


def test_no_trust_anchor_configured(practitioner):
    with pytest.raises(v.UntrustedCertificateError):
        v.verify_certificate(certificate_der=practitioner.der, trust_anchors=[], now=NOW)
