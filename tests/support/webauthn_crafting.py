"""Crafted WebAuthn responses for server-level negative tests, without a browser.

A software authenticator with an EC P-256 key produces the JSON a browser posts
(``PublicKeyCredential.toJSON()`` shape, base64url without padding), with knobs for every field
a relying party must check: origin, RP ID, flags, sign count, challenge, user handle, signing key.
``AttestationCA`` turns a registration into a "packed" attestation chained to a test vendor root.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from webauthn.helpers import encode_cbor, parse_cbor

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_BE = 0x08
FLAG_BS = 0x10
FLAG_AT = 0x40
FLAG_ED = 0x80

DEFAULT_ORIGIN = "http://localhost:5000"
DEFAULT_RP_ID = "localhost"
TEST_AAGUID = bytes.fromhex("0123456789abcdef0123456789abcdef")


def b64url(data: bytes) -> str:
    """Encode like browsers do: base64url without padding."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def flags_byte(*, up: bool = True, uv: bool = True, be: bool = False, bs: bool = False) -> int:
    """Compose the authenticator-data flags byte (WebAuthn L3 §6.1)."""
    return (
        (FLAG_UP if up else 0)
        | (FLAG_UV if uv else 0)
        | (FLAG_BE if be else 0)
        | (FLAG_BS if bs else 0)
    )


def cose_ec2_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """COSE_Key for ES256 (RFC 9053 §7.1.1): kty=EC2, alg=-7, crv=P-256, x, y."""
    numbers = key.public_numbers()
    return encode_cbor(
        {
            1: 2,
            3: -7,
            -1: 1,
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    )


def client_data_json(
    *, type_: str, challenge: bytes, origin: str, extra: dict[str, Any] | None = None
) -> bytes:
    """clientDataJSON in the member order browsers use."""
    data: dict[str, Any] = {
        "type": type_,
        "challenge": b64url(challenge),
        "origin": origin,
        "crossOrigin": False,
    }
    data.update(extra or {})
    return json.dumps(data, separators=(",", ":")).encode()


@dataclass
class SoftAuthenticator:
    """One credential on a software authenticator; ``sign_count`` is the last value used."""

    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    user_handle: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    aaguid: bytes = TEST_AAGUID
    sign_count: int = 0

    @property
    def cose_public_key(self) -> bytes:
        return cose_ec2_public_key(self.private_key.public_key())

    def registration_response(
        self,
        *,
        challenge: bytes,
        origin: str = DEFAULT_ORIGIN,
        rp_id: str = DEFAULT_RP_ID,
        up: bool = True,
        uv: bool = True,
        be: bool = False,
        bs: bool = False,
        sign_count: int | None = None,
        client_data_type: str = "webauthn.create",
        client_data_extra: dict[str, Any] | None = None,
        transports: list[str] | None = None,
        credential_id: bytes | None = None,
    ) -> dict[str, Any]:
        """A ``navigator.credentials.create()`` result with attestation fmt "none"."""
        cred_id = self.credential_id if credential_id is None else credential_id
        count = self.sign_count if sign_count is None else sign_count
        flags = flags_byte(up=up, uv=uv, be=be, bs=bs) | FLAG_AT
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([flags])
            + struct.pack(">I", count)
            + self.aaguid
            + struct.pack(">H", len(cred_id))
            + cred_id
            + self.cose_public_key
        )
        attestation_object = encode_cbor({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = client_data_json(
            type_=client_data_type, challenge=challenge, origin=origin, extra=client_data_extra
        )
        return {
            "id": b64url(cred_id),
            "rawId": b64url(cred_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation_object),
                "transports": ["internal"] if transports is None else transports,
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def authentication_response(
        self,
        *,
        challenge: bytes,
        origin: str = DEFAULT_ORIGIN,
        rp_id: str = DEFAULT_RP_ID,
        up: bool = True,
        uv: bool = True,
        be: bool = False,
        bs: bool = False,
        sign_count: int | None = None,
        user_handle: bytes | None | bool = True,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        client_data_type: str = "webauthn.get",
        client_data_extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A ``navigator.credentials.get()`` result.

        ``sign_count`` defaults to the last value + 1 (and is remembered); ``user_handle=True``
        sends this credential's handle, ``None`` omits it; ``signing_key`` forges the signature.
        """
        if sign_count is None:
            sign_count = self.sign_count + 1
        self.sign_count = sign_count
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([flags_byte(up=up, uv=uv, be=be, bs=bs)])
            + struct.pack(">I", sign_count)
        )
        client_data = client_data_json(
            type_=client_data_type, challenge=challenge, origin=origin, extra=client_data_extra
        )
        key = signing_key or self.private_key
        signature = key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        handle = self.user_handle if user_handle is True else user_handle
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(handle) if isinstance(handle, bytes) else None,
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }


def _certificate(subject, issuer, public_key, signing_key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signing_key, hashes.SHA256())
    )


class AttestationCA:
    """A vendor root and one attestation certificate, like a certified key's batch."""

    def __init__(self) -> None:
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test FIDO Root")])
        self.root = _certificate(root_name, root_name, root_key.public_key(), root_key, ca=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Keys"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                x509.NameAttribute(NameOID.COMMON_NAME, "Test Key Batch 1"),
            ]
        )
        self.leaf = _certificate(subject, root_name, self.key.public_key(), root_key, ca=False)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def packed(self, response: dict, *, with_x5c: bool = True, self_key=None) -> dict:
        """Turn a crafted "none" response into a "packed" one (full or self attestation)."""
        attestation = parse_cbor(b64url_decode(response["response"]["attestationObject"]))
        auth_data = attestation["authData"]
        client_data = b64url_decode(response["response"]["clientDataJSON"])
        signer = self.key if with_x5c else self_key
        signature = signer.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        statement = {"alg": -7, "sig": signature}
        if with_x5c:
            statement["x5c"] = [self.leaf.public_bytes(serialization.Encoding.DER)]
        response["response"]["attestationObject"] = b64url(
            encode_cbor({"fmt": "packed", "attStmt": statement, "authData": auth_data})
        )
        return response
