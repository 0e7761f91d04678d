"""WebAuthn services against crafted responses: assurance levels from attestation (NIST-17,
AMR-02, WA-07), the AAGUID allowlist, binding level (NIST-10), clones (WA-06), last factor."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid

import pytest
from flask_babel import gettext
from sqlalchemy import select

from idp.auth import assurance
from idp.auth.contract import Attempt, InsufficientLevelError, LastFactorError
from idp.auth.devices import Client
from idp.auth.orchestrator import Orchestrator
from idp.factors.webauthn import enrolment as keys
from idp.factors.webauthn import method as webauthn
from idp.factors.webauthn import verify as wa
from idp.models import AuditEvent, WebAuthnCredential
from idp.ratelimit import DatabaseThrottle
from idp.services import cipher, methods
from tests.support import factories
from tests.support.webauthn_crafting import (
    DEFAULT_ORIGIN,
    TEST_AAGUID,
    AttestationCA,
    SoftAuthenticator,
    b64url_decode,
)

TEST_AAGUID_TEXT = str(uuid.UUID(bytes=TEST_AAGUID))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def practitioner(db, clock):
    practitioner = factories.practitioner(db, clock)
    db.commit()
    return practitioner


@pytest.fixture
def ca() -> AttestationCA:
    return AttestationCA()


def relying_party(**overrides) -> webauthn.RelyingParty:
    values = dict(rp_id="localhost", name="IdP test", origins=(DEFAULT_ORIGIN,))
    values.update(overrides)
    return webauthn.RelyingParty(**values)


def orchestrator(db, clock) -> Orchestrator:
    """The app's registry (every installed method), throttled on this test's database."""
    return Orchestrator(methods(), DatabaseThrottle(db.get_bind(), clock))


def passkey_attempt(clock, rp, *, required=None) -> Attempt:
    return Attempt(
        client=Client(ip="192.0.2.1"),
        now=clock.now(),
        required_acr=lambda _pid: required,
        context={"rp": rp},
    )


def register(db, practitioner, clock, rp, *, attest=None, session_acr=None, **knobs):
    """Run the registration service with a fresh SoftAuthenticator; returns (authn, row)."""
    options, challenge_id = keys.begin_registration(
        db, rp=rp, practitioner=practitioner, session_acr=session_acr, clock=clock
    )
    options = json.loads(options)
    authn = SoftAuthenticator(user_handle=b64url_decode(options["user"]["id"]))
    response = authn.registration_response(challenge=b64url_decode(options["challenge"]), **knobs)
    if attest is not None:
        response = attest(response)
    row = keys.finish_registration(
        db,
        rp=rp,
        practitioner=practitioner,
        credential_json=json.dumps(response),
        challenge_id=challenge_id,
        name="Key",
        session_acr=session_acr,
        ip="192.0.2.1",
        clock=clock,
    )
    db.commit()  # the caller's flow commits the new credential
    return authn, row


def passkey_login(db, clock, rp, authn, *, required=None, **knobs):
    method = methods()["webauthn"]
    started = orchestrator(db, clock).begin(db, method, passkey_attempt(clock, rp))
    response = authn.authentication_response(
        challenge=b64url_decode(json.loads(started["options"])["challenge"]), **knobs
    )
    answer = {"credential": json.dumps(response), "challenge_id": started["challenge_id"]}
    return orchestrator(db, clock).authenticate(
        db, method, passkey_attempt(clock, rp, required=required), answer
    )


# --------------------------------------------------------------------------- assurance levels


def test_an_attested_device_bound_key_reaches_phrh_and_hwk(db, practitioner, clock, ca):
    rp = relying_party(attestation_roots=(ca.root_pem,))
    options, _challenge_id = keys.begin_registration(
        db, rp=rp, practitioner=practitioner, session_acr=None, clock=clock
    )
    assert json.loads(options)["attestation"] == "direct"
    authn, row = register(db, practitioner, clock, rp, attest=ca.packed)
    assert row.attestation_fmt == "packed" and row.hardware_bound
    result = passkey_login(db, clock, rp, authn, required=assurance.HIGH)
    assert result.acr == assurance.HIGH
    assert result.amr == ("hwk", "user", "mfa")


def test_a_syncable_passkey_is_capped_at_phr_even_when_attested(db, practitioner, clock, ca):
    """NIST-17: BE=1 means the key can leave the device, so never phrh nor hwk."""
    rp = relying_party(attestation_roots=(ca.root_pem,))
    authn, row = register(db, practitioner, clock, rp, attest=ca.packed, be=True, bs=True)
    assert row.backup_eligible and not row.hardware_bound
    result = passkey_login(db, clock, rp, authn, be=True, bs=True)
    assert result.acr == assurance.PHISHING_RESISTANT
    assert result.amr == ("swk", "user", "mfa")
    with pytest.raises(InsufficientLevelError):
        passkey_login(db, clock, rp, authn, be=True, bs=True, required=assurance.HIGH)


@pytest.mark.parametrize("kind", ["none", "self"])
def test_unverifiable_attestation_never_counts_as_hardware(db, practitioner, clock, ca, kind):
    rp = relying_party(attestation_roots=(ca.root_pem,))
    holder = {}

    def self_attest(response):
        return ca.packed(response, with_x5c=False, self_key=holder["authn"].private_key)

    if kind == "self":
        options, challenge_id = keys.begin_registration(
            db, rp=rp, practitioner=practitioner, session_acr=None, clock=clock
        )
        authn = holder["authn"] = SoftAuthenticator()
        response = self_attest(
            authn.registration_response(challenge=b64url_decode(json.loads(options)["challenge"]))
        )
        row = keys.finish_registration(
            db,
            rp=rp,
            practitioner=practitioner,
            credential_json=json.dumps(response),
            challenge_id=challenge_id,
            name="Key",
            session_acr=None,
            ip=None,
            clock=clock,
        )
        db.commit()
    else:
        _authn, row = register(db, practitioner, clock, rp)
    assert not row.hardware_bound


def test_an_attestation_from_an_unknown_vendor_is_refused(db, practitioner, clock, ca):
    rp = relying_party(attestation_roots=(AttestationCA().root_pem,))
    with pytest.raises(wa.AttestationVerificationError):
        register(db, practitioner, clock, rp, attest=ca.packed)
    assert db.query(WebAuthnCredential).count() == 0


# --------------------------------------------------------------------------- AAGUID allowlist


def test_aaguid_allowlist_accepts_only_certified_listed_models(db, practitioner, clock, ca):
    rp = relying_party(
        attestation_roots=(ca.root_pem,), aaguid_allowlist=frozenset({TEST_AAGUID_TEXT})
    )
    _authn, row = register(db, practitioner, clock, rp, attest=ca.packed)
    assert row.aaguid == TEST_AAGUID_TEXT
    # The same model claimed without a verifiable attestation is not enough...
    with pytest.raises(wa.AttestationNotAllowedError):
        register(db, practitioner, clock, rp, session_acr=assurance.HIGH)
    # ...and another model is refused even when properly attested.
    other = relying_party(
        attestation_roots=(ca.root_pem,), aaguid_allowlist=frozenset({str(uuid.uuid4())})
    )
    with pytest.raises(wa.AttestationNotAllowedError):
        register(db, practitioner, clock, other, attest=ca.packed, session_acr=assurance.HIGH)
    assert db.query(WebAuthnCredential).count() == 1


# --------------------------------------------------------------------------- binding, removal


def test_binding_needs_the_accounts_level_capped_by_the_new_keys(db, practitioner, clock):
    """NIST-10: min(strongest on the account, new authenticator)."""
    rp = relying_party()
    new_key = assurance.PHISHING_RESISTANT
    assert keys.binding_requirement(db, practitioner_id=practitioner.id, new_level=new_key) is None
    factories.totp_device(db, clock, practitioner, cipher=cipher())
    db.commit()
    with pytest.raises(keys.BindingLevelError):
        register(db, practitioner, clock, rp, session_acr=None)
    register(db, practitioner, clock, rp, session_acr=assurance.SUBSTANTIAL)
    with pytest.raises(keys.BindingLevelError) as refused:
        register(db, practitioner, clock, rp, session_acr=assurance.SUBSTANTIAL)
    assert refused.value.required_acr == assurance.PHISHING_RESISTANT
    register(db, practitioner, clock, rp, session_acr=assurance.PHISHING_RESISTANT)


def test_the_last_usable_factor_cannot_be_removed(db, practitioner, clock):
    rp = relying_party()
    method = methods()["webauthn"]

    def remove(credential):
        orchestrator(db, clock).remove(db, method, practitioner.id, credential.id, now=clock.now())

    _authn, first = register(db, practitioner, clock, rp)
    with pytest.raises(LastFactorError):
        remove(first)
    _authn, second = register(db, practitioner, clock, rp, session_acr=assurance.HIGH)
    second.flagged_at = clock.now()  # a blocked key is no factor: it does not count...
    db.commit()
    with pytest.raises(LastFactorError):
        remove(first)
    # ...and can always be removed.
    remove(second)
    assert db.get(WebAuthnCredential, second.id).removed_at == clock.now()


def test_names_are_one_short_printable_line():
    assert keys.clean_name("  Clé \t bleue\n ") == "Clé bleue"
    assert keys.clean_name("a\u0000b\u202ec") == "abc"
    for bad in ("", "   ", "\u0000", "x" * 65):
        with pytest.raises(keys.InvalidNameError):
            keys.clean_name(bad)


# --------------------------------------------------------------------------- clones


def test_a_counter_that_goes_back_flags_the_key(db, practitioner, clock):
    rp = relying_party()
    authn, row = register(db, practitioner, clock, rp)
    passkey_login(db, clock, rp, authn, sign_count=7)
    with pytest.raises(webauthn.PossibleCloneError):
        passkey_login(db, clock, rp, authn, sign_count=6)
    db.expire_all()
    assert db.get(WebAuthnCredential, row.id).flagged_at == clock.now()
    with pytest.raises(webauthn.CredentialBlockedError):
        passkey_login(db, clock, rp, authn, sign_count=8)


def test_a_key_without_counter_stays_usable(db, practitioner, clock):
    """Many passkeys always report 0: that is allowed (WA-06 applies when either is non-zero)."""
    rp = relying_party()
    authn, _row = register(db, practitioner, clock, rp)
    for _ in range(2):
        assert passkey_login(db, clock, rp, authn, sign_count=0).practitioner_id == practitioner.id


def test_user_handle_is_random_and_stable(db, practitioner, clock):
    first = keys.user_handle(db, practitioner=practitioner)
    assert len(first) == keys.USER_HANDLE_BYTES
    assert keys.user_handle(db, practitioner=practitioner) == first
    assert practitioner.rpps.encode() not in first
    assert first != hashlib.sha256(practitioner.rpps.encode()).digest()
    assert secrets.compare_digest(first, practitioner.webauthn_user_handle)


def test_a_clone_is_audited_once_as_such_and_once_as_a_failure(db, practitioner, clock):
    """The flag and both events land in the refusal's one commit, after the rollback."""
    rp = relying_party()
    authn, row = register(db, practitioner, clock, rp)
    passkey_login(db, clock, rp, authn, sign_count=7)
    db.expire_all()  # the next request reads the stored counter afresh
    with pytest.raises(webauthn.PossibleCloneError) as refused:
        passkey_login(db, clock, rp, authn, sign_count=7)
    assert refused.value.status == 403 and not db.in_transaction()
    [clone] = audit_events(db, "auth:webauthn:possible_clone")
    assert clone.practitioner_id == practitioner.id
    assert clone.details == {"credential": row.id, "new_sign_count": 7, "stored_sign_count": 7}
    [failed] = audit_events(db, "auth:webauthn:failed")
    assert failed.practitioner_id == practitioner.id
    assert failed.details["reason"] == "PossibleCloneError" and failed.details["passkey"]


