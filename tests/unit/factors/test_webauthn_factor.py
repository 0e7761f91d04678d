"""idp.factors.webauthn.verify against crafted responses (STANDARDS.md §6 WA-01..06, AMR-02)."""

from __future__ import annotations

import json
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from idp.factors.webauthn import verify as wa
from tests.support.webauthn_crafting import (
    DEFAULT_RP_ID,
    SoftAuthenticator,
    b64url,
    b64url_decode,
)
from tests.support.webauthn_verify import ORIGINS, authenticate, register


@pytest.fixture
def authenticator() -> SoftAuthenticator:
    return SoftAuthenticator()


# ------------------------------------------------------------------ options (WA-01)


def test_registration_options_require_uv_and_offer_three_algorithms():
    options_json, challenge = wa.begin_registration(
        rp_id="localhost",
        rp_name="IdP santé",
        user_handle=secrets.token_bytes(32),
        user_name="dr.martin",
        user_display_name="Dr Martin",
        exclude_credential_ids=[b"\x01" * 16],
        resident_key="required",
    )
    options = json.loads(options_json)
    assert len(challenge) >= 16
    assert b64url_decode(options["challenge"]) == challenge
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["attestation"] == "none"
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -257]
    assert options["excludeCredentials"] == [{"id": b64url(b"\x01" * 16), "type": "public-key"}]


def test_authentication_options_require_uv_and_allow_passkeys():
    options_json, challenge = wa.begin_authentication(rp_id="localhost", allow_credential_ids=[])
    options = json.loads(options_json)
    assert options["userVerification"] == "required"
    assert options["allowCredentials"] == []
    assert b64url_decode(options["challenge"]) == challenge


def test_short_challenge_is_refused():
    with pytest.raises(ValueError):
        wa.begin_authentication(rp_id="localhost", allow_credential_ids=[], challenge=b"short")


# ------------------------------------------------------------------ success


def test_registration_then_authentication_succeeds(authenticator):
    stored = register(authenticator)
    assert stored.credential_id == authenticator.credential_id
    assert stored.aaguid == "01234567-89ab-cdef-0123-456789abcdef"
    assert stored.uv is True
    assert stored.attestation_fmt == "none"
    assert stored.attestation_trusted is False
    assert stored.hardware_bound is False
    assert stored.transports == ["internal"]
    assert (stored.backup_eligible, stored.backup_state) == (False, False)
    assert stored.device_type == "single_device"

    result = authenticate(authenticator, stored)
    assert result.credential_id == authenticator.credential_id
    assert result.new_sign_count == 1
    assert result.uv is True
    assert result.user_handle == authenticator.user_handle


def test_synced_passkey_reports_backup_flags(authenticator):
    stored = register(authenticator, be=True, bs=True)
    assert (stored.backup_eligible, stored.backup_state, stored.device_type) == (
        True,
        True,
        "multi_device",
    )
    result = authenticate(authenticator, stored, be=True, bs=True)
    assert (result.backup_eligible, result.backup_state) == (True, True)


def test_parse_credential_id_reads_raw_id(authenticator):
    response = authenticator.authentication_response(challenge=secrets.token_bytes(32))
    assert wa.parse_credential_id(json.dumps(response)) == authenticator.credential_id


# ------------------------------------------------------------------ registration refusals (WA-02)


@pytest.mark.parametrize(
    ("knobs", "error"),
    [
        ({"origin": "https://evil.example"}, wa.WebAuthnOriginError),
        ({"origin": "http://localhost:5001"}, wa.WebAuthnOriginError),
        ({"client_data_extra": {"topOrigin": "https://evil.example"}}, wa.WebAuthnOriginError),
        ({"rp_id": "evil.example"}, wa.WebAuthnRpIdError),
        ({"uv": False}, wa.UserVerificationMissingError),
        ({"up": False}, wa.UserPresenceMissingError),
        ({"be": False, "bs": True}, wa.BackupStateError),
        ({"client_data_type": "webauthn.get"}, wa.CeremonyTypeError),
        ({"credential_id": b"\x07" * 1024}, wa.MalformedCredentialError),
    ],
)
def test_registration_refusals(authenticator, knobs, error):
    with pytest.raises(error):
        register(authenticator, **knobs)


