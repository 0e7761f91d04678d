"""Wire contract shared by the workstation agent and the IdP server.

The agent must not depend on the server package, and the server must not trust anything the
agent did not sign: this module is the only code both sides import.

What is signed
--------------
``signing_payload(origin=..., transaction=..., challenge=...)`` returns
``PAYLOAD_CONTEXT`` followed by canonical JSON (sorted keys, no spaces, ASCII only) of
``{"challenge", "origin", "transaction"}``. Binding the IdP origin and the login transaction
means a signature obtained by another site, or for another login, never verifies here.
The server makes ``challenge`` (at least ``MIN_CHALLENGE_BITS`` of randomness, e.g. 32 random
bytes in base64url), keeps it server-side, single use and short-lived (STANDARDS.md SC-02).

Mechanisms (``mechanism`` field)
--------------------------------
``SHA256_RSA_PKCS`` (default, CPS3 and CPS4) and ``SHA256_RSA_PKCS_PSS`` (CPS4): PSS uses
MGF1-SHA256 and a 32-byte salt when signing; verifiers accept any salt length.

Agent answer (both modes)
-------------------------
``{"certificate": <standard base64 of the DER authentication certificate>,
"signature": <base64url, no padding>, "mechanism": <name above>}``.
Any request or answer body is at most ``MAX_MESSAGE_BYTES``.

Terminal mode (``idp-smartcard login --issuer URL --code CODE``), served by the IdP
----------------------------------------------------------------------------------
``CODE`` matches ``CODE_PATTERN``; the agent quotes it in the path.

1. ``GET {issuer}/smartcard/code/{code}`` → ``200`` with
   ``{"origin", "transaction", "challenge"}``; ``origin`` must equal the origin of ``issuer``
   (the agent refuses otherwise). ``404`` unknown or expired code, ``410`` already used.
2. ``POST {issuer}/smartcard/code/{code}`` with ``Content-Type: application/json`` and the agent
   answer plus ``{"code": CODE}`` → ``200`` ``{"status": "ok"}`` once verified; errors are
   ``{"error": <code>, "message": <text>}`` with a 4xx status. The code is single use.

Local bridge (``idp-smartcard bridge --origin https://idp.example``), served by the agent
--------------------------------------------------------------------------------------
Bound to ``127.0.0.1`` (``DEFAULT_BRIDGE_PORT`` unless configured). Every request must carry
``Origin`` equal to the configured origin (CORS answers carry exactly that origin, never ``*``)
and a ``Host`` of ``127.0.0.1:PORT`` or ``localhost:PORT``. Preflights (``OPTIONS``) answer
``204``, adding ``Access-Control-Allow-Private-Network: true`` when asked.

- ``GET /status`` → ``200`` ``{"token_present": bool, "tokens": [{"label", "serial",
  "manufacturer"}], "certificate": null | {"given_name", "surname", "id_nat", "rpps",
  "profession", "not_after"}}``.
- ``POST /sign`` (``application/json``) ``{"origin", "transaction", "challenge", "pin"}`` →
  ``200`` agent answer. ``origin`` must equal the configured origin. The PIN only reaches
  ``C_Login`` on the card; it is never logged, stored or sent anywhere else.
- Errors: ``{"error": <code>, "message": <text>}``; codes are listed in ``smartcard.bridge``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

PAYLOAD_CONTEXT = b"practitioner-idp smartcard login v1\n"

MECHANISM_PKCS1 = "SHA256_RSA_PKCS"
MECHANISM_PSS = "SHA256_RSA_PKCS_PSS"
DEFAULT_MECHANISM = MECHANISM_PKCS1
SUPPORTED_MECHANISMS = frozenset({MECHANISM_PKCS1, MECHANISM_PSS})
PSS_SALT_LENGTH = 32

MIN_CHALLENGE_BITS = 128
MAX_MESSAGE_BYTES = 16 * 1024
MAX_FIELD_LENGTH = 512
CODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{4,64}")
DEFAULT_BRIDGE_PORT = 47_615

CODE_PATH = "/smartcard/code/{code}"
STATUS_PATH = "/status"
SIGN_PATH = "/sign"


class ProtocolError(ValueError):
    """A message does not follow the contract above."""


@dataclass(frozen=True, slots=True)
class SigningRequest:
    """What the card is asked to sign: who asks, for which login, which challenge."""

    origin: str
    transaction: str
    challenge: str

    def payload(self) -> bytes:
        return signing_payload(
            origin=self.origin, transaction=self.transaction, challenge=self.challenge
        )


@dataclass(frozen=True, slots=True)
class CardAnswer:
    """The agent's answer: certificate, signature and the mechanism that made it."""

    certificate_der: bytes
    signature: bytes
    mechanism: str

    def to_json(self) -> dict[str, str]:
        return {
            "certificate": base64.b64encode(self.certificate_der).decode("ascii"),
            "signature": encode_b64url(self.signature),
            "mechanism": self.mechanism,
        }


def signing_payload(*, origin: str, transaction: str, challenge: str) -> bytes:
    """Canonical bytes to sign, so agent and server never disagree on a byte."""
    _require_origin(origin)
    _require_text("transaction", transaction)
    _require_text("challenge", challenge)
    body = {"challenge": challenge, "origin": origin, "transaction": transaction}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return PAYLOAD_CONTEXT + canonical.encode("ascii")


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, as browsers send it in ``Origin``."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ProtocolError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{host}{port}"


def parse_signing_request(data: Any) -> SigningRequest:
    """Check a ``{"origin", "transaction", "challenge"}`` object from the network."""
    if not isinstance(data, dict):
        raise ProtocolError("expected a JSON object")
    values = {name: data.get(name) for name in ("origin", "transaction", "challenge")}
    for name, value in values.items():
        _require_text(name, value)
    _require_origin(values["origin"])
    return SigningRequest(**values)


def parse_card_answer(data: Any) -> CardAnswer:
    """Decode the agent answer; raises ProtocolError on anything unexpected."""
    if not isinstance(data, dict):
        raise ProtocolError("expected a JSON object")
    certificate, signature, mechanism = (
        data.get("certificate"),
        data.get("signature"),
        data.get("mechanism"),
    )
    if not all(isinstance(value, str) for value in (certificate, signature, mechanism)):
        raise ProtocolError("certificate, signature and mechanism must be strings")
    if len(certificate) + len(signature) > MAX_MESSAGE_BYTES:
        raise ProtocolError("answer too large")
    if mechanism not in SUPPORTED_MECHANISMS:
        raise ProtocolError(f"unsupported mechanism {mechanism!r}")
    return CardAnswer(
        certificate_der=decode_b64(certificate),
        signature=decode_b64url(signature),
        mechanism=mechanism,
    )


def encode_b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_b64url(text: str) -> bytes:
    """Strict base64url (padding optional): junk characters are an error, not ignored."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ProtocolError("invalid base64url")
    stripped = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("invalid base64url") from exc


def decode_b64(text: str) -> bytes:
    """Strict standard base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("invalid base64") from exc


def _require_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_LENGTH:
        raise ProtocolError(f"{name} must be a non-empty string of at most {MAX_FIELD_LENGTH}")
    if not value.isprintable():
        raise ProtocolError(f"{name} holds control characters")


def _require_origin(origin: Any) -> None:
    _require_text("origin", origin)
    try:
        canonical = origin_of(origin)
    except ValueError as exc:
        raise ProtocolError(f"origin is not a URL origin: {origin!r}") from exc
    if canonical != origin:
        raise ProtocolError(f"origin must be exactly scheme://host[:port], got {origin!r}")
