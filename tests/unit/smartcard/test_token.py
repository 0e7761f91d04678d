"""The agent against a real PKCS#11 token (SoftHSM2), with real RSA 2048 signatures."""

import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pkcs11 import Attribute, ObjectClass

from idp.factors.smartcard import verify as verifier
from smartcard import errors
from smartcard.protocol import MECHANISM_PKCS1, MECHANISM_PSS, signing_payload
from smartcard.token import (
    list_tokens,
    open_card,
    read_auth_certificate,
    select_token,
    sign_payload,
)
from tests.support import pki
from tests.support.softhsm import AUTH_KEY_ID, provision_card

pytestmark = pytest.mark.pkcs11

ORIGIN = "https://idp.example"


def payload(challenge="q7T0Xn0tUr9dW3lQ"):
    return signing_payload(origin=ORIGIN, transaction="tx-1", challenge=challenge)


def test_lists_the_card(softhsm, card):
    tokens = list_tokens(lib=softhsm.lib)

    labels = [token.label for token in tokens]
    assert card.label in labels
    mine = tokens[labels.index(card.label)]
    assert mine.manufacturer == "SoftHSM project"
    assert mine.serial


def test_reads_the_authentication_certificate_not_the_signature_one(softhsm, card):
    der = read_auth_certificate(lib=softhsm.lib, token_label=card.label)

    assert der == card.auth.der


def test_private_key_never_leaves_the_card(softhsm, card):
    token = select_token(lib=softhsm.lib, token_label=card.label)
    with token.open(user_pin=card.pin) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=AUTH_KEY_ID)
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.SENSITIVE] is True


@pytest.mark.parametrize("mechanism", [MECHANISM_PKCS1, MECHANISM_PSS])
def test_sign_then_verify_on_the_server(softhsm, card, card_pki, clock, rpps, mechanism):
    answer = sign_payload(
        lib=softhsm.lib,
        pin=card.pin,
        payload=payload(),
        mechanism=mechanism,
        token_label=card.label,
        now=clock.now,
    )

    identity = verifier.verify_submission(
        submission=answer.to_json(),
        payload=payload(),
        trust_anchors=[card_pki.root.certificate],
        intermediates=[card_pki.intermediate.certificate],
        crls=[card_pki.crl()],
        now=clock.now(),
        policy=verifier.CardPolicy(production=False),
    )

    assert answer.mechanism == mechanism
    assert identity.rpps == rpps
    assert (identity.given_name, identity.surname) == ("JEANNE", "MARTIN")
    assert identity.profession_label == "Médecin"


def test_signature_is_the_token_key_pkcs1(softhsm, card, clock):
    answer = sign_payload(
        lib=softhsm.lib, pin=card.pin, payload=payload(), token_label=card.label, now=clock.now
    )

    card.auth.certificate.public_key().verify(
        answer.signature, payload(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_wrong_pin_is_reported(softhsm, card, clock):
    wrong = "000000" if card.pin != "000000" else "111111"

    with pytest.raises(errors.PinIncorrectError) as caught:
        sign_payload(
            lib=softhsm.lib, pin=wrong, payload=payload(), token_label=card.label, now=clock.now
        )

    assert "PIN" in str(caught.value)
    assert caught.value.count_low  # re-read from the token after the failed C_Login


def test_unknown_label_means_no_card(softhsm, card, clock):
    with pytest.raises(errors.NoTokenError):
        sign_payload(
            lib=softhsm.lib, pin=card.pin, payload=payload(), token_label="ABSENT", now=clock.now
        )


def test_empty_pin_is_refused_before_the_card(softhsm, card):
    with pytest.raises(errors.PinFormatError):
        with open_card(lib=softhsm.lib, pin="", token_label=card.label):
            pass


def test_expired_certificate_is_refused_before_asking_the_card(softhsm, card, clock):
    clock.set(pki.VALID_UNTIL + dt.timedelta(seconds=1))

    with pytest.raises(errors.CertificateExpiredError):
        sign_payload(
            lib=softhsm.lib, pin=card.pin, payload=payload(), token_label=card.label, now=clock.now
        )


def test_card_with_an_expired_certificate(softhsm, card_pki, clock):
    expired = provision_card(
        softhsm=softhsm,
        issuer=card_pki.intermediate,
        id_nat="8" + pki.make_rpps(),
        not_valid_before=pki.NOW - dt.timedelta(days=900),
        not_valid_after=pki.NOW - dt.timedelta(days=1),
    )

    with pytest.raises(errors.CertificateExpiredError):
        sign_payload(
            lib=softhsm.lib,
            pin=expired.pin,
            payload=payload(),
            token_label=expired.label,
            now=clock.now,
        )


def test_card_removed_during_the_operation(softhsm, card_pki):
    removable = provision_card(
        softhsm=softhsm, issuer=card_pki.intermediate, id_nat="8" + pki.make_rpps()
    )

    with pytest.raises(errors.CardRemovedError):
        with open_card(lib=softhsm.lib, pin=removable.pin, token_label=removable.label) as card:
            softhsm.delete_token(label=removable.label)
            card.sign(payload())

    softhsm.lib.reinitialize()
    with pytest.raises(errors.NoTokenError):
        read_auth_certificate(lib=softhsm.lib, token_label=removable.label)