def test_registration_challenge_mismatch(authenticator):
    response = authenticator.registration_response(challenge=secrets.token_bytes(32))
    with pytest.raises(wa.ChallengeMismatchError):
        wa.finish_registration(
            credential_json=response,
            expected_challenge=secrets.token_bytes(32),
            expected_rp_id=DEFAULT_RP_ID,
            expected_origins=ORIGINS,
        )


def test_aaguid_allowlist(authenticator):
    challenge = secrets.token_bytes(32)
    response = authenticator.registration_response(challenge=challenge)
    common = {
        "credential_json": response,
        "expected_challenge": challenge,
        "expected_rp_id": DEFAULT_RP_ID,
        "expected_origins": ORIGINS,
    }
    with pytest.raises(wa.AttestationNotAllowedError):
        wa.finish_registration(**common, aaguid_allowlist={"ee882879-721c-4913-9775-3dfcce97072a"})
    allowed = wa.finish_registration(
        **common, aaguid_allowlist={"01234567-89AB-CDEF-0123-456789ABCDEF"}
    )
    assert allowed.aaguid == "01234567-89ab-cdef-0123-456789abcdef"


# ------------------------------------------------------------------ authentication refusals (WA-05)


@pytest.mark.parametrize(
    ("knobs", "error"),
    [
        ({"origin": "https://evil.example"}, wa.WebAuthnOriginError),
        ({"rp_id": "evil.example"}, wa.WebAuthnRpIdError),
        ({"uv": False}, wa.UserVerificationMissingError),
        ({"up": False}, wa.UserPresenceMissingError),
        ({"client_data_type": "webauthn.create"}, wa.CeremonyTypeError),
        ({"signing_key": ec.generate_private_key(ec.SECP256R1())}, wa.InvalidSignatureError),
    ],
)
def test_authentication_refusals(authenticator, knobs, error):
    stored = register(authenticator)
    with pytest.raises(error):
        authenticate(authenticator, stored, **knobs)


def test_authentication_challenge_mismatch(authenticator):
    stored = register(authenticator)
    with pytest.raises(wa.ChallengeMismatchError):
        authenticate(authenticator, stored, expected_challenge=secrets.token_bytes(32))


def test_backup_eligibility_must_not_change(authenticator):
    stored = register(authenticator)
    challenge = secrets.token_bytes(32)
    response = authenticator.authentication_response(challenge=challenge, be=True)
    with pytest.raises(wa.BackupEligibilityChangedError):
        wa.finish_authentication(
            credential_json=response,
            expected_challenge=challenge,
            expected_rp_id=DEFAULT_RP_ID,
            expected_origins=ORIGINS,
            credential_public_key=stored.public_key,
            credential_current_sign_count=0,
            credential_backup_eligible=stored.backup_eligible,
        )


# ------------------------------------------------------------------ sign count (WA-06)


@pytest.mark.parametrize(("stored_count", "new_count"), [(10, 9), (10, 10), (10, 0), (5, 0)])
def test_sign_count_regression_is_a_possible_clone(authenticator, stored_count, new_count):
    stored = register(authenticator)
    with pytest.raises(wa.SignCountRegressionError) as excinfo:
        authenticate(authenticator, stored, stored_count=stored_count, sign_count=new_count)
    assert excinfo.value.stored_sign_count == stored_count
    assert excinfo.value.new_sign_count == new_count


def test_zero_counters_mean_no_counter(authenticator):
    stored = register(authenticator)
    assert authenticate(authenticator, stored, stored_count=0, sign_count=0).new_sign_count == 0


def test_forged_signature_is_judged_before_the_counter(authenticator):
    """A forged low counter must not get an honest credential flagged as cloned."""
    stored = register(authenticator)
    forger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(wa.InvalidSignatureError):
        authenticate(authenticator, stored, stored_count=10, sign_count=1, signing_key=forger)


# ------------------------------------------------------------------ malformed payloads


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[]",
        42,
        {"id": "AA", "rawId": "AA", "type": "public-key"},
        {"id": "AA", "rawId": "AA", "type": "other", "response": {}},
        {"id": "AA", "rawId": "!!", "type": "public-key", "response": {}},
        {"id": "AQ", "rawId": "AA", "type": "public-key", "response": {}},
        {"id": "AA", "rawId": "AA", "type": "public-key", "response": {"clientDataJSON": 5}},
    ],
)
def test_malformed_payloads(payload):
    with pytest.raises(wa.MalformedCredentialError):
        wa.finish_authentication(
            credential_json=payload,
            expected_challenge=secrets.token_bytes(32),
            expected_rp_id=DEFAULT_RP_ID,
            expected_origins=ORIGINS,
            credential_public_key=b"",
            credential_current_sign_count=0,
        )


