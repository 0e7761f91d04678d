"""The WebAuthn verifier: the embedding checks of client data, credential ids, challenge sizes.

We are never framed by another origin (WA-02): ``crossOrigin: true`` alone, or a ``topOrigin``
alone, is enough to refuse a ceremony. The credential id the browser reports must be the one
the authenticator attested.
"""

from __future__ import annotations

import json
import secrets

import pytest

from idp.factors.webauthn import verify as wa
from tests.support.webauthn_crafting import (
    DEFAULT_ORIGIN,
    DEFAULT_RP_ID,
    SoftAuthenticator,
    b64url,
    b64url_decode,
)
from tests.support.webauthn_verify import ORIGINS, authenticate, register

EMBEDDED = [
    pytest.param({"crossOrigin": True}, id="cross-origin-without-top-origin"),
    pytest.param({"topOrigin": DEFAULT_ORIGIN}, id="top-origin-without-cross-origin"),
    pytest.param({"crossOrigin": True, "topOrigin": "https://evil.example"}, id="both"),
]


# --------------------------------------------------------------------------- embedding (WA-02)


@pytest.mark.parametrize("extra", EMBEDDED)
def test_an_embedded_registration_is_refused(extra):
    authn = SoftAuthenticator()
    challenge = secrets.token_bytes(32)
    response = authn.registration_response(challenge=challenge, client_data_extra=extra)
    with pytest.raises(wa.WebAuthnOriginError):
        register(authn, response, challenge)


@pytest.mark.parametrize("extra", EMBEDDED)
def test_an_embedded_assertion_is_refused(extra):
    authn = SoftAuthenticator()
    stored = register(authn)
    with pytest.raises(wa.WebAuthnOriginError):
        authenticate(authn, stored, client_data_extra=extra)


def test_cross_origin_false_without_top_origin_is_the_normal_case():
    authn = SoftAuthenticator()
    stored = register(authn)  # the crafted client data says crossOrigin: false
    assert authenticate(authn, stored, client_data_extra={"crossOrigin": False}).uv is True


# --------------------------------------------------------------------------- credential ids


def test_registration_whose_raw_id_is_not_the_attested_credential_id_is_refused():
    """rawId and id agree with each other, but not with the id inside authenticatorData."""
    authn = SoftAuthenticator()
    challenge = secrets.token_bytes(32)
    response = authn.registration_response(challenge=challenge)
    other_id = secrets.token_bytes(32)
    response["id"] = response["rawId"] = b64url(other_id)
    with pytest.raises(wa.MalformedCredentialError, match="rawId differs"):
        register(authn, response, challenge)


def test_registration_with_id_and_raw_id_differing_is_refused():
    authn = SoftAuthenticator()
    challenge = secrets.token_bytes(32)
    response = authn.registration_response(challenge=challenge)
    response["id"] = b64url(secrets.token_bytes(32))
    with pytest.raises(wa.MalformedCredentialError, match="id and rawId differ"):
        register(authn, response, challenge)


def test_assertion_with_id_and_raw_id_differing_is_refused():
    authn = SoftAuthenticator()
    stored = register(authn)
    challenge = secrets.token_bytes(32)
    response = authn.authentication_response(challenge=challenge)
    response["id"] = b64url(secrets.token_bytes(32))
    with pytest.raises(wa.MalformedCredentialError, match="id and rawId differ"):
        wa.finish_authentication(
            credential_json=response,
            expected_challenge=challenge,
            expected_rp_id=DEFAULT_RP_ID,
            expected_origins=ORIGINS,
            credential_public_key=stored.public_key,
            credential_current_sign_count=0,
        )
    with pytest.raises(wa.MalformedCredentialError, match="id and rawId differ"):
        wa.parse_credential_id(response)


def test_the_registered_and_asserted_credential_id_is_the_raw_id():
    authn = SoftAuthenticator()
    stored = register(authn)
    assert stored.credential_id == authn.credential_id
    assert authenticate(authn, stored).credential_id == authn.credential_id


