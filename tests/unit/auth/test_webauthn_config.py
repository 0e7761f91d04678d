"""WebAuthn settings: RP ID and exact origins from the issuer, overrides, attestation policy."""

from __future__ import annotations

import pytest

from idp.config import ConfigError, load_settings, origin_of
from idp.factors.webauthn.config import check as check_webauthn
from idp.factors.webauthn.config import configure
from tests.support.webauthn_crafting import AttestationCA

KEYS = {"IDP_SECRET_KEY": "s" * 40, "IDP_DATA_KEY": "d" * 40}


def settings_from(tmp_path, **env):
    environ = {**KEYS, "IDP_INSTANCE_PATH": str(tmp_path), **env}
    return configure(load_settings(environ), environ)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://idp.sante.example", "https://idp.sante.example"),
        ("https://IdP.Sante.Example:443/", "https://idp.sante.example"),
        ("https://idp.sante.example:8443/base", "https://idp.sante.example:8443"),
        ("http://localhost:5000", "http://localhost:5000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_origin_is_what_a_browser_would_send(url, origin):
    assert origin_of(url) == origin


def test_defaults_come_from_the_issuer(tmp_path):
    settings = settings_from(tmp_path, IDP_ISSUER="https://idp.sante.example:8443/")
    assert settings.relying_party_id == "idp.sante.example"
    assert settings.relying_party_origins == ["https://idp.sante.example:8443"]
    assert settings.webauthn_aaguids is None and settings.webauthn_attestation_roots == ()
    check_webauthn(settings)


def test_overrides_for_a_parent_domain_and_several_origins(tmp_path):
    settings = settings_from(
        tmp_path,
        IDP_ISSUER="https://login.sante.example",
        IDP_WEBAUTHN_RP_ID="Sante.Example",
        IDP_WEBAUTHN_ORIGINS="https://login.sante.example, https://auth.sante.example:8443/",
    )
    assert settings.relying_party_id == "sante.example"
    assert settings.relying_party_origins == [
        "https://login.sante.example",
        "https://auth.sante.example:8443",
    ]
    check_webauthn(settings)


@pytest.mark.parametrize(
    "env",
    [
        {"IDP_WEBAUTHN_RP_ID": "other.example"},
        {"IDP_WEBAUTHN_RP_ID": "example"},
        {"IDP_WEBAUTHN_RP_ID": "ante.example"},
        {"IDP_WEBAUTHN_ORIGINS": "https://evil.example"},
        {"IDP_WEBAUTHN_ORIGINS": "https://idp.sante.example/path"},
        {"IDP_WEBAUTHN_ORIGINS": "ftp://idp.sante.example"},
        {"IDP_WEBAUTHN_AAGUIDS": "not-a-uuid"},
        {"IDP_WEBAUTHN_AAGUIDS": "01234567-89ab-cdef-0123-456789abcdef"},
        {"IDP_WEBAUTHN_ATTESTATION_ROOTS": "/nonexistent/roots.pem"},
    ],
    ids=["foreign-rp", "tld", "suffix-not-parent", "foreign-origin", "path", "scheme", "bad-aaguid",
         "aaguids-without-roots", "missing-roots"],
)  # fmt: skip
def test_unsafe_webauthn_settings_are_refused(tmp_path, env):
    with pytest.raises(ConfigError):
        check_webauthn(settings_from(tmp_path, IDP_ISSUER="https://idp.sante.example", **env))


def test_aaguid_allowlist_with_attestation_roots(tmp_path):
    roots = tmp_path / "roots.pem"
    roots.write_bytes(b"# FIDO roots\n" + AttestationCA().root_pem + AttestationCA().root_pem)
    settings = settings_from(
        tmp_path,
        IDP_ISSUER="https://idp.sante.example",
        IDP_WEBAUTHN_AAGUIDS="01234567-89AB-CDEF-0123-456789ABCDEF, ",
        IDP_WEBAUTHN_ATTESTATION_ROOTS=str(roots),
    )
    check_webauthn(settings)
    assert settings.webauthn_aaguids == frozenset({"01234567-89ab-cdef-0123-456789abcdef"})
    assert len(settings.webauthn_attestation_roots) == 2
    assert all(
        pem.startswith(b"-----BEGIN CERTIFICATE-----")
        for pem in settings.webauthn_attestation_roots
    )
