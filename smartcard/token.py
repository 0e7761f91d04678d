"""python-pkcs11 wrapper: find the practitioner's card, its authentication key, and sign.

PKCS#11 exceptions never leave this module: they become ``smartcard.errors`` types the CLI and
the bridge can explain. The PIN is passed to ``C_Login`` and to nothing else.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pkcs11
from cryptography import x509
from pkcs11 import MGF, Attribute, Mechanism, ObjectClass, SlotFlag, TokenFlag
from pkcs11 import exceptions as p11

from smartcard import errors
from smartcard.protocol import (
    MECHANISM_PKCS1,
    MECHANISM_PSS,
    PSS_SALT_LENGTH,
    CardAnswer,
)

MODULE_ENV = "IDP_SMARTCARD_MODULE"
DEFAULT_MODULE_PATHS = (
    "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/opensc-pkcs11.so",
    "/usr/local/lib/opensc-pkcs11.so",
    "/Library/OpenSC/lib/opensc-pkcs11.so",
)
AUTH_LABEL_HINTS = ("auth", "authentification")
MAX_PIN_LENGTH = 64

REMOVAL_ERRORS = (
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
    p11.NoSuchToken,
    p11.DeviceRemoved,
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
)

Now = Callable[[], dt.datetime]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    label: str
    serial: str
    manufacturer: str
    model: str
    slot_description: str


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def resolve_module_path(
    *, module: str | None = None, environ: Mapping[str, str] = os.environ
) -> str:
    """Explicit path, then ``IDP_SMARTCARD_MODULE``, then the first OpenSC module found."""
    if module:
        return module
    if environ.get(MODULE_ENV):
        return environ[MODULE_ENV]
    for candidate in DEFAULT_MODULE_PATHS:
        if os.path.exists(candidate):
            return candidate
    raise errors.ModuleLoadError(f"set {MODULE_ENV} or --module")


@functools.cache
def load_module(path: str) -> Any:
    """One ``pkcs11.lib`` per path and per process: the library cannot be loaded twice."""
    try:
        return pkcs11.lib(path)
    except (OSError, RuntimeError) as exc:
        raise errors.ModuleLoadError(path) from exc


def list_tokens(*, lib: Any) -> list[TokenInfo]:
    """Initialised tokens in every reader; raises NoReaderError when there is no reader."""
    with translate_errors():
        slots = lib.get_slots()
        if not slots:
            raise errors.NoReaderError()
        return [_token_info(token) for token in _present_tokens(slots)]


def select_token(*, lib: Any, token_label: str | None = None) -> Any:
    """The token to use: by label, or the only one present holding an auth certificate."""
    with translate_errors():
        slots = lib.get_slots()
        if not slots:
            raise errors.NoReaderError()
        tokens = list(_present_tokens(slots))
        if token_label is not None:
            tokens = [token for token in tokens if token.label == token_label]
        if not tokens:
            raise errors.NoTokenError(token_label)
        if len(tokens) == 1:
            return tokens[0]
        with_certificate = [token for token in tokens if _has_auth_certificate(token)]
        if len(with_certificate) == 1:
            return with_certificate[0]
        if not with_certificate:
            raise errors.NoCertificateError()
        raise errors.AmbiguousTokenError(", ".join(token.label for token in with_certificate))


def read_auth_certificate(*, lib: Any, token_label: str | None = None) -> bytes:
    """DER of the authentication certificate, read without the PIN (certificates are public)."""
    token = select_token(lib=lib, token_label=token_label)
    with translate_errors(), token.open() as session:
        return _find_auth_certificate(session)[1]


def sign_payload(
    *,
    lib: Any,
    pin: str,
    payload: bytes,
    mechanism: str = MECHANISM_PKCS1,
    token_label: str | None = None,
    now: Now = utc_now,
) -> CardAnswer:
    """Check the certificate first (no PIN try wasted on a dead card), then log in and sign."""
    mechanism_arguments(mechanism)  # unknown mechanism: fail before touching the card
    certificate_der = read_auth_certificate(lib=lib, token_label=token_label)
    check_certificate_validity(certificate_der=certificate_der, now=now())
    with open_card(lib=lib, pin=pin, token_label=token_label) as card:
        if card.certificate_der != certificate_der:
            raise errors.CardRemovedError("carte changée / card swapped")
        return card.sign(payload, mechanism=mechanism)


@contextmanager
def open_card(*, lib: Any, pin: str, token_label: str | None = None) -> Iterator[Card]:
    """A logged-in session on the card, closed on exit even when the card is gone."""
    if not isinstance(pin, str) or not pin or len(pin) > MAX_PIN_LENGTH:
        raise errors.PinFormatError()
    token = select_token(lib=lib, token_label=token_label)
    if token.flags & TokenFlag.USER_PIN_LOCKED:
        raise errors.PinLockedError()
    with translate_errors(token=token):
        session = token.open(user_pin=pin)
    try:
        with translate_errors():
            key_id, certificate_der = _find_auth_certificate(session)
            key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
        yield Card(session=session, key=key, certificate_der=certificate_der)
    finally:
        try:
            session.close()
        except p11.PKCS11Error:
            pass  # the card is already gone: nothing left to close


class Card:
    """An open, logged-in card: its auth certificate and a way to sign with its key."""

    def __init__(self, *, session: Any, key: Any, certificate_der: bytes) -> None:
        self._session = session
        self._key = key
        self.certificate_der = certificate_der

    def sign(self, payload: bytes, *, mechanism: str = MECHANISM_PKCS1) -> CardAnswer:
        spec = mechanism_arguments(mechanism)
        with translate_errors():
            signature = self._key.sign(payload, **spec)
        return CardAnswer(
            certificate_der=self.certificate_der, signature=signature, mechanism=mechanism
        )


def mechanism_arguments(mechanism: str) -> dict[str, Any]:
    """python-pkcs11 arguments for a protocol mechanism name."""
    if mechanism == MECHANISM_PKCS1:
        return {"mechanism": Mechanism.SHA256_RSA_PKCS}
    if mechanism == MECHANISM_PSS:
        return {
            "mechanism": Mechanism.SHA256_RSA_PKCS_PSS,
            "mechanism_param": (Mechanism.SHA256, MGF.SHA256, PSS_SALT_LENGTH),
        }
    raise errors.MechanismUnsupportedError(mechanism)


def check_certificate_validity(*, certificate_der: bytes, now: dt.datetime) -> x509.Certificate:
    """Refuse locally what the IdP would refuse, with a message the practitioner understands."""
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
    except ValueError as exc:
        raise errors.NoCertificateError("certificat illisible / unreadable certificate") from exc
    if now < certificate.not_valid_before_utc:
        raise errors.CertificateNotYetValidError(certificate.not_valid_before_utc.isoformat())
    if now > certificate.not_valid_after_utc:
        raise errors.CertificateExpiredError(certificate.not_valid_after_utc.isoformat())
    return certificate


@contextmanager
def translate_errors(*, token: Any = None) -> Iterator[None]:
    """Turn PKCS#11 exceptions into agent errors; ``token`` lets a wrong PIN report tries left."""
    try:
        yield
    except errors.SmartcardError:
        raise
    except p11.PinIncorrect as exc:
        flags = _fresh_flags(token)
        if flags & TokenFlag.USER_PIN_LOCKED:
            raise errors.PinLockedError() from exc
        raise errors.PinIncorrectError(
            count_low=bool(flags & TokenFlag.USER_PIN_COUNT_LOW),
            final_try=bool(flags & TokenFlag.USER_PIN_FINAL_TRY),
        ) from exc
    except p11.PinLocked as exc:
        raise errors.PinLockedError() from exc
    except (p11.PinLenRange, p11.PinInvalid) as exc:
        raise errors.PinFormatError() from exc
    except REMOVAL_ERRORS as exc:
        raise errors.CardRemovedError(type(exc).__name__) from exc
    except (p11.MechanismInvalid, p11.MechanismParamInvalid) as exc:
        raise errors.MechanismUnsupportedError(type(exc).__name__) from exc
    except p11.PKCS11Error as exc:
        raise errors.SmartcardError(type(exc).__name__) from exc


