"""WebAuthn Level 3 relying-party ceremonies (STANDARDS.md §6), wrapped around py_webauthn.

Pure module: no Flask, no database. Callers own challenge storage (server-side, bound to the
session and ceremony, single use: py_webauthn does not enforce it, STANDARDS C7), the credential
table, duplicate credential ids (WA-03), the allowCredentials/userHandle owner checks (WA-05) and
flagging a credential on a possible clone (WA-06).

Each check below is one ``if`` raising one typed error, in the order of WebAuthn L3 §7.1/§7.2,
so a view can tell the user (and the audit log) exactly what was refused. py_webauthn then runs
its own full verification (attestation statement, algorithm) as a second, authoritative pass,
always with ``require_user_verification=True`` (the library defaults to False).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    parse_attestation_object,
    parse_authenticator_data,
    verify_signature,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorData,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from idp import jsonlimits

__all__ = [
    "MAX_CREDENTIAL_ID_BYTES",
    "MAX_PAYLOAD_BYTES",
    "SUPPORTED_ALGORITHMS",
    "AttestationNotAllowedError",
    "AttestationVerificationError",
    "AuthenticationResult",
    "BackupEligibilityChangedError",
    "BackupStateError",
    "CeremonyTypeError",
    "ChallengeMismatchError",
    "InvalidSignatureError",
    "MalformedCredentialError",
    "RegisteredCredential",
    "SignCountRegressionError",
    "UserPresenceMissingError",
    "UserVerificationMissingError",
    "WebAuthnError",
    "WebAuthnOriginError",
    "WebAuthnRpIdError",
    "amr_for",
    "begin_authentication",
    "begin_registration",
    "finish_authentication",
    "finish_registration",
    "is_hardware_bound",
    "parse_credential_id",
]

MAX_PAYLOAD_BYTES = 64 * 1024
"""A browser response is a few KiB; anything larger is refused before JSON parsing."""
MAX_CREDENTIAL_ID_BYTES = 1023
"""WebAuthn L3 §7.1 step 23 (WA-03)."""
MAX_USER_HANDLE_BYTES = 64
"""WebAuthn L3 §5.4.3: user.id is at most 64 bytes."""
CHALLENGE_BYTES = 32
MIN_CHALLENGE_BYTES = 16
DEFAULT_TIMEOUT_MS = 300_000
"""WebAuthn L3 §15.1 recommends 300 s to 600 s when user verification is required."""
SUPPORTED_ALGORITHMS = (
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
)
"""ES256 (-7), EdDSA (-8), RS256 (-257), in order of preference (WA-01)."""

_B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


class WebAuthnError(Exception):
    """Base of every refusal raised by this module; never carries secret material."""


class MalformedCredentialError(WebAuthnError):
    """The browser payload is not a well-formed WebAuthn credential (or too large)."""


class CeremonyTypeError(WebAuthnError):
    """clientData.type is not the one of this ceremony (a get replayed as create, etc.)."""


class ChallengeMismatchError(WebAuthnError):
    """The response answers another challenge (stale tab, replay, or forged response)."""


class WebAuthnOriginError(WebAuthnError):
    """The origin (or an embedding top origin) is not in the exact allowlist."""


class WebAuthnRpIdError(WebAuthnError):
    """rpIdHash is not SHA-256 of our RP ID: the credential was made for another site."""


class UserPresenceMissingError(WebAuthnError):
    """The UP flag is not set."""


class UserVerificationMissingError(WebAuthnError):
    """The UV flag is not set: without it WebAuthn is one factor, not MFA."""


class BackupStateError(WebAuthnError):
    """BS=1 while BE=0, which no honest authenticator produces (WA-02)."""


class BackupEligibilityChangedError(WebAuthnError):
    """The BE flag differs from the stored value (WA-05): not the same authenticator."""


class AttestationVerificationError(WebAuthnError):
    """The attestation statement or credential key did not verify (py_webauthn refused)."""


class AttestationNotAllowedError(WebAuthnError):
    """The authenticator model (AAGUID) is not in the allowlist."""


class InvalidSignatureError(WebAuthnError):
    """The assertion signature does not verify with the stored public key."""


class SignCountRegressionError(WebAuthnError):
    """Possible cloned authenticator (WA-06): flag the credential and notify the owner."""

    def __init__(self, message: str, *, new_sign_count: int, stored_sign_count: int) -> None:
        super().__init__(message)
        self.new_sign_count = new_sign_count
        self.stored_sign_count = stored_sign_count


@dataclass(frozen=True)
class RegisteredCredential:
    """What the account service stores for a new credential (WA-04)."""

    credential_id: bytes
    public_key: bytes
    sign_count: int
    aaguid: str
    transports: list[str]
    backup_eligible: bool
    backup_state: bool
    uv: bool
    attestation_fmt: str
    device_type: str
    attestation_trusted: bool = False
    """True only when the statement chained to a root given in ``attestation_roots``."""

    @property
    def hardware_bound(self) -> bool:
        """Whether this credential may be reported as ``hwk`` (see :func:`is_hardware_bound`)."""
        return is_hardware_bound(
            attestation_trusted=self.attestation_trusted, backup_eligible=self.backup_eligible
        )


@dataclass(frozen=True)
class AuthenticationResult:
    """Outcome of a verified assertion: the service updates sign count and backup state."""

    credential_id: bytes
    new_sign_count: int
    uv: bool
    backup_eligible: bool
    backup_state: bool
    user_handle: bytes | None


# --------------------------------------------------------------------------- options


def begin_registration(
    *,
    rp_id: str,
    rp_name: str,
    user_handle: bytes,
    user_name: str,
    user_display_name: str,
    exclude_credential_ids: list[bytes],
    challenge: bytes | None = None,
    resident_key: str = "preferred",
    attestation: str = "none",
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> tuple[str, bytes]:
    """Build creation options (WA-01); the caller stores the challenge, single use.

    ``user_handle`` must be random and opaque (no RPPS number, no e-mail).
    """
    if not isinstance(user_handle, bytes) or not 1 <= len(user_handle) <= MAX_USER_HANDLE_BYTES:
        raise ValueError("user_handle must be 1 to 64 random bytes")
    if resident_key not in ("preferred", "required"):
        raise ValueError("resident_key must be 'preferred' or 'required'")
    challenge = _checked_challenge(challenge)
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_id=user_handle,
        user_name=user_name,
        user_display_name=user_display_name,
        challenge=challenge,
        timeout=timeout_ms,
        attestation=AttestationConveyancePreference(attestation),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement(resident_key),
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=i) for i in exclude_credential_ids],
        supported_pub_key_algs=list(SUPPORTED_ALGORITHMS),
    )
    return options_to_json(options), challenge


def begin_authentication(
    *,
    rp_id: str,
    allow_credential_ids: list[bytes],
    challenge: bytes | None = None,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> tuple[str, bytes]:
    """Build request options; an empty ``allow_credential_ids`` asks for a passkey."""
    challenge = _checked_challenge(challenge)
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=timeout_ms,
        allow_credentials=[PublicKeyCredentialDescriptor(id=i) for i in allow_credential_ids],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return options_to_json(options), challenge


# --------------------------------------------------------------------------- registration


def finish_registration(
    *,
    credential_json: str | dict,
    expected_challenge: bytes,
    expected_rp_id: str,
    expected_origins: list[str],
    aaguid_allowlist: set[str] | None = None,
    attestation_roots: dict[str, list[bytes]] | None = None,
) -> RegisteredCredential:
    """Verify a ``navigator.credentials.create()`` response (WebAuthn L3 §7.1, WA-02/03).

    ``attestation_roots`` maps an attestation format to PEM roots (e.g. from FIDO MDS); without
    roots py_webauthn accepts any chain, so the result is then never ``attestation_trusted``.
    An ``aaguid_allowlist`` is only meaningful with attestation "direct"/"enterprise" and roots:
    with "none" the AAGUID is the authenticator's unverified word (or all zeros).
    """
    data = _load_credential(credential_json)
    response = data["response"]
    client_data_bytes = _b64_field(response, "clientDataJSON")
    attestation_bytes = _b64_field(response, "attestationObject")
    _check_client_data(
        client_data_bytes,
        ceremony="webauthn.create",
        expected_challenge=expected_challenge,
        expected_origins=expected_origins,
    )
    try:
        attestation = parse_attestation_object(attestation_bytes)
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise MalformedCredentialError("attestationObject is not valid CBOR/authData") from exc
    auth_data = attestation.auth_data
    _check_auth_data(auth_data, expected_rp_id=expected_rp_id)
    attested = auth_data.attested_credential_data
    if attested is None or not attested.credential_id:
        raise MalformedCredentialError("no attested credential data")
    if attested.credential_id != _raw_id(data):
        raise MalformedCredentialError("rawId differs from the attested credential id")

    roots = attestation_roots or {}
    try:
        verified = verify_registration_response(
            credential=data,
            expected_challenge=expected_challenge,
            expected_rp_id=expected_rp_id,
            expected_origin=list(expected_origins),
            require_user_presence=True,
            require_user_verification=True,
            supported_pub_key_algs=list(SUPPORTED_ALGORITHMS),
            pem_root_certs_bytes_by_fmt={AttestationFormat(k): v for k, v in roots.items()},
        )
    except WebAuthnException as exc:
        raise AttestationVerificationError(str(exc)) from exc

    aaguid = verified.aaguid.lower()
    if aaguid_allowlist is not None and aaguid not in {a.lower() for a in aaguid_allowlist}:
        raise AttestationNotAllowedError(f"authenticator model {aaguid} is not allowed")

    fmt = str(getattr(verified.fmt, "value", verified.fmt))
    trusted = bool(
        fmt != AttestationFormat.NONE.value and roots.get(fmt) and attestation.att_stmt.x5c
    )
    transports = response.get("transports")
    return RegisteredCredential(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=aaguid,
        transports=[t for t in transports if isinstance(t, str)]
        if isinstance(transports, list)
        else [],
        backup_eligible=auth_data.flags.be,
        backup_state=auth_data.flags.bs,
        uv=verified.user_verified,
        attestation_fmt=fmt,
        device_type=verified.credential_device_type.value,
        attestation_trusted=trusted,
    )


# --------------------------------------------------------------------------- authentication


def finish_authentication(
    *,
    credential_json: str | dict,
    expected_challenge: bytes,
    expected_rp_id: str,
    expected_origins: list[str],
    credential_public_key: bytes,
    credential_current_sign_count: int,
    credential_backup_eligible: bool | None = None,
) -> AuthenticationResult:
    """Verify a ``navigator.credentials.get()`` response (WebAuthn L3 §7.2, WA-05/06).

    The sign count is judged only after the signature verified: py_webauthn checks it before
    the signature, so a forged low counter could otherwise get an honest credential flagged.
    """
    data = _load_credential(credential_json)
    response = data["response"]
    client_data_bytes = _b64_field(response, "clientDataJSON")
    auth_data_bytes = _b64_field(response, "authenticatorData")
    signature = _b64_field(response, "signature")
    user_handle = _optional_user_handle(response)
    _check_client_data(
        client_data_bytes,
        ceremony="webauthn.get",
        expected_challenge=expected_challenge,
        expected_origins=expected_origins,
    )
    try:
        auth_data = parse_authenticator_data(auth_data_bytes)
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise MalformedCredentialError("authenticatorData is malformed") from exc
    _check_auth_data(auth_data, expected_rp_id=expected_rp_id)
    if credential_backup_eligible is not None and auth_data.flags.be != credential_backup_eligible:
        raise BackupEligibilityChangedError("the BE flag changed since registration")

    try:
        decoded_key = decode_credential_public_key(credential_public_key)
        crypto_key = decoded_public_key_to_cryptography(decoded_key)
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise AttestationVerificationError("stored public key cannot be decoded") from exc
    try:
        verify_signature(
            public_key=crypto_key,
            signature_alg=decoded_key.alg,
            signature=signature,
            data=auth_data_bytes + hashlib.sha256(client_data_bytes).digest(),
        )
    except (InvalidSignature, WebAuthnException, ValueError) as exc:
        raise InvalidSignatureError("assertion signature does not verify") from exc

    try:
        verified = verify_authentication_response(
            credential=data,
            expected_challenge=expected_challenge,
            expected_rp_id=expected_rp_id,
            expected_origin=list(expected_origins),
            credential_public_key=credential_public_key,
            # 0 disables the library's pre-signature counter check; the rule is applied below.
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except WebAuthnException as exc:
        raise AttestationVerificationError(str(exc)) from exc

    new, stored = verified.new_sign_count, credential_current_sign_count
    if (new != 0 or stored != 0) and new <= stored:
        raise SignCountRegressionError(
            f"sign count {new} is not above the stored {stored}: possible cloned authenticator",
            new_sign_count=new,
            stored_sign_count=stored,
        )
    return AuthenticationResult(
        credential_id=verified.credential_id,
        new_sign_count=new,
        uv=verified.user_verified,
        backup_eligible=auth_data.flags.be,
        backup_state=auth_data.flags.bs,
        user_handle=user_handle,
    )


def parse_credential_id(credential_json: str | dict) -> bytes:
    """Return the raw credential id, to look the stored credential up before verifying it."""
    return _raw_id(_load_credential(credential_json))


# --------------------------------------------------------------------------- assurance


def is_hardware_bound(*, attestation_trusted: bool, backup_eligible: bool) -> bool:
    """Whether a credential may be called ``hwk`` (AMR-02).

    Only a key whose attestation chained to a trusted root (so the model is known) and whose
    BE flag is 0 (it can never be synced off the device) is hardware-bound. A synced passkey or
    an unattested key is ``swk``, whatever the device really is.
    """
    return attestation_trusted and not backup_eligible


def amr_for(*, uv: bool, hardware_bound: bool, with_password: bool) -> list[str]:
    """RFC 8176 ``amr`` for a WebAuthn login (AMR-02, DESIGN.md assurance levels).

    ``hwk`` if ``hardware_bound`` (attested and BE=0, see :func:`is_hardware_bound`) else
    ``swk``; ``user`` when the authenticator verified the user; ``mfa`` only then, since a
    key without UV is a single factor; ``pwd`` first if a password was also checked.
    """
    amr = ["pwd"] if with_password else []
    amr.append("hwk" if hardware_bound else "swk")
    if uv:
        amr.append("user")
    if uv or with_password:
        amr.append("mfa")
    return amr


# --------------------------------------------------------------------------- helpers


def _checked_challenge(challenge: bytes | None) -> bytes:
    if challenge is None:
        return secrets.token_bytes(CHALLENGE_BYTES)
    if not isinstance(challenge, bytes) or len(challenge) < MIN_CHALLENGE_BYTES:
        raise ValueError("challenge must be at least 16 random bytes")
    return challenge


def _b64decode(value: Any, *, what: str) -> bytes:
    if not isinstance(value, str) or not _B64URL.fullmatch(value):
        raise MalformedCredentialError(f"{what} is not base64url text")
    try:
        return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedCredentialError(f"{what} is not valid base64url") from exc


def _b64encode(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).decode("ascii").rstrip("=")


def _load_credential(credential_json: str | dict) -> dict:
    """Parse and shape-check the browser JSON before any cryptography runs."""
    try:
        if isinstance(credential_json, str | bytes):
            data = jsonlimits.loads(credential_json, max_bytes=MAX_PAYLOAD_BYTES)
        elif isinstance(credential_json, dict):
            jsonlimits.check_depth(credential_json)
            data = credential_json
            size = len(json.dumps(data).encode("utf-8", "surrogatepass"))
            if size > MAX_PAYLOAD_BYTES:
                raise MalformedCredentialError("credential payload is larger than 64 KiB")
        else:
            raise MalformedCredentialError("credential must be JSON text or an object")
    except (jsonlimits.JSONLimitError, TypeError, ValueError) as exc:
        raise MalformedCredentialError(f"credential is not acceptable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedCredentialError("credential is not a JSON object")
    if data.get("type") != "public-key":
        raise MalformedCredentialError("credential type is not public-key")
    if not isinstance(data.get("response"), dict):
        raise MalformedCredentialError("credential has no response object")
    _raw_id(data)
    return data


def _raw_id(data: dict) -> bytes:
    raw_id = _b64decode(data.get("rawId"), what="rawId")
    if not raw_id:
        raise MalformedCredentialError("credential id is empty")
    if len(raw_id) > MAX_CREDENTIAL_ID_BYTES:
        raise MalformedCredentialError("credential id is longer than 1023 bytes")
    credential_id = data.get("id")
    if not isinstance(credential_id, str) or credential_id.rstrip("=") != _b64encode(raw_id):
        raise MalformedCredentialError("id and rawId differ")
    return raw_id


def _b64_field(response: dict, name: str) -> bytes:
    value = _b64decode(response.get(name), what=name)
    if not value:
        raise MalformedCredentialError(f"{name} is empty")
    return value


def _optional_user_handle(response: dict) -> bytes | None:
    value = response.get("userHandle")
    if value is None or value == "":
        return None
    return _b64decode(value, what="userHandle")


def _check_client_data(
    client_data_bytes: bytes,
    *,
    ceremony: str,
    expected_challenge: bytes,
    expected_origins: list[str],
) -> None:
    """WebAuthn L3 §7.1 steps 5-9 / §7.2 steps 10-13: type, challenge, origin, top origin."""
    try:
        client_data = jsonlimits.loads(client_data_bytes, max_bytes=MAX_PAYLOAD_BYTES)
    except jsonlimits.JSONLimitError as exc:
        raise MalformedCredentialError(f"clientDataJSON is not acceptable JSON: {exc}") from exc
    if not isinstance(client_data, dict):
        raise MalformedCredentialError("clientDataJSON is not an object")
    if client_data.get("type") != ceremony:
        raise CeremonyTypeError(f"clientData.type is not {ceremony}")
    challenge = _b64decode(client_data.get("challenge"), what="clientData.challenge")
    if not secrets.compare_digest(challenge, expected_challenge):
        raise ChallengeMismatchError("the response does not answer this challenge")
    if client_data.get("origin") not in expected_origins:
        raise WebAuthnOriginError("origin is not allowed")
    # We are never embedded in a cross-origin iframe (WA-02): refuse topOrigin/crossOrigin.
    if client_data.get("crossOrigin") is True or "topOrigin" in client_data:
        raise WebAuthnOriginError("cross-origin (iframe) ceremonies are not allowed")


def _check_auth_data(auth_data: AuthenticatorData, *, expected_rp_id: str) -> None:
    """WebAuthn L3 §7.1 steps 13-18 / §7.2 steps 15-19: rpIdHash, UP, UV, BE/BS."""
    expected_hash = hashlib.sha256(expected_rp_id.encode("utf-8")).digest()
    if not secrets.compare_digest(auth_data.rp_id_hash, expected_hash):
        raise WebAuthnRpIdError("rpIdHash does not match our RP ID")
    if not auth_data.flags.up:
        raise UserPresenceMissingError("user presence (UP) flag missing")
    if not auth_data.flags.uv:
        raise UserVerificationMissingError("user verification (UV) flag missing")
    if auth_data.flags.bs and not auth_data.flags.be:
        raise BackupStateError("backup state set on a credential that is not backup eligible")