def test_oversized_payload_is_refused(authenticator):
    response = authenticator.authentication_response(challenge=secrets.token_bytes(32))
    response["clientExtensionResults"] = {"padding": "x" * (64 * 1024)}
    for payload in (response, json.dumps(response)):
        with pytest.raises(wa.MalformedCredentialError, match="64 KiB"):
            wa.parse_credential_id(payload)


def nested(levels: int) -> list:
    deep: list = []
    for _ in range(levels):
        deep = [deep]
    return deep


@pytest.mark.parametrize(
    "payload",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"type": "public-key", "response": ' + '{"a": ' * 5_000 + "1" + "}" * 5_001,
        {"id": "AA", "rawId": "AA", "type": "public-key", "response": {"x": nested(10_000)}},
    ],
    ids=["text-list", "text-object", "object"],
)
def test_deeply_nested_payloads_are_malformed(payload):
    """Python's JSON parser recurses per level: 10,000 levels must be a refusal, not a crash."""
    with pytest.raises(wa.MalformedCredentialError, match="nested deeper"):
        wa.parse_credential_id(payload)


def test_deeply_nested_client_data_is_malformed(authenticator):
    challenge = secrets.token_bytes(32)
    response = authenticator.registration_response(challenge=challenge)
    response["response"]["clientDataJSON"] = b64url(b"[" * 10_000 + b"]" * 10_000)
    with pytest.raises(wa.MalformedCredentialError, match="clientDataJSON"):
        wa.finish_registration(
            credential_json=response,
            expected_challenge=challenge,
            expected_rp_id=DEFAULT_RP_ID,
            expected_origins=ORIGINS,
        )


def test_oversized_credential_id_is_refused():
    long_id = b64url(b"\x01" * 1024)
    payload = {"id": long_id, "rawId": long_id, "type": "public-key", "response": {}}
    with pytest.raises(wa.MalformedCredentialError, match="1023"):
        wa.parse_credential_id(payload)


def test_garbage_attestation_object_is_malformed(authenticator):
    challenge = secrets.token_bytes(32)
    response = authenticator.registration_response(challenge=challenge)
    response["response"]["attestationObject"] = b64url(b"\xff\x00garbage")
    with pytest.raises(wa.MalformedCredentialError):
        wa.finish_registration(
            credential_json=response,
            expected_challenge=challenge,
            expected_rp_id=DEFAULT_RP_ID,
            expected_origins=ORIGINS,
        )


def test_every_error_is_a_webauthn_error():
    errors = [
        wa.WebAuthnOriginError,
        wa.WebAuthnRpIdError,
        wa.UserVerificationMissingError,
        wa.UserPresenceMissingError,
        wa.ChallengeMismatchError,
        wa.SignCountRegressionError,
        wa.AttestationNotAllowedError,
        wa.MalformedCredentialError,
        wa.InvalidSignatureError,
    ]
    assert all(issubclass(e, wa.WebAuthnError) for e in errors)


# ------------------------------------------------------------------ amr (AMR-02)


@pytest.mark.parametrize(
    ("uv", "hardware_bound", "with_password", "amr"),
    [
        (True, False, False, ["swk", "user", "mfa"]),
        (True, True, False, ["hwk", "user", "mfa"]),
        (True, True, True, ["pwd", "hwk", "user", "mfa"]),
        (False, False, True, ["pwd", "swk", "mfa"]),
        (False, False, False, ["swk"]),
    ],
)
def test_amr_for(uv, hardware_bound, with_password, amr):
    assert wa.amr_for(uv=uv, hardware_bound=hardware_bound, with_password=with_password) == amr


def test_hardware_bound_needs_trusted_attestation_and_no_backup():
    assert wa.is_hardware_bound(attestation_trusted=True, backup_eligible=False)
    assert not wa.is_hardware_bound(attestation_trusted=True, backup_eligible=True)
    assert not wa.is_hardware_bound(attestation_trusted=False, backup_eligible=False)
