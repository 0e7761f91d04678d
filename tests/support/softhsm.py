"""SoftHSM2 as a real PKCS#11 card for tests.

``SOFTHSM2_CONF`` must be set before the library is loaded and ``pkcs11.lib`` is one per
process, so there is one configuration directory per test session (``softhsm_environment``);
each test module then initialises its own freshly-labelled token with a random PIN.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.x509 import decode_x509_certificate

from tests.support.pki import Authority, CardCertificate, issue_card_certificate

MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
AUTH_KEY_ID = b"\x01"
SIGNATURE_KEY_ID = b"\x02"
AUTH_CERT_LABEL = "Certificat d'Authentification CPS"
SIGNATURE_CERT_LABEL = "Certificat de Signature CPS"


class SoftHsmUnavailableError(RuntimeError):
    """softhsm2 (library or softhsm2-util) is not installed."""


@dataclass(frozen=True)
class SoftHsm:
    """One SoftHSM2 configuration and its loaded library for the whole process."""

    conf_path: Path
    module_path: str
    lib: Any

    def init_token(self, *, label: str, pin: str | None = None) -> TokenCredentials:
        """A fresh token with random PINs; the library is reinitialised to see the new slot."""
        credentials = TokenCredentials(
            label=label, pin=pin or random_pin(), so_pin=secrets.token_hex(8)
        )
        self._util(
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            credentials.so_pin,
            "--pin",
            credentials.pin,
        )
        self.lib.reinitialize()
        return credentials

    def delete_token(self, *, label: str) -> None:
        """Pull the card out: the token's files disappear under any open session."""
        self._util("--delete-token", "--token", label)

    def _util(self, *args: str) -> None:
        env = os.environ | {"SOFTHSM2_CONF": str(self.conf_path)}
        subprocess.run(
            ["softhsm2-util", *args], env=env, check=True, capture_output=True, text=True
        )


@dataclass(frozen=True)
class TokenCredentials:
    label: str
    pin: str
    so_pin: str


@dataclass(frozen=True)
class ProvisionedCard:
    """A token holding a practitioner key pair and its certificate, as a CPS card would."""

    credentials: TokenCredentials
    auth: CardCertificate

    @property
    def label(self) -> str:
        return self.credentials.label

    @property
    def pin(self) -> str:
        return self.credentials.pin


_environment: SoftHsm | None = None


def find_module() -> str | None:
    for path in MODULE_PATHS:
        if os.path.exists(path):
            return path
    return None


def softhsm_environment() -> SoftHsm:
    """The process-wide SoftHSM2: configuration written and exported before the first load."""
    global _environment
    if _environment is not None:
        return _environment
    module_path = find_module()
    if module_path is None or shutil.which("softhsm2-util") is None:
        raise SoftHsmUnavailableError("apt-get install -y softhsm2 opensc")
    if os.environ.get("SOFTHSM2_CONF") and module_path in pkcs11._loaded:
        # Somebody in this process loaded SoftHSM2 first: its configuration is the only one
        # the library will ever read, so reuse it rather than write one it would ignore.
        conf = Path(os.environ["SOFTHSM2_CONF"])
    else:
        directory = Path(tempfile.mkdtemp(prefix="softhsm-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        conf = write_configuration(directory)
        os.environ["SOFTHSM2_CONF"] = str(conf)
    _environment = SoftHsm(conf_path=conf, module_path=module_path, lib=pkcs11.lib(module_path))
    return _environment


def softhsm_or_skip() -> SoftHsm:
    """The process-wide SoftHSM2; in CI a missing softhsm2 fails instead of skipping."""
    try:
        return softhsm_environment()
    except SoftHsmUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"SoftHSM2 is required in CI: {exc}", pytrace=False)
        pytest.skip(f"SoftHSM2 not installed: {exc}")


def write_configuration(directory: Path) -> Path:
    """softhsm2.conf with a private token directory and removable slots."""
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = true\n"
    )
    return conf


def random_pin() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def random_label(prefix: str = "CPS") -> str:
    """Slot ids move after ``--init-token``: tokens are always selected by a unique label."""
    return f"{prefix}-{secrets.token_hex(4)}"


def provision_card(
    *,
    softhsm: SoftHsm,
    issuer: Authority,
    id_nat: str,
    label: str | None = None,
    with_signature_certificate: bool = False,
    **certificate: Any,
) -> ProvisionedCard:
    """Init a token, generate RSA 2048 on it, issue and store the certificate with the same id."""
    credentials = softhsm.init_token(label=label or random_label())
    token = softhsm.lib.get_token(token_label=credentials.label)
    with token.open(rw=True, user_pin=credentials.pin) as session:
        auth = _store_key_and_certificate(
            session=session,
            key_id=AUTH_KEY_ID,
            cert_label=AUTH_CERT_LABEL,
            issue=lambda public_key: issue_card_certificate(
                issuer=issuer, id_nat=id_nat, public_key=public_key, **certificate
            ),
        )
        if with_signature_certificate:
            _store_key_and_certificate(
                session=session,
                key_id=SIGNATURE_KEY_ID,
                cert_label=SIGNATURE_CERT_LABEL,
                issue=lambda public_key: issue_card_certificate(
                    issuer=issuer, id_nat=id_nat, public_key=public_key, signature_usage=True
                ),
            )
    return ProvisionedCard(credentials=credentials, auth=auth)


def _store_key_and_certificate(
    *, session: Any, key_id: bytes, cert_label: str, issue: Any
) -> CardCertificate:
    public, _private = session.generate_keypair(
        KeyType.RSA,
        2048,
        id=key_id,
        label=cert_label,
        store=True,
        private_template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True},
    )
    public_key = rsa.RSAPublicNumbers(
        e=int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
        n=int.from_bytes(public[Attribute.MODULUS], "big"),
    ).public_key()
    issued = issue(public_key)
    session.create_object(
        decode_x509_certificate(issued.der)
        | {Attribute.TOKEN: True, Attribute.ID: key_id, Attribute.LABEL: cert_label}
    )
    assert session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
    return issued
