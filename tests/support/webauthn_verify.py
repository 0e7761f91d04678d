"""Crafted ceremonies run through the WebAuthn verifier alone (no database, no service)."""

from __future__ import annotations

import json
import secrets

from idp.factors.webauthn import verify as wa
from tests.support.webauthn_crafting import DEFAULT_ORIGIN, DEFAULT_RP_ID, SoftAuthenticator

ORIGINS = [DEFAULT_ORIGIN]


def register(
    authn: SoftAuthenticator, response: dict | None = None, challenge: bytes = b"", **knobs
) -> wa.RegisteredCredential:
    """Verify a registration: *response* as given (made for *challenge*), or else a fresh one
    from *authn* shaped by *knobs*."""
    if response is None:
        challenge = secrets.token_bytes(32)
        response = authn.registration_response(challenge=challenge, **knobs)
    return wa.finish_registration(
        credential_json=json.dumps(response),
        expected_challenge=challenge,
        expected_rp_id=DEFAULT_RP_ID,
        expected_origins=ORIGINS,
    )


def authenticate(
    authn: SoftAuthenticator,
    stored: wa.RegisteredCredential,
    *,
    stored_count: int | None = None,
    expected_challenge: bytes | None = None,
    **knobs,
) -> wa.AuthenticationResult:
    """Verify a fresh assertion from *authn* (shaped by *knobs*) against the *stored* credential;
    the server's sign count and the challenge it expects can be told otherwise."""
    challenge = secrets.token_bytes(32)
    response = authn.authentication_response(challenge=challenge, **knobs)
    return wa.finish_authentication(
        credential_json=response,
        expected_challenge=expected_challenge or challenge,
        expected_rp_id=DEFAULT_RP_ID,
        expected_origins=ORIGINS,
        credential_public_key=stored.public_key,
        credential_current_sign_count=stored.sign_count if stored_count is None else stored_count,
    )
