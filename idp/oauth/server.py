"""Authlib wiring: the authorization server, the code grant, PKCE and OpenID Connect.

Every Authlib extension point the provider relies on lives here (see AUTHLIB.md notes).
"""

from __future__ import annotations

import datetime as dt

from authlib.oauth2.rfc6749 import AccessDeniedError, InvalidRequestError, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode
from flask import Flask, current_app
from sqlalchemy import bindparam, select

from idp import housekeeping
from idp.auth import assurance
from idp.auth.policy import current_auth
from idp.crypto import hash_token
from idp.db import get_db
from idp.models import AuthorizationCode, OAuthClient
from idp.oauth import keys
from idp.oauth.clients import ClientCache
from idp.oauth.validation import AuthorizationRequestRules, ProviderAuthorizationServer
from idp.services import clock, settings


def query_client(client_id: str) -> OAuthClient | None:
    if not client_id or len(client_id) > 64 or not client_id.isprintable():
        return None
    return current_app.extensions["idp.clients"].get(get_db, client_id)


_CODES = AuthorizationCode.__table__
NONCE_USED = select(_CODES.c.id).where(
    _CODES.c.client_id == bindparam("client"),
    _CODES.c.nonce == bindparam("nonce"),
    _CODES.c.issued_at >= bindparam("since"),
)
"""Built once: each request only binds its values."""


class S256CodeChallenge(CodeChallenge):
    """PKCE with S256 for every client, confidential ones included; ``plain`` refused."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE with S256 is required.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(AuthorizationRequestRules, grants.AuthorizationCodeGrant):
    AUTHORIZATION_CODE_LENGTH = 48  # ~285 bits

    def save_authorization_code(self, code: str, oauth_request) -> None:
        db = get_db()
        auth = current_auth()  # the authorize view only gets here fully authenticated
        if auth is None or auth.limited or auth.acr == assurance.RECOVERY:
            raise AccessDeniedError()  # never a code for a limited (recovery-code) login
        data = oauth_request.payload.data
        db.add(
            AuthorizationCode(
                code_hash=hash_token(code),
                client_id=oauth_request.client.client_id,
                practitioner_id=oauth_request.user.id,
                redirect_uri=oauth_request.payload.redirect_uri,
                scope=oauth_request.payload.scope,
                nonce=data.get("nonce"),
                code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"],
                auth_time=dt.datetime.fromtimestamp(auth.auth_time, dt.UTC),
                acr=auth.acr,
                amr=" ".join(auth.amr),
                issued_at=clock().now(),
            )
        )
        db.commit()


class ProviderOpenIDCode(OpenIDCode):
    def exists_nonce(self, nonce: str, oauth_request) -> bool:
        """A nonce already used by a live code of this client. Only codes the prune still
        keeps count: an older one can no longer be exchanged, so its nonce replays nothing."""
        since = housekeeping.codes_kept_since(clock().now(), settings())
        used = get_db().execute(
            NONCE_USED,
            {"client": oauth_request.payload.client_id, "nonce": nonce, "since": since},
        )
        return used.first() is not None


def create_server(app: Flask) -> ProviderAuthorizationServer:
    app.extensions["idp.clients"] = ClientCache(app.extensions["idp.clock"])
    app.extensions["idp.keyring"] = keys.KeyRing(
        cipher=app.extensions["idp.cipher"], clock=app.extensions["idp.clock"]
    )
    server = ProviderAuthorizationServer(app, query_client=query_client)
    server.register_grant(
        AuthorizationCodeGrant, [S256CodeChallenge(required=True), ProviderOpenIDCode()]
    )
    return server