def test_refusals_are_named_by_stable_codes_with_their_messages(app):
    method = app.extensions["idp.methods"]["webauthn"]
    unreadable = webauthn.AssertionRefusedError(wa.MalformedCredentialError("x"))
    assert (unreadable.code, unreadable.status) == ("MalformedCredentialError", 400)
    no_uv = webauthn.AssertionRefusedError(wa.UserVerificationMissingError("x"))
    assert (no_uv.code, no_uv.status) == ("UserVerificationMissingError", 401)
    with app.test_request_context():  # the catalogue's texts, msgids unchanged
        unreadable_text = "The response from your security key could not be read. Try again."
        assert method.message(unreadable) == gettext(unreadable_text) != unreadable_text
        assert method.message(webauthn.CredentialBlockedError()) == method.message(
            webauthn.PossibleCloneError()
        )
        failed_text = "The verification failed. Try again or use another sign-in method."
        assert method.message(wa_error("InvalidSignatureError")) == gettext(failed_text)
        no_key_text = "No usable security key is registered for this account."
        assert app.extensions["idp.methods"].message("no_credential") == gettext(no_key_text)


def wa_error(name: str) -> webauthn.AssertionRefusedError:
    return webauthn.AssertionRefusedError(getattr(wa, name)("x"))


def audit_events(db, event: str) -> list[AuditEvent]:
    return list(db.execute(select(AuditEvent).where(AuditEvent.event == event)).scalars())
