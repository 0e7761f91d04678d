"""The reference the IdP is measured against: the least an OpenID provider's four client
endpoints can do, bare Flask + joserfc, no database, served by the IdP's own gunicorn setup
(``idp.wsgi_server.run``: gthread workers, threads, keep-alive, the redacting access log), so
only the application differs.

Every worker holds its own in-memory state, built at start from deterministic values (the
workers share nothing, as the IdP's): authorization codes ``code-000000`` … (one use each,
PKCE S256 of ``VERIFIER``), access tokens ``token-000000`` … for UserInfo, and one
confidential client (``CLIENT_ID`` / ``CLIENT_SECRET``, the secret kept as its SHA-256).

    python bench/reference.py --port 5100 --workers 2 --threads 4 [--codes 40000]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLIENT_ID = "reference-client"
CLIENT_SECRET = "reference-secret-0123456789"
VERIFIER = "reference-verifier-" + "v" * 40
REDIRECT_URI = "http://localhost:9999/callback"
SCOPE = "openid profile email rpps"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode()).digest())


def code_of(index: int) -> str:
    return f"code-{index:06d}"


def token_of(index: int) -> str:
    return f"token-{index:06d}"


def discovery_of(issuer: str) -> dict:
    """As many members as the IdP's own document."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks.json",
        "end_session_endpoint": f"{issuer}/logout",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["pairwise", "public"],
        "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256"],
        "userinfo_signing_alg_values_supported": ["none"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "rpps", "offline_access"],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "amr",
            "given_name",
            "family_name",
            "email",
            "email_verified",
            "rpps",
            "profession_code",
        ],
        "acr_values_supported": ["substantial", "high"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "require_request_uri_registration": False,
        "authorization_response_iss_parameter_supported": True,
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": False,
        "ui_locales_supported": ["fr", "en"],
    }


def create_app(*, issuer: str, codes: int):
    from flask import Flask, jsonify, request
    from joserfc import jwt
    from joserfc.jwk import ECKey

    app = Flask("reference")
    keys = [ECKey.generate_key("P-256", {"use": "sig"}, auto_kid=True) for _ in range(2)]
    signing = keys[0]
    document = discovery_of(issuer)
    secret_hash = hashlib.sha256(CLIENT_SECRET.encode()).digest()
    claims_of_subject = {
        "sub": "reference-subject",
        "given_name": "Camille",
        "family_name": "Martin",
        "email": "camille.martin@example.test",
        "email_verified": True,
        "rpps": "10101010101",
    }
    grant = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "challenge": s256(VERIFIER),
        "scope": SCOPE,
        "nonce": "reference-nonce",
        "sub": claims_of_subject["sub"],
    }
    pending = {code_of(i): grant for i in range(codes)}
    tokens = {token_of(i): claims_of_subject for i in range(1000)}

    def error(code: str, status: int = 400):
        response = jsonify(error=code)
        response.status_code = status
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return jsonify(document)

    @app.get("/jwks.json")
    def jwks():
        return jsonify(keys=[key.as_dict(private=False) for key in keys])

    @app.post("/token")
    def token():
        auth = request.authorization
        if (
            auth is None
            or auth.type != "basic"
            or not hmac.compare_digest(auth.username or "", CLIENT_ID)
            or not hmac.compare_digest(
                hashlib.sha256((auth.password or "").encode()).digest(), secret_hash
            )
        ):
            return error("invalid_client", 401)
        form = request.form
        if form.get("grant_type") != "authorization_code":
            return error("unsupported_grant_type")
        found = pending.pop(form.get("code", ""), None)
        if (
            found is None
            or found["client_id"] != auth.username
            or found["redirect_uri"] != form.get("redirect_uri")
            or not hmac.compare_digest(s256(form.get("code_verifier", "")), found["challenge"])
        ):
            return error("invalid_grant")
        access_token = secrets.token_urlsafe(32)
        tokens[access_token] = claims_of_subject
        now = int(time.time())
        id_token = jwt.encode(
            {"alg": "ES256", "kid": signing.kid},
            {
                "iss": issuer,
                "sub": found["sub"],
                "aud": auth.username,
                "iat": now,
                "exp": now + 300,
                "nonce": found["nonce"],
                "at_hash": b64url(hashlib.sha256(access_token.encode()).digest()[:16]),
            },
            signing,
        )
        response = jsonify(
            access_token=access_token,
            token_type="Bearer",
            expires_in=3600,
            scope=found["scope"],
            id_token=id_token,
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    @app.route("/userinfo", methods=["GET", "POST"])
    def userinfo():
        header = request.headers.get("Authorization", "")
        scheme, _space, value = header.partition(" ")
        claims = tokens.get(value) if scheme.lower() == "bearer" else None
        if claims is None:
            response = error("invalid_token", 401)
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        return jsonify(claims)

    return app


def main() -> None:
    from idp.wsgi_server import run

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--codes", type=int, default=40000)
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    args = parser.parse_args()
    issuer = f"http://localhost:{args.port}"
    run(
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        access_log=args.access_log,
        factory=lambda: create_app(issuer=issuer, codes=args.codes),
    )


if __name__ == "__main__":
    main()
