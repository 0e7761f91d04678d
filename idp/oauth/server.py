"""Authlib wiring: the authorization server, the code grant, PKCE and OpenID Connect.

Every Authlib extension point the provider relies on lives here (see AUTHLIB.md notes).
"""

from __future__ import annotations

import datetime as dt

from authlib.oauth2.rfc6749 import AccessDeniedError, InvalidRequestError, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, UserInfo
from flask import Flask, current_app, g
from sqlalchemy import bindparam, insert, select, update

from idp import audit, housekeeping
from idp.auth import assurance
from idp.auth.policy import current_auth
from idp.crypto import hash_token, new_token
from idp.db import get_db, memoized
from idp.models import (
    AuditEvent,
    AuthorizationCode,
    OAuthClient,
    Practitioner,
    PractitionerStatus,
    Token,
)
from idp.oauth import keys
from idp.oauth.claims import user_claims
from idp.oauth.clients import ClientCache
from idp.oauth.validation import AuthorizationRequestRules, ProviderAuthorizationServer
from idp.services import clock, keyring, settings


def query_client(client_id: str) -> OAuthClient | None:
    if not client_id or len(client_id) > 64 or not client_id.isprintable():
        return None
    return current_app.extensions["idp.clients"].get(get_db(), client_id)


def new_access_token(**_request) -> str:
    """256 bits from the OS in one call (Authlib's default draws one character at a time)."""
    return new_token(32)


_CODES = AuthorizationCode.__table__
# Built once: each request only binds its values (SQLAlchemy's compiled cache does the rest).
CLAIM_CODE = (
    update(_CODES)
    .where(
        _CODES.c.code_hash == bindparam("hash"),
        _CODES.c.client_id == bindparam("client"),
        _CODES.c.used_at.is_(None),
    )
    .values(used_at=bindparam("now"))
    .returning(*_CODES.c)
)
SPENT_CODE = select(_CODES.c.id, _CODES.c.practitioner_id).where(
    _CODES.c.code_hash == bindparam("hash"), _CODES.c.client_id == bindparam("client")
)
NONCE_USED = select(_CODES.c.id).where(
    _CODES.c.client_id == bindparam("client"),
    _CODES.c.nonce == bindparam("nonce"),
    _CODES.c.issued_at >= bindparam("since"),
)
PRACTITIONER = select(*Practitioner.__table__.c).where(
    Practitioner.__table__.c.id == bindparam("id")
)
INSERT_TOKEN = insert(Token.__table__)
INSERT_AUDIT = insert(AuditEvent.__table__)


def save_token(token: dict, oauth_request) -> None:
    """The token and its audit row, as two plain INSERTs (no unit of work to flush: this is
    the hottest write of the service). No commit here: the token lands in the code claim's
    transaction (the token view commits)."""
    db = get_db()
    code: AuthorizationCode = oauth_request.authorization_code
    now = clock().now()
    client_id = oauth_request.client.client_id
    db.execute(
        INSERT_TOKEN,
        dict(
            access_token_hash=hash_token(token["access_token"]),
            client_id=client_id,
            practitioner_id=oauth_request.user.id,
            authorization_code_id=code.id,
            scope=token.get("scope", ""),
            acr=code.acr,
            amr=code.amr,
            auth_time=code.auth_time,
            issued_at=now,
            expires_at=now + dt.timedelta(seconds=int(token["expires_in"])),
        ),
    )
    db.execute(
        INSERT_AUDIT,
        audit.values(
            "oauth:token:issued",
            practitioner_id=oauth_request.user.id,
            client_id=client_id,
            scope=token.get("scope", ""),
        ),
    )


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

    def validate_code_verifier(self, grant, result):
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'.")
        super().validate_code_verifier(grant, result)


