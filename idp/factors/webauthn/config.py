"""WebAuthn settings: the RP ID and exact origins (from the issuer unless overridden) and the
attestation policy, read from the environment by ``configure`` and checked by ``check``.

``IDP_WEBAUTHN_RP_ID``, ``IDP_WEBAUTHN_ORIGINS``, ``IDP_WEBAUTHN_AAGUIDS`` and
``IDP_WEBAUTHN_ATTESTATION_ROOTS`` (see the README). The values live in ``Settings`` (its
``webauthn_*`` fields, the operator's one list of settings); reading and checking them is this
package's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from idp.config import ConfigError, Settings, origin_of

PEM_CERTIFICATE_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def parse_origins(value: str) -> tuple[str, ...]:
    """Comma-separated origins; a path, query or fragment is a configuration mistake."""
    origins = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ConfigError(f"IDP_WEBAUTHN_ORIGINS: {item!r} must be scheme://host[:port]")
        origins.append(origin_of(item))
    return tuple(origins)


def parse_aaguids(value: str) -> frozenset[str] | None:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        return None
    try:
        return frozenset(str(uuid.UUID(item)) for item in items)
    except ValueError as exc:
        raise ConfigError("IDP_WEBAUTHN_AAGUIDS must be comma-separated UUIDs") from exc


def load_pem_certificates(path: str) -> tuple[bytes, ...]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"IDP_WEBAUTHN_ATTESTATION_ROOTS: cannot read {path}") from exc
    certificates = tuple(m.group(0) + b"\n" for m in PEM_CERTIFICATE_RE.finditer(data))
    if not certificates:
        raise ConfigError(f"IDP_WEBAUTHN_ATTESTATION_ROOTS: no PEM certificate in {path}")
    return certificates


def configure(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """``settings`` with the WebAuthn overrides the environment sets."""
    env = os.environ if environ is None else environ
    roots = env.get("IDP_WEBAUTHN_ATTESTATION_ROOTS")
    return dataclasses.replace(
        settings,
        webauthn_rp_id=(env.get("IDP_WEBAUTHN_RP_ID") or "").strip().lower() or None,
        webauthn_origins=parse_origins(env.get("IDP_WEBAUTHN_ORIGINS", "")),
        webauthn_aaguids=parse_aaguids(env.get("IDP_WEBAUTHN_AAGUIDS", "")),
        webauthn_attestation_roots=load_pem_certificates(roots) if roots else (),
    )


def check(settings: Settings) -> None:
    """Refuse a WebAuthn setup browsers would reject, or an allowlist that proves nothing.

    The RP ID must be each origin's host or a parent domain of it (WebAuthn L3 §5.1.3 uses the
    registrable-suffix rule: bare top-level domains are refused here, other public suffixes such
    as ``gouv.fr`` are left to the operator). An AAGUID
    allowlist without attestation roots would trust the authenticator's own unverified claim.
    """
    rp_id = settings.relying_party_id
    if not rp_id:
        raise ConfigError("the WebAuthn RP ID is empty: set IDP_ISSUER or IDP_WEBAUTHN_RP_ID")
    for origin in settings.relying_party_origins:
        host = urlsplit(origin).hostname or ""
        parent = host.endswith("." + rp_id) and "." in rp_id  # never a bare top-level domain
        if host != rp_id and not parent:
            raise ConfigError(
                f"IDP_WEBAUTHN_RP_ID {rp_id!r} is not the host of {origin!r} or a parent domain"
            )
    if settings.webauthn_aaguids and not settings.webauthn_attestation_roots:
        raise ConfigError(
            "IDP_WEBAUTHN_AAGUIDS needs IDP_WEBAUTHN_ATTESTATION_ROOTS (PEM roots, e.g. from "
            "FIDO MDS): without them an authenticator's model cannot be verified"
        )
