"""Read the practitioner's identity from a CPS authentication certificate.

The subject is ``C=FR, title=<profession>`` then one multi-valued RDN
``SN=<surname> + CN=<idNat> + GN=<given name>``: attributes are read by type from the parsed
name, never by splitting the DN text (a multi-valued RDN broke another provider there).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

RPPS_PREFIX = "8"
RPPS_LENGTH = 11


class CertificateInfoError(ValueError):
    """The certificate is not a readable practitioner certificate."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    given_name: str
    surname: str
    id_nat: str
    rpps: str | None
    profession_label: str | None
    issuer: str
    serial_number: int
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str

    def summary(self) -> dict[str, str | None]:
        """What the agent may show or tell the IdP page: no key material."""
        return {
            "given_name": self.given_name,
            "surname": self.surname,
            "id_nat": self.id_nat,
            "rpps": self.rpps,
            "profession": self.profession_label,
            "not_after": self.not_after.isoformat(),
        }


def load_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateInfoError("not a DER X.509 certificate") from exc


def read_certificate_info(certificate: x509.Certificate) -> CertificateInfo:
    """Holder identity and validity of a practitioner authentication certificate."""
    subject = certificate.subject
    id_nat = single_attribute(subject, NameOID.COMMON_NAME)
    return CertificateInfo(
        given_name=single_attribute(subject, NameOID.GIVEN_NAME),
        surname=single_attribute(subject, NameOID.SURNAME),
        id_nat=id_nat,
        rpps=rpps_from_id_nat(id_nat),
        profession_label=optional_attribute(subject, NameOID.TITLE),
        issuer=certificate.issuer.rfc4514_string(),
        serial_number=certificate.serial_number,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
    )


def single_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    """The one value of ``oid`` anywhere in ``name``, including inside multi-valued RDNs."""
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1 or not isinstance(values[0].value, str) or not values[0].value:
        raise CertificateInfoError(f"subject must hold exactly one {oid.dotted_string}")
    return values[0].value


def optional_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return values[0].value if len(values) == 1 and isinstance(values[0].value, str) else None


def rpps_from_id_nat(id_nat: str) -> str | None:
    """RPPS number when idNat is ``8`` + 11 digits; other identifier types have none."""
    if id_nat.startswith(RPPS_PREFIX) and len(id_nat) == RPPS_LENGTH + 1 and id_nat.isdigit():
        return id_nat[1:]
    return None


def is_luhn_valid(number: str) -> bool:
    """Soft sanity check: public RPPS samples pass Luhn, but it is not documented."""
    if not number.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0