class AuthorizationCodeGrant(AuthorizationRequestRules, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
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

    def query_authorization_code(self, code: str, client: OAuthClient):
        """Consume the code atomically; a second use revokes what the first one issued.

        One ``UPDATE … RETURNING`` claims the code and reads it. The claim is not committed
        here: the token view commits once, after the token is saved, so the claim and the
        token land together. A replay that arrives in between
        waits for that commit (the claimed row is locked), then finds the token to revoke. A
        failed exchange (wrong verifier, expired code) commits the claim alone: one try.
        """
        db = get_db()
        now = clock().now()
        code_hash = hash_token(code)
        claimed = db.execute(
            CLAIM_CODE, {"hash": code_hash, "client": client.client_id, "now": now}
        ).one_or_none()
        row = AuthorizationCode(**claimed._mapping) if claimed is not None else None
        if row is None:
            spent = db.execute(
                SPENT_CODE, {"hash": code_hash, "client": client.client_id}
            ).one_or_none()
            if spent is not None:
                self._revoke_reused(db, spent.id, spent.practitioner_id, client, now)
            return None
        if (now - row.issued_at).total_seconds() > settings().code_ttl_seconds:
            return None
        return row

    @staticmethod
    def _revoke_reused(db, code_id: int, practitioner_id: int, client, now) -> None:
        """A spent code presented again: what it bought is revoked (RFC 6749 §4.1.2)."""
        revoked = db.execute(
            update(Token)
            .where(Token.authorization_code_id == code_id, Token.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        audit.record(
            db,
            "oauth:code:reused",
            practitioner_id=practitioner_id,
            client_id=client.client_id,
            revoked_tokens=revoked,
        )
        db.commit()

    def delete_authorization_code(self, authorization_code) -> None:
        """Nothing to do: the code was marked used when it was claimed."""

    def authenticate_user(self, authorization_code: AuthorizationCode):
        found = (
            get_db().execute(PRACTITIONER, {"id": authorization_code.practitioner_id}).one_or_none()
        )
        practitioner = Practitioner(**found._mapping) if found is not None else None
        if practitioner is None or practitioner.status != PractitionerStatus.ACTIVE:
            return None
        if practitioner.password_change_required:  # "This wasn't me" since the code was issued
            return None
        if authorization_code.acr == assurance.RECOVERY:
            return None  # a limited login's code, had one been issued: no token for it
        return practitioner


class ProviderOpenIDCode(OpenIDCode):
    def exists_nonce(self, nonce: str, oauth_request) -> bool:
        """A nonce already used by a live code of this client (Authlib asks twice per
        /authorize: read once). Only codes the prune still keeps count: an older one can no
        longer be exchanged, so its nonce replays nothing."""
        client_id = oauth_request.payload.client_id
        db = get_db()
        since = housekeeping.codes_kept_since(clock().now(), settings())
        return memoized(
            db,
            ("nonce", client_id, nonce),
            lambda: (
                db.execute(
                    NONCE_USED, {"client": client_id, "nonce": nonce, "since": since}
                ).first()
                is not None
            ),
        )

    def get_client_algorithm(self, client: OAuthClient) -> str:
        return client.id_token_signed_response_alg or "RS256"

    def _signing_key(self, client: OAuthClient) -> tuple[str, object]:
        """(kid, key) for this client's algorithm, taken once per request: the header's kid
        and the signature always come from the same key, even across a rotation."""
        alg = self.get_client_algorithm(client)
        if getattr(g, "idp_signing", (None,))[0] != alg:
            g.idp_signing = (alg, *keyring().signing_key(get_db, alg))
        return g.idp_signing[1:]

    def resolve_client_private_key(self, client: OAuthClient):
        return self._signing_key(client)[1]

    def get_encode_header(self, client: OAuthClient) -> dict:
        kid, _key = self._signing_key(client)
        return {"alg": self.get_client_algorithm(client), "kid": kid, "typ": "JWT"}

    def get_client_claims(self, client: OAuthClient) -> dict:
        now = int(clock().now().timestamp())
        return {
            "iss": settings().issuer,
            "aud": client.client_id,
            "iat": now,
            "exp": now + settings().id_token_ttl_seconds,
        }

    def generate_user_info(self, user: Practitioner, scope: str) -> UserInfo:
        return UserInfo(user_claims(user, scope))


def create_server(app: Flask) -> ProviderAuthorizationServer:
    app.extensions["idp.clients"] = ClientCache(app.extensions["idp.clock"])
    app.extensions["idp.keyring"] = keys.KeyRing(
        cipher=app.extensions["idp.cipher"], clock=app.extensions["idp.clock"]
    )
    ttl = app.extensions["idp.settings"].access_token_ttl_seconds
    app.config.setdefault("OAUTH2_TOKEN_EXPIRES_IN", {"authorization_code": ttl})
    app.config.setdefault("OAUTH2_ACCESS_TOKEN_GENERATOR", new_access_token)
    server = ProviderAuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.register_grant(
        AuthorizationCodeGrant, [S256CodeChallenge(required=True), ProviderOpenIDCode()]
    )
    return server