def test_a_1023_byte_credential_id_is_accepted_1024_refused():
    for size, accepted in ((1023, True), (1024, False)):
        raw = b64url(b"\x05" * size)
        payload = {"id": raw, "rawId": raw, "type": "public-key", "response": {}}
        if accepted:
            assert wa.parse_credential_id(payload) == b"\x05" * size
        else:
            with pytest.raises(wa.MalformedCredentialError):
                wa.parse_credential_id(payload)


# --------------------------------------------------------------------------- challenge size


def registration_options(challenge: bytes | None):
    return wa.begin_registration(
        rp_id=DEFAULT_RP_ID,
        rp_name="IdP santé",
        user_handle=secrets.token_bytes(32),
        user_name="dr.martin",
        user_display_name="Dr Martin",
        exclude_credential_ids=[],
        challenge=challenge,
    )


def authentication_options(challenge: bytes | None):
    return wa.begin_authentication(
        rp_id=DEFAULT_RP_ID, allow_credential_ids=[], challenge=challenge
    )


@pytest.mark.parametrize("begin", [registration_options, authentication_options])
def test_a_16_byte_challenge_is_accepted_15_refused(begin):
    options_json, challenge = begin(b"\x01" * 16)
    assert challenge == b"\x01" * 16
    assert b64url_decode(json.loads(options_json)["challenge"]) == b"\x01" * 16
    with pytest.raises(ValueError):
        begin(b"\x01" * 15)
    with pytest.raises(ValueError):
        begin("a text challenge of more than 16 characters")


@pytest.mark.parametrize("begin", [registration_options, authentication_options])
def test_a_generated_challenge_has_32_bytes(begin):
    options_json, challenge = begin(None)
    assert len(challenge) == 32
    assert b64url_decode(json.loads(options_json)["challenge"]) == challenge
    assert begin(None)[1] != challenge


@pytest.mark.parametrize("size", [1, 64])
def test_user_handle_of_1_to_64_bytes_is_accepted(size):
    options_json, _challenge = wa.begin_registration(
        rp_id=DEFAULT_RP_ID,
        rp_name="IdP santé",
        user_handle=b"\x02" * size,
        user_name="dr.martin",
        user_display_name="Dr Martin",
        exclude_credential_ids=[],
    )
    assert b64url_decode(json.loads(options_json)["user"]["id"]) == b"\x02" * size


@pytest.mark.parametrize("handle", [b"", b"\x02" * 65, "text-handle"])
def test_user_handle_outside_1_to_64_bytes_is_refused(handle):
    with pytest.raises(ValueError):
        wa.begin_registration(
            rp_id=DEFAULT_RP_ID,
            rp_name="IdP santé",
            user_handle=handle,
            user_name="dr.martin",
            user_display_name="Dr Martin",
            exclude_credential_ids=[],
        )


# --------------------------------------------------------------------------- request options


def test_authentication_options_list_the_allowed_keys_and_a_300_second_timeout():
    ids = [b"\x01" * 16, b"\x02" * 32]
    options_json, _challenge = wa.begin_authentication(
        rp_id=DEFAULT_RP_ID, allow_credential_ids=ids
    )
    options = json.loads(options_json)
    assert [b64url_decode(c["id"]) for c in options["allowCredentials"]] == ids
    assert options["timeout"] == 300_000
    assert options["rpId"] == DEFAULT_RP_ID


def test_registration_options_have_a_300_second_timeout():
    options_json, _challenge = registration_options(None)
    assert json.loads(options_json)["timeout"] == 300_000


def test_an_empty_user_handle_means_none():
    authn = SoftAuthenticator()
    stored = register(authn)
    challenge = secrets.token_bytes(32)
    response = authn.authentication_response(challenge=challenge, user_handle=None)
    response["response"]["userHandle"] = ""
    result = wa.finish_authentication(
        credential_json=response,
        expected_challenge=challenge,
        expected_rp_id=DEFAULT_RP_ID,
        expected_origins=ORIGINS,
        credential_public_key=stored.public_key,
        credential_current_sign_count=0,
    )
    assert result.user_handle is None