def _fresh_flags(token: Any) -> TokenFlag:
    """Token flags re-read after a failed login: the cached ones predate the attempt."""
    if token is None:
        return TokenFlag(0)
    try:
        return token.slot.get_token().flags
    except p11.PKCS11Error:
        return token.flags


def _present_tokens(slots: list[Any]) -> Iterator[Any]:
    for slot in slots:
        if not slot.flags & SlotFlag.TOKEN_PRESENT:
            continue
        try:
            token = slot.get_token()
        except (p11.TokenNotPresent, p11.TokenNotRecognised):
            continue
        if token.flags & TokenFlag.TOKEN_INITIALIZED:
            yield token


def _token_info(token: Any) -> TokenInfo:
    serial = token.serial
    return TokenInfo(
        label=token.label,
        serial=serial.decode("ascii", "replace") if isinstance(serial, bytes) else str(serial),
        manufacturer=token.manufacturer_id,
        model=token.model,
        slot_description=token.slot.slot_description,
    )


def _has_auth_certificate(token: Any) -> bool:
    try:
        with token.open() as session:
            _find_auth_certificate(session)
    except (errors.NoCertificateError, p11.PKCS11Error):
        return False
    return True


def _find_auth_certificate(session: Any) -> tuple[bytes, bytes]:
    """(CKA_ID, DER) of the certificate for authentication, not the signature one.

    The authentication certificate has keyUsage digitalSignature without nonRepudiation; a label
    mentioning authentication breaks ties (CPS middleware labels both certificates).
    """
    candidates = []
    for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}):
        key_id, der, label = obj[Attribute.ID], obj[Attribute.VALUE], obj[Attribute.LABEL]
        if key_id and _is_authentication_certificate(der):
            hinted = any(hint in (label or "").lower() for hint in AUTH_LABEL_HINTS)
            candidates.append((not hinted, bytes(key_id), bytes(der)))
    if not candidates:
        raise errors.NoCertificateError()
    candidates.sort()
    return candidates[0][1], candidates[0][2]


def _is_authentication_certificate(der: bytes) -> bool:
    try:
        certificate = x509.load_der_x509_certificate(der)
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return usage.digital_signature and not usage.content_commitment
